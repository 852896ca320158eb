//! Several replicas: two collection-svc and two bureau-svc sharing one PostgreSQL, pushes
//! balanced between the collections. Every authorized order is issued exactly once, each job
//! is delivered by one replica, and WeChat sees one token fetch per appid.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use e2e::*;
use fiscalbill_common::auth::BearerKey;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use serde_json::json;

const ORDERS: usize = 200;

/// Round-robin for WeChat's pushes: the load balancer in front of the collection replicas.
async fn start_balancer(targets: Vec<std::net::SocketAddr>) -> std::net::SocketAddr {
    use axum::body::Bytes;
    use axum::response::IntoResponse;
    let next = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let forward = move |uri: http::Uri, body: Bytes| {
        let target = targets[next.fetch_add(1, Ordering::SeqCst) % targets.len()];
        let client = client.clone();
        async move {
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            match client.post(format!("http://{target}{path}")).body(body).send().await {
                Ok(answer) => (answer.status(), answer.bytes().await.unwrap_or_default()).into_response(),
                Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().fallback(forward)).await.unwrap() });
    addr
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collections_and_two_bureaus_share_one_postgres() {
    let mut stack = Stack::start(Options { postgres: true, ..Options::default() }).await;
    let bureau_b = stack.bureau_replica().await;
    let collection_b = stack.collection_replica(bureau_b.grpc).await;
    let balancer = start_balancer(vec![stack.collection_http, collection_b.http]).await;
    let unit = json!({
        "appid": UNIT, "secret": secret(UNIT).expose(), "name": "Sandbox Hospital",
        "callback_url": format!("http://{balancer}/wechat/callback/{UNIT}"), "callback_token": TOKEN, "encoding_aes_key": AES_KEY
    });
    stack.post("/sandbox/accounts", unit).await;

    let replica_b =
        CollectionServiceClient::with_interceptor(channel(collection_b.grpc, false, false), BearerKey::default());
    let clients = [stack.collection.clone(), replica_b];
    let requests: Vec<_> = (0..ORDERS)
        .map(|i| stack.create_request(&format!("replica-{i}"), fiscalbill_common::proto::types::Source::Web))
        .collect();
    let sandbox = stack.sandbox.base_url().to_owned();
    let flows: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            let mut client = clients[i % 2].clone();
            let (http, sandbox) = (stack.http.clone(), sandbox.clone());
            tokio::spawn(async move {
                let created = client.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
                authorize_at_sandbox(&http, &sandbox, &created.auth_url).await;
            })
        })
        .collect();
    for flow in flows {
        flow.await.unwrap();
    }

    let issued = wait_until_issued(&mut stack.collection, ORDERS, std::time::Duration::from_secs(60)).await;
    assert_eq!(issued, ORDERS, "every authorized order is issued");

    // Exactly once: one insert, one upload, one check per order, one bill each in the package.
    assert_eq!(stack.calls("/nontax/insertbill").await, ORDERS as u64);
    assert_eq!(stack.calls("/card/invoice/platform/setpdf").await, ORDERS as u64);
    assert_eq!(stack.calls("/card/invoice/platform/getpdf").await, ORDERS as u64);
    assert_eq!(stack.cards(PAYER).await.len(), ORDERS);
    assert_eq!(stack.calls("/nontax/createbillcard").await, 1, "one template for the unit");
    // seturl answers the same s_pappid every time, so two bureau replicas asking at the same
    // moment may each call it once; never more.
    let seturl = stack.calls("/card/invoice/seturl").await;
    assert!((1..=2).contains(&seturl), "{seturl} seturl calls");

    // Each IssueBill job was delivered once, by one replica; both replicas worked.
    let mut issue_calls = 0.0;
    for admin in [stack.bureau_admin, bureau_b.admin] {
        let text = stack.http.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
        let served = sample(&text, "fiscalbill_grpc_requests_total{method=\"IssueBill\",code=\"OK\"}");
        assert!(served > 0.0, "both bureau replicas issued bills");
        issue_calls += served;
    }
    assert_eq!(issue_calls, ORDERS as f64, "no job was delivered twice");
    for admin in [stack.collection_admin, collection_b.admin] {
        let text = stack.http.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(
            sample(&text, "fiscalbill_pushes_total{outcome=\"authorized\"}") > 0.0,
            "both collection replicas took pushes"
        );
    }

    // One token per appid for the whole run, shared through the database.
    let stats = stack.get("/sandbox/stats").await;
    let calls = |endpoint: &str, appid: &str| {
        stats["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["endpoint"] == endpoint && r["appid"] == appid)
            .map_or(0, |r| r["calls"].as_u64().unwrap())
    };
    assert_eq!(calls("/cgi-bin/stable_token", UNIT), 1);
    assert_eq!(calls("/cgi-bin/stable_token", BUREAU), 1);
    assert_eq!(calls("/cgi-bin/ticket/getticket", UNIT), 1);

    collection_b.stop().await;
    bureau_b.stop().await;
}
