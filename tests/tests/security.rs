//! TLS, mutual TLS and API keys between the parts; metrics on the admin port; WeChat reached
//! through an HTTP proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use e2e::*;
use fiscalbill_common::proto::bureau as bureau_pb;
use fiscalbill_common::proto::bureau::bureau_service_client::BureauServiceClient;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::tls::ClientTls;
use tonic::transport::Channel;

async fn issue_one(stack: &mut Stack, order: &str) -> pb::Authorization {
    let created = stack.create(order).await;
    stack.answer(&created.auth_url, false).await;
    stack.wait_for(order, pb::AuthorizationState::Issued).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_and_mutual_tls_to_the_bureau() {
    let mut stack = Stack::start(Options { tls: true, ..Options::default() }).await;
    let issued = issue_one(&mut stack, "order-tls").await;
    assert!(!issued.card_code.is_empty(), "collection-svc reached the bureau over mutual TLS");

    let call = |channel: Channel| async move {
        let mut client = BureauServiceClient::new(channel);
        let mut request = tonic::Request::new(bureau_pb::GetSpAppIdRequest {});
        request.set_timeout(std::time::Duration::from_secs(3));
        client.get_sp_app_id(request).await
    };
    // With the client certificate: accepted.
    assert!(call(channel(stack.bureau_grpc, true, true)).await.is_ok());
    // Without one, with one from another CA, or in plaintext: refused at the handshake.
    assert!(call(channel(stack.bureau_grpc, true, false)).await.is_err(), "no client certificate");
    let rogue = ClientTls {
        ca_file: Some(cert("ca.pem")),
        cert_file: Some(cert("rogue-client.pem")),
        key_file: Some(cert("rogue-client.key")),
        domain: Some("localhost".into()),
    };
    let rogue = Channel::from_shared(format!("https://{}", stack.bureau_grpc))
        .unwrap()
        .tls_config(rogue.tonic().unwrap())
        .unwrap()
        .connect_lazy();
    assert!(call(rogue).await.is_err(), "a certificate from another CA");
    assert!(
        call(Channel::from_shared(format!("http://{}", stack.bureau_grpc)).unwrap().connect_lazy()).await.is_err(),
        "plaintext"
    );

    // collection-svc's own server speaks TLS (no client certificate needed there).
    let plain = Channel::from_shared(format!("http://{}", stack.collection_grpc)).unwrap().connect_lazy();
    let mut plain =
        fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient::new(plain);
    assert!(
        plain
            .get_authorization(pb::GetAuthorizationRequest { unit_appid: UNIT.into(), order_id: "order-tls".into() })
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_method() {
    let mut stack = Stack::start(Options { auth: true, ..Options::default() }).await;
    issue_one(&mut stack, "order-auth").await; // with keys everywhere, the flow works

    let get = pb::GetAuthorizationRequest { unit_appid: UNIT.into(), order_id: "order-auth".into() };
    let status = stack.collection_with_key(None).get_authorization(get.clone()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::Unauthenticated, "API_KEY_MISSING"));
    let status =
        stack.collection_with_key(Some("SECRET-apikey-wrong")).get_authorization(get.clone()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::Unauthenticated, "API_KEY_UNKNOWN"));
    assert!(!status.message().contains("SECRET"), "the key is not echoed: {}", status.message());

    // The business system may do everything except read secrets.
    let token = pb::GetAccessTokenRequest { appid: UNIT.into() };
    let status = stack.collection.get_access_token(token.clone()).await.unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::PermissionDenied, "METHOD_NOT_ALLOWED"));
    // The token client may read tokens, and nothing else.
    let mut tokens = stack.collection_with_key(Some(TOKENS_API_KEY));
    assert_eq!(tokens.get_access_token(token).await.unwrap().into_inner().access_token.len(), 136);
    assert!(tokens.get_card_ticket(pb::GetCardTicketRequest { appid: UNIT.into() }).await.is_ok());
    assert_eq!(tokens.get_authorization(get).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    // The bureau wants collection-svc's key.
    let anonymous = BureauServiceClient::new(channel(stack.bureau_grpc, false, false))
        .get_sp_app_id(bureau_pb::GetSpAppIdRequest {})
        .await;
    assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(stack.bureau_client.get_sp_app_id(bureau_pb::GetSpAppIdRequest {}).await.is_ok());

    // Health stays open to load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(stack.collection_grpc, false, false));
    assert!(health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok());
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_what_happened() {
    let mut stack = Stack::start(Options::default()).await;
    issue_one(&mut stack, "order-m").await;
    let declined = stack.create("order-m2").await;
    stack.answer(&declined.auth_url, true).await;
    stack.wait_for("order-m2", pb::AuthorizationState::Declined).await;
    let forged_url = format!(
        "http://{}/wechat/callback/{UNIT}?timestamp=1&nonce=1&encrypt_type=aes&msg_signature=00",
        stack.collection_http
    );
    let forged = stack.http.post(forged_url).body("<xml><Encrypt>QUFB</Encrypt></xml>").send().await.unwrap();
    assert_eq!(forged.status(), 403);

    let scrape = |addr| {
        let http = stack.http.clone();
        async move {
            let response = http.get(format!("http://{addr}/metrics")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let collection = scrape(stack.collection_admin).await;
    for (series, value) in [
        ("fiscalbill_wechat_calls_total{endpoint=\"getbillauthurl\",outcome=\"0\"}", 2.0),
        ("fiscalbill_grpc_requests_total{method=\"CreateAuthorization\",code=\"OK\"}", 2.0),
        ("fiscalbill_pushes_total{outcome=\"authorized\"}", 1.0),
        ("fiscalbill_pushes_total{outcome=\"declined\"}", 1.0),
        ("fiscalbill_pushes_total{outcome=\"refused_bad_msg_signature\"}", 1.0),
        ("fiscalbill_records_by_state{state=\"issued\"}", 1.0),
        ("fiscalbill_records_by_state{state=\"declined\"}", 1.0),
        ("fiscalbill_outbox_jobs", 0.0),
        // The unit's and its App's (the start check fetches every account's token).
        ("fiscalbill_access_token_fetches_total", 2.0),
        ("fiscalbill_card_ticket_fetches_total", 1.0),
    ] {
        assert_eq!(sample(&collection, series), value, "{series}");
    }
    assert!(sample(&collection, "fiscalbill_wechat_call_duration_seconds_count{endpoint=\"getbillauthurl\"}") >= 2.0);
    let bureau = scrape(stack.bureau_admin).await;
    for (series, value) in [
        ("fiscalbill_wechat_calls_total{endpoint=\"insertbill\",outcome=\"0\"}", 1.0),
        ("fiscalbill_wechat_calls_total{endpoint=\"setpdf\",outcome=\"0\"}", 1.0),
        ("fiscalbill_grpc_requests_total{method=\"IssueBill\",code=\"OK\"}", 1.0),
        ("fiscalbill_records_by_state{state=\"inserted\"}", 1.0),
        ("fiscalbill_access_token_fetches_total", 1.0),
    ] {
        assert_eq!(sample(&bureau, series), value, "{series}");
    }
    let healthz = stack.http.get(format!("http://{}/healthz", stack.bureau_admin)).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
}

/// A minimal forward proxy for plain-HTTP targets: absolute-form requests, forwarded as they
/// came. Counts what passes through.
async fn start_proxy(count: Arc<AtomicU64>) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::response::IntoResponse;
    let forward = |State(count): State<Arc<AtomicU64>>,
                   method: http::Method,
                   uri: http::Uri,
                   headers: http::HeaderMap,
                   body: Bytes| async move {
        count.fetch_add(1, Ordering::SeqCst);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut request = client.request(method, uri.to_string()).body(body);
        if let Some(content_type) = headers.get(http::header::CONTENT_TYPE) {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        match request.send().await {
            Ok(answer) => (answer.status(), answer.bytes().await.unwrap_or_default()).into_response(),
            Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
        }
    };
    let router = axum::Router::new().fallback(forward).with_state(count);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_is_reached_through_the_configured_proxy() {
    let through_proxy = Arc::new(AtomicU64::new(0));
    let proxy = start_proxy(through_proxy.clone()).await;
    let mut stack = Stack::start(Options { wechat_proxy: Some(proxy), ..Options::default() }).await;
    issue_one(&mut stack, "order-proxy").await;
    let stats = stack.get("/sandbox/stats").await;
    let wechat_calls: u64 = stats["calls"].as_array().unwrap().iter().map(|row| row["calls"].as_u64().unwrap()).sum();
    assert!(wechat_calls >= 8);
    assert_eq!(through_proxy.load(Ordering::SeqCst), wechat_calls, "every WeChat call went through the proxy");
}
