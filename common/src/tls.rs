//! One TLS crypto provider (ring) for the whole process: reqwest, tonic and sqlx all use the
//! rustls process default.

/// Installs ring as rustls' process-wide default provider. Idempotent.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider was installed first, which then stays in use.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
