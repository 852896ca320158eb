//! `fiscalbill-service bureau|collection CONFIG.json`: a service as a process of its own, for
//! tests that kill it (`kill -9`) and start it again. The configuration is the service's usual
//! one, as JSON.

use std::process::ExitCode;

use devstack::services::{Role, ServiceConfig};
use fiscalbill_common::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, path] = args.as_slice() else {
        eprintln!("usage: fiscalbill-service bureau|collection CONFIG.json");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{path}: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match Role::parse(role).ok_or_else(|| format!("unknown role {role}")) {
        Ok(role) => ServiceConfig::from_json(role, &text).map(|config| (role, config)),
        Err(error) => Err(error),
    };
    let (role, config) = match config {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{role}: {message}");
            return ExitCode::from(2);
        }
    };
    let (log, telemetry_config) = config.observability();
    let telemetry = telemetry::init(role.name(), log, telemetry_config, "warn");
    let running = match config.start().await {
        Ok(running) => running,
        Err(message) => {
            eprintln!("{}: {message}", role.name());
            telemetry.shutdown();
            return ExitCode::FAILURE;
        }
    };
    fiscalbill_common::server::shutdown_signal().await;
    running.stop().await;
    telemetry.shutdown();
    ExitCode::SUCCESS
}
