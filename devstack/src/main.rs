//! `cargo run`: the development stack in one process. For now it runs the WeChat sandbox with
//! its demo accounts; bureau-svc and collection-svc join it as they are built.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = wechat_sandbox::SandboxConfig {
        accounts: wechat_sandbox::demo_accounts(None),
        ..wechat_sandbox::SandboxConfig::default()
    };
    let running = match wechat_sandbox::start(config).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("cannot start the WeChat sandbox on 127.0.0.1:8900: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("WeChat sandbox: {}/sandbox/", running.base_url());
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    ExitCode::SUCCESS
}
