//! `fiscalbill-service bureau|collection CONFIG.json`: a service as a process of its own, for
//! tests that kill it (`kill -9`) and start it again. The configuration is the service's usual
//! one, as JSON.

use std::process::ExitCode;

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
    let started = match role.as_str() {
        "bureau" => match serde_json::from_str(&text) {
            Ok(config) => bureau_svc::start(config).await.map(Running::Bureau).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        },
        "collection" => match serde_json::from_str(&text) {
            Ok(config) => collection_svc::start(config).await.map(Running::Collection).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        },
        other => Err(format!("unknown role {other}")),
    };
    let running = match started {
        Ok(running) => running,
        Err(message) => {
            eprintln!("{role}: {message}");
            return ExitCode::FAILURE;
        }
    };
    fiscalbill_common::server::shutdown_signal().await;
    match running {
        Running::Bureau(bureau) => bureau.stop().await,
        Running::Collection(collection) => collection.stop().await,
    }
    ExitCode::SUCCESS
}

enum Running {
    Bureau(bureau_svc::RunningBureau),
    Collection(collection_svc::RunningCollection),
}
