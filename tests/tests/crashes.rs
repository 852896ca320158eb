//! kill -9: both services run as processes of their own and are killed at random moments
//! (SIGKILL) and started again, over and over, while 300 orders go through. Afterwards every
//! authorized order is issued exactly once and nothing is stuck. And a service killed with work
//! in flight takes its own work back as soon as it is started again, without waiting for its
//! old leases to expire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::processes::ProcessStack;
use e2e::*;
use fiscalbill_common::auth::BearerKey;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use serde_json::json;
use tokio::sync::Mutex;

const ORDERS: usize = 300;
const CHAOS: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_at_random_lose_and_duplicate_nothing() {
    let dir = std::env::temp_dir().join(format!("fiscalbill-crashes-{}", std::process::id()));
    let stack = ProcessStack::new(env!("CARGO_BIN_EXE_fiscalbill-service"), &dir, |_, _| {}).await;
    let ProcessStack { base, collection_grpc, bureau, collection, sandbox: _sandbox, .. } = stack;
    let http = reqwest::Client::new();
    let services = Arc::new([Mutex::new(bureau), Mutex::new(collection)]);
    for service in services.iter() {
        service.lock().await.start();
    }

    // Chaos: a random service is killed every 0.3–1.5 s and started again 0.1–0.4 s later.
    let chaos = {
        let services = services.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut kills = 0;
            while started.elapsed() < CHAOS {
                tokio::time::sleep(Duration::from_millis(rand_between(300, 1500))).await;
                let mut service = services[rand_between(0, 2) as usize].lock().await;
                service.kill();
                kills += 1;
                tokio::time::sleep(Duration::from_millis(rand_between(100, 400))).await;
                service.start();
            }
            kills
        })
    };

    let channel = tonic::transport::Channel::from_shared(format!("http://{collection_grpc}")).unwrap().connect_lazy();
    let collection = CollectionServiceClient::with_interceptor(channel, BearerKey::default());
    let flows: Vec<_> = (0..ORDERS)
        .map(|i| {
            let (mut collection, http, base) = (collection.clone(), http.clone(), base.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((i as u64 * CHAOS.as_millis() as u64) / ORDERS as u64)).await;
                let order = format!("crash-{i}");
                let request = order_request(&order);
                // The process may be dead or starting: the business system retries.
                let created = loop {
                    let mut call = tonic::Request::new(request.clone());
                    call.set_timeout(Duration::from_secs(3));
                    match collection.create_authorization(call).await {
                        Ok(answer) => break answer.into_inner().authorization.unwrap(),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                };
                authorize_at_sandbox(&http, &base, &created.auth_url).await;
            })
        })
        .collect();
    for flow in flows {
        flow.await.unwrap();
    }
    let kills = chaos.await.unwrap();
    assert!(kills >= 10, "only {kills} kills");

    // Once the dust settles, every order is issued (lost pushes are found by the reconciler).
    let issued = wait_until_issued(&mut collection.clone(), ORDERS, Duration::from_secs(90)).await;
    assert_eq!(issued, ORDERS, "every order issued after {kills} kills");
    let cards: serde_json::Value =
        http.get(format!("{base}/sandbox/users/{PAYER}/cards")).send().await.unwrap().json().await.unwrap();
    let cards = cards["cards"].as_array().unwrap();
    let orders: std::collections::BTreeSet<&str> = cards.iter().map(|c| c["order_id"].as_str().unwrap()).collect();
    assert_eq!((cards.len(), orders.len()), (ORDERS, ORDERS), "each order billed exactly once");
    eprintln!("{ORDERS} orders through {kills} kills");
    for service in services.iter() {
        service.lock().await.kill();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn rand_between(low: u64, high: u64) -> u64 {
    low + (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64)
        % (high - low)
}

/// Creates `count` orders named `{prefix}-{i}` and has the payer authorize each.
async fn authorized_orders(collection: &mut CollectionClient, base: &str, prefix: &str, count: usize) {
    let http = reqwest::Client::new();
    for i in 0..count {
        let order = format!("{prefix}-{i}");
        let request = order_request(&order);
        let created = collection.create_authorization(request).await.unwrap().into_inner().authorization.unwrap();
        authorize_at_sandbox(&http, base, &created.auth_url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_resumes_its_own_work_at_once() {
    const FLOWS: usize = 30;
    let dir = std::env::temp_dir().join(format!("fiscalbill-resume-{}", std::process::id()));
    // Leases of a minute, as in production: waiting for them would take that long.
    let mut stack = ProcessStack::new(env!("CARGO_BIN_EXE_fiscalbill-service"), &dir, |bureau, collection| {
        bureau["issuing"]["lease_secs"] = json!(60);
        collection["dispatch"]["lease_secs"] = json!(60);
        collection["bureau"]["issue_deadline_ms"] = json!(1_000);
    })
    .await;
    stack.bureau.start();
    stack.collection.start();
    stack.wait_serving(Duration::from_secs(30)).await;
    let ProcessStack { base, collection_grpc, mut bureau, mut collection, sandbox: _sandbox, .. } = stack;
    let channel = tonic::transport::Channel::from_shared(format!("http://{collection_grpc}")).unwrap().connect_lazy();
    let mut client = CollectionServiceClient::with_interceptor(channel, BearerKey::default());
    let http = reqwest::Client::new();
    let slow_inserts = json!({"path": "/nontax/insertbill", "kind": "delay", "delay_ms": 4_000});

    // The bureau dies with 30 bills in flight (their inserts held up at WeChat).
    let fault: serde_json::Value =
        http.post(format!("{base}/sandbox/faults")).json(&slow_inserts).send().await.unwrap().json().await.unwrap();
    authorized_orders(&mut client, &base, "bureau-crash", FLOWS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    bureau.kill();
    http.delete(format!("{base}/sandbox/faults/{}", fault["id"])).send().await.unwrap();
    let restarted = Instant::now();
    bureau.start();
    let issued = wait_until_issued(&mut client, FLOWS, Duration::from_secs(45)).await;
    let bureau_resume = restarted.elapsed();
    assert_eq!(issued, FLOWS, "all issued before the old leases (60 s) expired");

    // collection-svc dies with 30 deliveries in flight (IssueBill waiting on the bureau).
    let fault: serde_json::Value =
        http.post(format!("{base}/sandbox/faults")).json(&slow_inserts).send().await.unwrap().json().await.unwrap();
    authorized_orders(&mut client, &base, "collection-crash", FLOWS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    collection.kill();
    http.delete(format!("{base}/sandbox/faults/{}", fault["id"])).send().await.unwrap();
    let restarted = Instant::now();
    collection.start();
    let issued = wait_until_issued(&mut client, 2 * FLOWS, Duration::from_secs(45)).await;
    let collection_resume = restarted.elapsed();
    assert_eq!(issued, 2 * FLOWS, "all issued before the old leases (60 s) expired");
    let cards: serde_json::Value =
        http.get(format!("{base}/sandbox/users/{PAYER}/cards")).send().await.unwrap().json().await.unwrap();
    assert_eq!(cards["cards"].as_array().unwrap().len(), 2 * FLOWS, "each bill once");
    eprintln!(
        "time to finish {FLOWS} flows in flight after kill -9 and restart: bureau-svc {:.1} s, collection-svc {:.1} s",
        bureau_resume.as_secs_f64(),
        collection_resume.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}
