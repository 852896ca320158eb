//! `bureau-svc [--config bureau.toml]`; every setting can also come from `BUREAU__...`
//! environment variables (see README.md).

use std::process::ExitCode;

use bureau_svc::config::{BureauConfig, ENV_PREFIX};

#[tokio::main]
async fn main() -> ExitCode {
    fiscalbill_common::server::return_large_buffers_to_the_system();
    let config: BureauConfig = match fiscalbill_common::config::path_from_args("bureau-svc", std::env::args().skip(1))
        .and_then(|path| fiscalbill_common::config::load(path.as_deref(), ENV_PREFIX).map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(message) => {
            eprintln!("bureau-svc: {message}");
            return ExitCode::from(2);
        }
    };
    fiscalbill_common::server::init_tracing(config.log.json, "info");
    let running = match bureau_svc::start(config).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("bureau-svc: {error}");
            return ExitCode::FAILURE;
        }
    };
    fiscalbill_common::server::shutdown_signal().await;
    running.stop().await;
    ExitCode::SUCCESS
}
