//! kill -9: both services run as processes of their own and are killed at random moments
//! (SIGKILL) and started again, over and over, while 300 orders go through. Afterwards every
//! authorized order is issued exactly once and nothing is stuck.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::*;
use fiscalbill_common::auth::BearerKey;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use serde_json::json;
use tokio::sync::Mutex;

const ORDERS: usize = 300;
const CHAOS: Duration = Duration::from_secs(25);

struct Service {
    role: &'static str,
    config: PathBuf,
    child: Option<Child>,
}

impl Service {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_fiscalbill-service"))
            .args([self.role, self.config.to_str().unwrap()])
            .spawn()
            .expect("the service process starts");
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no cleanup.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write(dir: &Path, name: &str, value: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_at_random_lose_and_duplicate_nothing() {
    let dir = std::env::temp_dir().join(format!("fiscalbill-crashes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = Options::default();
    let sandbox = wechat_sandbox::start(wechat_sandbox::SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        accounts: sandbox_accounts(&options),
        push_timeout_ms: 1_000,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = sandbox.base_url().to_owned();
    // Fixed ports: each service keeps its own across restarts. The sandbox runs in this process.
    let devstack::Addresses {
        bureau_grpc,
        bureau_http,
        bureau_admin,
        collection_grpc,
        collection_http,
        collection_admin,
        ..
    } = devstack::Addresses::ephemeral();
    let http = reqwest::Client::new();
    let mut unit =
        serde_json::to_value(sandbox_accounts(&options).into_iter().find(|a| a.appid == UNIT).unwrap()).unwrap();
    unit["callback_url"] = json!(format!("http://{collection_http}/wechat/callback/{UNIT}"));
    http.post(format!("{base}/sandbox/accounts")).json(&unit).send().await.unwrap().error_for_status().unwrap();

    let server = |grpc: SocketAddr, http: SocketAddr, admin: SocketAddr| json!({"grpc_listen": grpc, "http_listen": http, "admin_listen": admin, "shutdown_grace_ms": 1000});
    let wechat = json!({"base_url": base, "timeout_ms": 1000, "resend_backoff_ms": 10});
    let bureau_config = write(
        &dir,
        "bureau.json",
        json!({
            "server": server(bureau_grpc, bureau_http, bureau_admin),
            "database": {"url": format!("sqlite://{}", dir.join("bureau.db").display())},
            "wechat": wechat,
            "account": {"appid": BUREAU, "secret": secret(BUREAU).expose(), "name": "沙箱市财政局"},
            "issuing": {"retry_base_ms": 20, "retry_max_ms": 300, "poll_interval_ms": 20, "lease_secs": 2, "workers": 32},
            "units": [{"appid": UNIT, "payee": "沙箱市人民医院", "logo_file": devstack::demo_logo_file(&dir)}],
            "auth": {"enabled": false},
        }),
    );
    let collection_config = write(
        &dir,
        "collection.json",
        json!({
            "server": server(collection_grpc, collection_http, collection_admin),
            "database": {"url": format!("sqlite://{}", dir.join("collection.db").display())},
            "wechat": wechat,
            "bureau": {"endpoint": format!("http://{bureau_grpc}"), "issue_deadline_ms": 2000, "connect_timeout_ms": 300},
            "units": [{"appid": UNIT, "secret": secret(UNIT).expose(), "callback_token": TOKEN, "encoding_aes_key": AES_KEY}],
            "authorization": {"reconcile_after_secs": 1, "reconcile_interval_secs": 1},
            "dispatch": {"workers": 32, "poll_interval_ms": 20, "retry_base_ms": 50, "retry_max_ms": 500, "progress_poll_ms": 50, "lease_secs": 2},
            "auth": {"enabled": false},
        }),
    );
    let services = Arc::new([
        Mutex::new(Service { role: "bureau", config: bureau_config, child: None }),
        Mutex::new(Service { role: "collection", config: collection_config, child: None }),
    ]);
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
                let request = pb::CreateAuthorizationRequest {
                    unit_appid: UNIT.into(),
                    order_id: order.clone(),
                    money: 2_500,
                    source: fiscalbill_common::proto::types::Source::Web as i32,
                    redirect_url: String::new(),
                    bill: Some(content(&order, 2_500)),
                    pdf: Default::default(),
                    request_id: String::new(),
                };
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
