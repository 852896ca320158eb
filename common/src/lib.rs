//! What bureau-svc, collection-svc and the WeChat sandbox share: the gRPC contracts, the WeChat
//! API client with its token cache, the callback (event push) toolkit, and the bootstrap of
//! configuration, storage and servers.

pub mod auth;
pub mod backoff;
pub mod bill;
pub mod callback;
pub mod clock;
pub mod config;
pub mod db;
pub mod metrics;
pub mod paging;
pub mod pdf;
pub mod pdf_store;
pub mod proto;
pub mod secret;
pub mod server;
pub mod sql_credentials;
pub mod status;
pub mod tls;
pub mod trace;
pub mod wechat;

pub use secret::Secret;
