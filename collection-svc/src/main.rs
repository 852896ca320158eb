//! `collection-svc [--config collection.toml]`; every setting can also come from
//! `COLLECTION__...` environment variables (see README.md).

use std::process::ExitCode;

use collection_svc::config::{CollectionConfig, ENV_PREFIX};

#[tokio::main]
async fn main() -> ExitCode {
    fiscalbill_common::server::return_large_buffers_to_the_system();
    let config: CollectionConfig =
        match fiscalbill_common::config::path_from_args("collection-svc", std::env::args().skip(1))
            .and_then(|path| fiscalbill_common::config::load(path.as_deref(), ENV_PREFIX).map_err(|e| e.to_string()))
        {
            Ok(config) => config,
            Err(message) => {
                eprintln!("collection-svc: {message}");
                return ExitCode::from(2);
            }
        };
    fiscalbill_common::server::init_tracing(config.log.json, "info");
    let running = match collection_svc::start(config).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("collection-svc: {error}");
            return ExitCode::FAILURE;
        }
    };
    fiscalbill_common::server::shutdown_signal().await;
    running.stop().await;
    ExitCode::SUCCESS
}
