//! `wechat-sandbox [--listen ADDR] [--public-url URL] [--config FILE] [--state-file FILE]`: runs
//! the WeChat stand-in. Without a config file it starts with dev-only demo accounts; with a state
//! file it remembers its world across restarts.

use std::process::ExitCode;

use wechat_sandbox::SandboxConfig;

fn usage() -> &'static str {
    "usage: wechat-sandbox [--listen 127.0.0.1:8900] [--public-url http://host:port] [--config sandbox.toml] \
     [--state-file sandbox.db]"
}

fn parse_args() -> Result<SandboxConfig, String> {
    let mut args = std::env::args().skip(1);
    let mut config_path = None;
    let mut listen = None;
    let mut public_url = None;
    let mut state_file = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{}", usage()));
        match arg.as_str() {
            "--config" => config_path = Some(value()?),
            "--listen" => listen = Some(value()?),
            "--public-url" => public_url = Some(value()?),
            "--state-file" => state_file = Some(std::path::PathBuf::from(value()?)),
            "-h" | "--help" => return Err(usage().to_owned()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    let mut config = match config_path {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?
        }
        None => SandboxConfig { accounts: wechat_sandbox::demo_accounts(), ..SandboxConfig::default() },
    };
    if let Some(listen) = listen {
        config.listen = listen.parse().map_err(|e| format!("--listen {listen}: {e}"))?;
    }
    if public_url.is_some() {
        config.public_url = public_url;
    }
    if state_file.is_some() {
        config.state_file = state_file;
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let accounts: Vec<String> = config.accounts.iter().map(|a| format!("{} ({})", a.appid, a.name)).collect();
    let running = match wechat_sandbox::start(config).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("cannot start the sandbox: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("WeChat sandbox on {} with accounts: {}", running.base_url(), accounts.join(", "));
    println!("Control API: {}/sandbox/  (stats: /sandbox/stats, faults: /sandbox/faults)", running.base_url());
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    ExitCode::SUCCESS
}
