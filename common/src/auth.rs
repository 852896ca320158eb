//! Client authentication for the gRPC services: per-client API keys, sent as
//! `authorization: Bearer <key>`, stored in configuration only as their SHA-256, each allowed
//! a set of methods. The methods that hand out secrets (GetAccessToken, GetCardTicket) are
//! allowed only when named explicitly. Health and reflection stay open.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Code;

use crate::config::SecretSetting;
use crate::status::ApiError;

/// Methods that return secrets: never covered by `*`.
pub const SECRET_METHODS: &[&str] = &["GetAccessToken", "GetCardTicket"];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Off only for development (the dev stack); on, a call without a known key is refused.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { enabled: true, clients: Vec::new() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Who the client is, for logs.
    pub name: String,
    /// Lowercase hex SHA-256 of the client's API key (`printf %s "$KEY" | sha256sum`). Give
    /// this (the key itself then lives only with the client) or `key`.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The API key itself, as a secret (`{ env = "NAME" }` or `{ file = "/path" }`), hashed at
    /// start. Give this or `key_sha256`.
    #[serde(default)]
    pub key: Option<SecretSetting>,
    /// Method names (`CreateAuthorization`), or `*` for every method except those that hand
    /// out secrets.
    pub methods: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("auth client {0}")]
pub struct AuthConfigError(String);

struct Client {
    name: String,
    key_sha256: [u8; 32],
    methods: HashSet<String>,
    all: bool,
}

/// Decides, per request, whether a caller may call a method.
pub struct Authenticator {
    enabled: bool,
    clients: Vec<Client>,
    domain: &'static str,
}

/// The SHA-256 of an API key as configuration stores it.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Authenticator {
    pub fn new(config: &AuthConfig, domain: &'static str) -> Result<Self, AuthConfigError> {
        let clients = config
            .clients
            .iter()
            .map(|client| {
                let invalid = |problem: &str| AuthConfigError(format!("{}: {problem}", client.name));
                let digest: [u8; 32] = match (&client.key_sha256, &client.key) {
                    (Some(sha256), None) => hex::decode(sha256)
                        .ok()
                        .and_then(|d| <[u8; 32]>::try_from(d).ok())
                        .filter(|_| sha256.bytes().all(|b| !b.is_ascii_uppercase()))
                        .ok_or_else(|| invalid("key_sha256 must be 64 lowercase hex digits"))?,
                    (None, Some(key)) => {
                        let key = key.resolve().map_err(|e| invalid(&e.to_string()))?;
                        if key.expose().len() < 16 {
                            return Err(invalid("key must be at least 16 characters"));
                        }
                        Sha256::digest(key.expose().as_bytes()).into()
                    }
                    _ => return Err(invalid("give key_sha256 or key (one of them)")),
                };
                Ok(Client {
                    name: client.name.clone(),
                    key_sha256: digest,
                    all: client.methods.iter().any(|m| m == "*"),
                    methods: client.methods.iter().filter(|m| *m != "*").cloned().collect(),
                })
            })
            .collect::<Result<_, _>>()?;
        if config.enabled && config.clients.is_empty() {
            tracing::warn!("authentication is on and no client is configured: every call is refused");
        }
        Ok(Self { enabled: config.enabled, clients, domain })
    }

    /// The ErrorInfo domain of the service's errors.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// Checks a call of `path` (`/package.Service/Method`) with its `authorization` header.
    /// Returns the client's name (None when authentication is off or the path is open).
    pub fn check(&self, path: &str, authorization: Option<&str>) -> Result<Option<&str>, ApiError> {
        if !self.enabled || !path.starts_with("/fiscalbill.") {
            return Ok(None);
        }
        let method = path.rsplit('/').next().unwrap_or_default();
        let key = authorization.and_then(bearer_key);
        let Some(key) = key else {
            return Err(ApiError::new(
                Code::Unauthenticated,
                "API_KEY_MISSING",
                "send an API key as `authorization: Bearer <key>`",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every client is compared, in constant time, whichever matches.
        let mut found = None;
        for client in &self.clients {
            if bool::from(client.key_sha256.ct_eq(&digest)) {
                found = Some(client);
            }
        }
        let Some(client) = found else {
            return Err(ApiError::new(Code::Unauthenticated, "API_KEY_UNKNOWN", "the API key is not known"));
        };
        let allowed = client.methods.contains(method) || (client.all && !SECRET_METHODS.contains(&method));
        if !allowed {
            tracing::warn!(client = %client.name, method, "call refused: method not allowed for the client");
            return Err(ApiError::new(
                Code::PermissionDenied,
                "METHOD_NOT_ALLOWED",
                format!("client {} may not call {method}", client.name),
            )
            .with("method", method));
        }
        Ok(Some(&client.name))
    }
}

/// The key of `Bearer <key>`; the scheme is case-insensitive (RFC 7235).
fn bearer_key(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// A client-side interceptor sending `authorization: Bearer <key>` (or nothing).
#[derive(Clone, Default)]
pub struct BearerKey(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerKey {
    /// None when the key is not printable ASCII.
    pub fn new(key: Option<&str>) -> Option<Self> {
        match key {
            Some(key) => format!("Bearer {key}").parse().ok().map(|value| Self(Some(value))),
            None => Some(Self(None)),
        }
    }
}

impl tonic::service::Interceptor for BearerKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A tower layer enforcing [`Authenticator`] on every gRPC request.
#[derive(Clone)]
pub struct AuthLayer(Arc<Authenticator>);

impl AuthLayer {
    pub fn new(authenticator: Authenticator) -> Self {
        Self(Arc::new(authenticator))
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, authenticator: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.authenticator.check(request.uri().path(), header) {
            Ok(_) => Box::pin(self.inner.call(request)),
            Err(error) => {
                let response = error.into_status(self.authenticator.domain).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(enabled: bool) -> Authenticator {
        let config = AuthConfig {
            enabled,
            clients: vec![
                ClientConfig {
                    name: "his".into(),
                    key_sha256: Some(key_sha256("k-his")),
                    key: None,
                    methods: vec!["*".into()],
                },
                ClientConfig {
                    name: "tokens".into(),
                    key_sha256: None,
                    key: Some(SecretSetting::Inline(wechat::Secret::new("k-tok-long-enough-0001"))),
                    methods: vec!["GetAccessToken".into()],
                },
            ],
        };
        Authenticator::new(&config, "collection.fiscalbill").unwrap()
    }

    const CREATE: &str = "/fiscalbill.collection.v1.CollectionService/CreateAuthorization";
    const TOKEN: &str = "/fiscalbill.collection.v1.CollectionService/GetAccessToken";

    #[test]
    fn keys_and_methods() {
        let auth = authenticator(true);
        assert_eq!(auth.check(CREATE, Some("Bearer k-his")).unwrap(), Some("his"));
        assert_eq!(auth.check(CREATE, None).unwrap_err().reason, "API_KEY_MISSING");
        assert_eq!(auth.check(CREATE, Some("Basic x")).unwrap_err().reason, "API_KEY_MISSING");
        assert_eq!(auth.check(CREATE, Some("Bearer nope")).unwrap_err().code, Code::Unauthenticated);
        // The scheme is case-insensitive; the key is not.
        for header in ["bearer k-his", "BEARER k-his", "Bearer   k-his "] {
            assert_eq!(auth.check(CREATE, Some(header)).unwrap(), Some("his"), "{header}");
        }
        for header in ["Bearer K-HIS", "Basic k-his", "Bearerk-his", "Bearer "] {
            assert_eq!(auth.check(CREATE, Some(header)).unwrap_err().code, Code::Unauthenticated, "{header}");
        }
        // `*` does not reach the secret methods; naming them does.
        assert_eq!(auth.check(TOKEN, Some("Bearer k-his")).unwrap_err().code, Code::PermissionDenied);
        assert_eq!(auth.check(TOKEN, Some("Bearer k-tok-long-enough-0001")).unwrap(), Some("tokens"));
        assert_eq!(auth.check(CREATE, Some("Bearer k-tok-long-enough-0001")).unwrap_err().reason, "METHOD_NOT_ALLOWED");
        // Health and reflection are open.
        assert_eq!(auth.check("/grpc.health.v1.Health/Check", None).unwrap(), None);
        assert_eq!(authenticator(false).check(TOKEN, None).unwrap(), None);
    }

    #[test]
    fn bad_digests_and_keys_are_configuration_errors() {
        let client = |key_sha256: Option<&str>, key: Option<&str>| AuthConfig {
            enabled: true,
            clients: vec![ClientConfig {
                name: "x".into(),
                key_sha256: key_sha256.map(str::to_owned),
                key: key.map(|k| SecretSetting::Inline(wechat::Secret::new(k))),
                methods: vec![],
            }],
        };
        for (sha, key, problem) in [
            (Some("ABC"), None, "64 lowercase hex"),
            (None, Some("short"), "at least 16"),
            (None, None, "one of them"),
            (Some(&*key_sha256("k")), Some("k-long-enough-00001"), "one of them"),
        ] {
            let error = Authenticator::new(&client(sha, key), "d").err().unwrap().to_string();
            assert!(error.contains(problem), "{error}");
            assert!(!error.contains("k-long-enough"), "no key in errors: {error}");
        }
    }
}
