//! `collection-svc [serve|preflight] [--config collection.toml]`; every setting can also come
//! from `COLLECTION__...` environment variables (see README.md and `--help`).

use std::process::ExitCode;

use collection_svc::config::{CollectionConfig, ENV_PREFIX};
use fiscalbill_common::binary::{Service, run};

#[tokio::main]
async fn main() -> ExitCode {
    let service = Service {
        program: "collection-svc",
        env_prefix: ENV_PREFIX,
        observability: |config: &CollectionConfig| (&config.log, &config.telemetry),
        start: collection_svc::start,
        preflight: |config: CollectionConfig| async move { collection_svc::preflight(&config).await },
    };
    run(service, std::env::args().skip(1)).await
}
