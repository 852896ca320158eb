//! `fiscalbill-service bureau|collection CONFIG.json`: a service as a process of its own, for
//! tests that kill it (`kill -9`) and start it again. The configuration is the service's usual
//! one, as JSON.

use std::process::ExitCode;

use devstack::services::{Role, ServiceConfig};

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
    fiscalbill_common::server::init_tracing(false, "warn");
    let started = match Role::parse(role) {
        Some(role) => match ServiceConfig::from_json(role, &text) {
            Ok(config) => config.start().await,
            Err(error) => Err(error),
        },
        None => Err(format!("unknown role {role}")),
    };
    let running = match started {
        Ok(running) => running,
        Err(message) => {
            eprintln!("{role}: {message}");
            return ExitCode::FAILURE;
        }
    };
    fiscalbill_common::server::shutdown_signal().await;
    running.stop().await;
    ExitCode::SUCCESS
}
