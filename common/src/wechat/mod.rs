//! The WeChat API as this project uses it: endpoints, typed bodies, the HTTP client, errors and
//! the token/ticket cache.

pub mod client;
pub mod credentials;
mod endpoint;
mod error;
pub mod types;

pub use client::{ClientConfigError, WechatClient, WechatHttpConfig, parse_s_pappid};
pub use credentials::{
    CallError, Credential, CredentialKey, CredentialKind, CredentialStore, Credentials, MemoryCredentialStore,
    StoreError, TokenMode,
};
pub use endpoint::Endpoint;
pub use error::{WechatError, errcode, split_errmsg};
