//! The two services by name, for the tools that start either one as a process of its own
//! (the benchmark, the crash test's process host): the one place that picks a service by its
//! name. Both start through the service kit's one lifecycle and run as a `RunningService`.

use std::path::Path;

use fiscalbill_common::config::LogConfig;
use fiscalbill_common::lifecycle::RunningService;
use fiscalbill_common::telemetry::TelemetryConfig;

use crate::Addresses;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Bureau,
    Collection,
}

impl Role {
    /// `bureau-svc`, `collection-svc`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Bureau => "bureau-svc",
            Role::Collection => "collection-svc",
        }
    }

    /// The short name on command lines: `bureau`, `collection`.
    pub fn arg(self) -> &'static str {
        match self {
            Role::Bureau => "bureau",
            Role::Collection => "collection",
        }
    }

    pub fn parse(arg: &str) -> Option<Self> {
        [Role::Bureau, Role::Collection].into_iter().find(|role| role.arg() == arg)
    }
}

/// A service's configuration.
pub enum ServiceConfig {
    Bureau(Box<bureau_svc::BureauConfig>),
    Collection(Box<collection_svc::CollectionConfig>),
}

impl ServiceConfig {
    /// The dev stack's configuration of `role`.
    pub fn dev(role: Role, addresses: &Addresses, data_dir: &Path) -> Self {
        match role {
            Role::Bureau => ServiceConfig::Bureau(Box::new(crate::bureau(addresses, data_dir))),
            Role::Collection => ServiceConfig::Collection(Box::new(crate::collection(addresses, data_dir))),
        }
    }

    /// `role`'s usual configuration, written as JSON.
    pub fn from_json(role: Role, json: &str) -> Result<Self, String> {
        Ok(match role {
            Role::Bureau => ServiceConfig::Bureau(serde_json::from_str(json).map_err(|e| e.to_string())?),
            Role::Collection => ServiceConfig::Collection(serde_json::from_str(json).map_err(|e| e.to_string())?),
        })
    }

    /// The largest PDF the service takes (and the gRPC message limits that follow from it).
    pub fn set_pdf_max_bytes(&mut self, bytes: usize) {
        match self {
            ServiceConfig::Bureau(config) => config.issuing.pdf_max_bytes = bytes,
            ServiceConfig::Collection(config) => config.authorization.pdf_max_bytes = bytes,
        }
    }

    /// Its `[database]` section.
    pub fn set_database(&mut self, database: fiscalbill_common::db::DatabaseConfig) {
        match self {
            ServiceConfig::Bureau(config) => config.database = database,
            ServiceConfig::Collection(config) => config.database = database,
        }
    }

    /// Its `[log]` and `[telemetry]` sections.
    pub fn observability(&self) -> (&LogConfig, &TelemetryConfig) {
        match self {
            ServiceConfig::Bureau(config) => (&config.log, &config.telemetry),
            ServiceConfig::Collection(config) => (&config.log, &config.telemetry),
        }
    }

    pub async fn start(self) -> Result<RunningService, String> {
        match self {
            ServiceConfig::Bureau(config) => bureau_svc::start(*config).await.map_err(|e| e.to_string()),
            ServiceConfig::Collection(config) => collection_svc::start(*config).await.map_err(|e| e.to_string()),
        }
    }
}
