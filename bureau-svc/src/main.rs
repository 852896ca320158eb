//! `bureau-svc [serve|preflight] [--config bureau.toml]`; every setting can also come from
//! `BUREAU__...` environment variables (see README.md and `--help`).

use std::process::ExitCode;

use bureau_svc::config::{BureauConfig, ENV_PREFIX};
use fiscalbill_common::binary::{Service, run};

#[tokio::main]
async fn main() -> ExitCode {
    let service = Service {
        program: "bureau-svc",
        env_prefix: ENV_PREFIX,
        observability: |config: &BureauConfig| (&config.log, &config.telemetry),
        start: bureau_svc::start,
        preflight: |config: BureauConfig| async move { bureau_svc::preflight(&config).await },
    };
    run(service, std::env::args().skip(1)).await
}
