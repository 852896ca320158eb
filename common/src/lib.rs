//! The service kit bureau-svc and collection-svc share: the gRPC contracts, configuration,
//! storage, the server lifecycle (gRPC, callback HTTP and admin servers, health, reflection,
//! authentication, TLS, drain), metrics and the gRPC status mapping. Everything about WeChat
//! itself is in the `wechat` crate.

pub mod auth;
pub mod bill;
pub mod binary;
pub mod byte_budget;
pub mod config;
pub mod connections;
pub mod db;
pub mod group_commit;
pub mod grpc_errors;
pub mod lifecycle;
pub mod message_budget;
pub mod metrics;
pub mod paging;
pub mod pdf_store;
pub mod preflight;
pub mod proto;
pub mod replica;
pub mod server;
pub mod sql_credentials;
mod sqlite_reads;
mod sqlite_rows;
pub mod statement_counts;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod wal_checkpoint;
