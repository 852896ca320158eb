//! A newcomer's deployment: each service starts from its minimal configuration as shipped, with
//! only the secrets in the environment (plus overrides pointing it at the sandbox and at free
//! ports), and serves a real flow with its API keys.

use e2e::*;
use fiscalbill_common::config::load_from;
use fiscalbill_common::proto::collection as pb;

fn config_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name)
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_start_from_their_minimal_configurations() {
    // The sandbox (standing in for api.weixin.qq.com), whose accounts push to the services.
    let stack = Stack::start(Options::default()).await;
    let sandbox = stack.sandbox.base_url().to_owned();
    let dir = std::env::temp_dir().join(format!("fiscalbill-minimal-{}", std::process::id()));
    let any = "127.0.0.1:0".to_owned();
    let bureau_key = "minimal-bureau-key-0001".to_owned();
    let collection_key = "minimal-collection-key-0001".to_owned();

    // bureau-svc: the shipped file, the secrets, and what differs from production here.
    let (_, certificate, signing_key) = bureau_svc::pdf::sign::BillSigner::generate_throwaway("沙箱市财政局").unwrap();
    let bureau_env = env(&[
        ("BUREAU_SIGNING_CERTIFICATE", certificate),
        ("BUREAU_SIGNING_KEY", signing_key),
        ("BUREAU_APPSECRET", secret(BUREAU).expose().to_owned()),
        ("BUREAU_CALLBACK_TOKEN", TOKEN.to_owned()),
        ("BUREAU_ENCODING_AES_KEY", AES_KEY.to_owned()),
        ("BUREAU_API_KEY", bureau_key.clone()),
        ("BUREAU__WECHAT__BASE_URL", sandbox.clone()),
        ("BUREAU__DATABASE__URL", format!("sqlite://{}", dir.join("bureau.db").display())),
        ("BUREAU__SERVER__GRPC_LISTEN", any.clone()),
        ("BUREAU__SERVER__HTTP_LISTEN", any.clone()),
        ("BUREAU__SERVER__ADMIN_LISTEN", any.clone()),
        ("BUREAU__ACCOUNT__APPID", BUREAU.to_owned()),
        ("BUREAU__UNITS__0__APPID", UNIT.to_owned()),
        // The sandbox issues its own image URLs: give the logo as a file instead.
        ("BUREAU__UNITS__0__LOGO_URL", String::new()),
        ("BUREAU__UNITS__0__LOGO_FILE", devstack::demo_logo_file(&dir).display().to_string()),
    ]);
    let config: bureau_svc::BureauConfig =
        load_from(Some(&config_file("minimal-bureau.toml")), "BUREAU", bureau_env.clone())
            .unwrap_or_else(|e| panic!("{e}"));
    // SecretSetting reads the process environment when the service starts.
    for (name, value) in bureau_env.iter().filter(|(k, _)| !k.contains("__")) {
        // SAFETY: the test sets variables before the services read them, on this thread.
        unsafe { std::env::set_var(name, value) };
    }
    let bureau = bureau_svc::start(config).await.unwrap_or_else(|e| panic!("{e}"));

    let collection_env = env(&[
        ("UNIT_APPSECRET", secret(UNIT).expose().to_owned()),
        ("UNIT_CALLBACK_TOKEN", TOKEN.to_owned()),
        ("UNIT_ENCODING_AES_KEY", AES_KEY.to_owned()),
        ("COLLECTION_API_KEY", collection_key.clone()),
        ("BUREAU_API_KEY", bureau_key.clone()),
        ("COLLECTION__WECHAT__BASE_URL", sandbox.clone()),
        ("COLLECTION__DATABASE__URL", format!("sqlite://{}", dir.join("collection.db").display())),
        ("COLLECTION__SERVER__GRPC_LISTEN", any.clone()),
        ("COLLECTION__SERVER__HTTP_LISTEN", any.clone()),
        ("COLLECTION__SERVER__ADMIN_LISTEN", any.clone()),
        ("COLLECTION__BUREAU__ENDPOINT", format!("http://{}", bureau.grpc_addr)),
        ("COLLECTION__UNITS__0__APPID", UNIT.to_owned()),
    ]);
    let config: collection_svc::CollectionConfig =
        load_from(Some(&config_file("minimal-collection.toml")), "COLLECTION", collection_env.clone())
            .unwrap_or_else(|e| panic!("{e}"));
    for (name, value) in collection_env.iter().filter(|(k, _)| !k.contains("__")) {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
    let collection = collection_svc::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    fiscalbill_common::server::wait_until_serving(collection.grpc_addr, std::time::Duration::from_secs(20))
        .await
        .unwrap();

    // The business system, with its key, gets a link from the service started this way.
    let channel = channel(collection.grpc_addr, false, false);
    let mut client = pb::collection_service_client::CollectionServiceClient::with_interceptor(
        channel,
        fiscalbill_common::auth::BearerKey::new(Some(&collection_key)).unwrap(),
    );
    let request = pb::CreateAuthorizationRequest {
        unit_appid: UNIT.into(),
        order_id: "minimal-1".into(),
        money: 100,
        source: fiscalbill_common::proto::types::Source::Web as i32,
        bill: Some(content("minimal-1", 100)),
        ..Default::default()
    };
    let created = client.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
    assert!(created.auth_url.contains("/sandbox/auth/"), "{created:?}");
    // Without the key: refused.
    let mut anonymous =
        pb::collection_service_client::CollectionServiceClient::new(e2e::channel(collection.grpc_addr, false, false));
    let status = anonymous.list_authorizations(pb::ListAuthorizationsRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    collection.stop().await;
    bureau.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_example_configurations_report_every_missing_piece_at_once() {
    // As shipped, without their environment: every secret and file they miss, in one report.
    let error = load_from::<bureau_svc::BureauConfig>(Some(&config_file("bureau.example.toml")), "BUREAU", [])
        .err()
        .unwrap()
        .to_string();
    for piece in [
        "server.tls.cert_file: cannot read",
        "server.tls.key_file: cannot read",
        "account.secret: environment variable BUREAU_APPSECRET is not set",
        "account.callback_token: environment variable BUREAU_CALLBACK_TOKEN is not set",
        "account.encoding_aes_key: environment variable BUREAU_ENCODING_AES_KEY is not set",
        "units[0].logo_file: cannot read",
    ] {
        assert!(error.contains(piece), "{piece}: {error}");
    }
    // And an environment override switches the optional TLS section off.
    let without_tls = [("BUREAU__SERVER__TLS".to_owned(), String::new())];
    let error = load_from::<bureau_svc::BureauConfig>(Some(&config_file("bureau.example.toml")), "BUREAU", without_tls)
        .err()
        .unwrap()
        .to_string();
    assert!(!error.contains("server.tls"), "{error}");
}
