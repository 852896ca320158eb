//! The `main` of both service binaries: parse the command line, load the configuration, then
//! serve until Ctrl-C or SIGTERM (and drain), or run the preflight checklist.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::config::{Command, CommandLine, LogConfig, load};
use crate::lifecycle::RunningService;
use crate::preflight::Checklist;
use crate::telemetry::{self, TelemetryConfig};

/// What a service binary needs from its crate.
pub struct Service<C, Start, Preflight> {
    /// `bureau-svc`, `collection-svc`.
    pub program: &'static str,
    /// The prefix of its environment overrides: `BUREAU`, `COLLECTION`.
    pub env_prefix: &'static str,
    /// The configuration's `[log]` and `[telemetry]` sections.
    pub observability: fn(&C) -> (&LogConfig, &TelemetryConfig),
    pub start: Start,
    pub preflight: Preflight,
}

/// Runs the binary with `args` (the arguments after the program name). Exit codes: 0 done,
/// 1 failed (start or preflight), 2 bad command line or configuration.
pub async fn run<C, Start, Started, E, Preflight, Checked>(
    service: Service<C, Start, Preflight>,
    args: impl IntoIterator<Item = String>,
) -> ExitCode
where
    C: DeserializeOwned,
    Start: FnOnce(C) -> Started,
    Started: Future<Output = Result<RunningService, E>>,
    E: Display,
    Preflight: FnOnce(C) -> Checked,
    Checked: Future<Output = Checklist>,
{
    let Service { program, env_prefix, observability, start, preflight } = service;
    let line = match CommandLine::parse(program, env_prefix, args) {
        Ok(line) => line,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let config: C = match load(line.config.as_deref(), env_prefix) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{program}: {error}");
            return ExitCode::from(2);
        }
    };
    match line.command {
        Command::Preflight => {
            let (log, _) = observability(&config);
            let telemetry = telemetry::init(program, log, &TelemetryConfig::default(), "warn");
            let checklist = preflight(config).await;
            print!("{program} preflight\n{}", checklist.render());
            telemetry.shutdown();
            if checklist.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Serve => {
            crate::server::set_malloc_thresholds();
            let (log, telemetry_config) = observability(&config);
            let telemetry = telemetry::init(program, log, telemetry_config, "info");
            let running = match start(config).await {
                Ok(running) => running,
                Err(error) => {
                    eprintln!("{program}: {error}");
                    telemetry.shutdown();
                    return ExitCode::FAILURE;
                }
            };
            crate::server::shutdown_signal().await;
            running.stop().await;
            telemetry.shutdown();
            ExitCode::SUCCESS
        }
    }
}
