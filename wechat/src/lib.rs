//! Everything about WeChat, and nothing about gRPC or SQL: the endpoints this project calls,
//! their wire types, the HTTP client, the errcode [rulebook], the token/ticket cache behind a
//! credential-store trait, the per-account call handle, the callback toolkit (signatures,
//! safe-mode crypto, push messages) and PDF checks. The services, the sandbox and the tests
//! all read WeChat's rules from here.

pub mod account;
pub mod backoff;
pub mod callback;
pub mod client;
pub mod clock;
pub mod credentials;
mod endpoint;
mod error;
pub mod image;
pub mod pdf;
pub mod pdf_check;
pub mod reachability;
pub mod rulebook;
mod secret;
pub mod types;

pub use account::Account;
pub use client::{CallObserver, ClientConfigError, WechatClient, WechatHttpConfig, parse_s_pappid};
pub use credentials::{
    CallError, Credential, CredentialKey, CredentialKind, CredentialStore, Credentials, MemoryCredentialStore,
    StoreError, TokenMode,
};
pub use endpoint::Endpoint;
pub use error::{WechatError, split_errmsg, with_causes};
pub use rulebook::{ErrorKind, Retry, Rule};
pub use secret::Secret;

/// Installs ring as rustls' process-wide default crypto provider, which reqwest (here), tonic
/// and sqlx (in the services) all use. Idempotent.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider was installed first, which then stays in use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
