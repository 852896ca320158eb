//! Full flows as a business system and a payer make them: CreateAuthorization (with the bill's
//! PDF), the payer authorizing at WeChat (the sandbox pushes to collection-svc), then the
//! business system learning that the bill is ISSUED: from its WatchAuthorizations stream, or
//! (`--poll-ms`) by calling GetAuthorization until it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_client::CollectionServiceClient;
use fiscalbill_common::proto::types as types_pb;
use serde_json::json;
use tonic::transport::Channel;

use crate::stats::Latencies;
use crate::watcher::IssuedWatch;

pub struct Driver {
    /// One client per collection-svc replica: orders are created on each in turn; the first
    /// also answers polls and the watch (any replica sees every replica's changes).
    collections: Vec<CollectionServiceClient<Channel>>,
    http: reqwest::Client,
    sandbox_url: String,
    unit_appid: String,
    openid: String,
    /// How often a flow asks whether its bill is issued; None: the flows watch instead.
    poll: Option<Duration>,
    watch: tokio::sync::OnceCell<IssuedWatch>,
}

/// The number of the next order of this run, shared by its drivers: an order id (and billing
/// number) used twice would name the first order again (CreateAuthorization is idempotent).
static NEXT_ORDER: AtomicU64 = AtomicU64::new(1);

/// One flow's timings.
pub struct FlowTimes {
    pub create: Duration,
    /// The callback's answer to the sandbox's push, as WeChat would time it.
    pub push_ack: Duration,
    /// From the payer pressing "authorize" to the business system learning of ISSUED.
    pub authorize_to_issued: Duration,
    pub polls: u64,
}

impl Driver {
    pub fn new(
        collection_grpcs: &[SocketAddr],
        sandbox_url: &str,
        unit_appid: &str,
        openid: &str,
        poll: Option<Duration>,
    ) -> Self {
        assert!(!collection_grpcs.is_empty(), "at least one collection-svc");
        let limit = 64 * 1024 * 1024;
        let client = |address: &SocketAddr| {
            let channel = Channel::from_shared(format!("http://{address}")).expect("valid URI").connect_lazy();
            CollectionServiceClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit)
        };
        Self {
            collections: collection_grpcs.iter().map(client).collect(),
            // Idle connections are dropped before the sandbox closes them (10 s): reusing one
            // as the server closes it fails the request ("error sending request", seen once in
            // 16,000 flows).
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            sandbox_url: sandbox_url.to_owned(),
            unit_appid: unit_appid.to_owned(),
            openid: openid.to_owned(),
            poll,
            watch: tokio::sync::OnceCell::new(),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// CreateAuthorization for a new order; returns the order id and the payer's link.
    pub async fn create(&self, pdf: &Bytes) -> Result<(String, String), String> {
        let number = NEXT_ORDER.fetch_add(1, Ordering::Relaxed);
        let order_id = format!("bench-{number}");
        let fee = 2_500;
        let request = pb::CreateAuthorizationRequest {
            unit_appid: self.unit_appid.clone(),
            order_id: order_id.clone(),
            money: fee,
            source: types_pb::Source::Web as i32,
            redirect_url: "https://hospital.example/paid".to_owned(),
            bill: Some(types_pb::BillContent {
                fee,
                payer_title: "张三".to_owned(),
                billing_no: "44010125".to_owned(),
                billing_code: format!("{number:010}"),
                billing_time: Some(prost_types::Timestamp { seconds: 1_760_000_000, nanos: 0 }),
                items: vec![types_pb::BillItem {
                    name: "门诊挂号费".to_owned(),
                    quantity: "1".to_owned(),
                    unit: "次".to_owned(),
                    unit_price: fee,
                    amount: fee,
                }],
                remarks: String::new(),
            }),
            pdf: pdf.clone(),
            request_id: String::new(),
        };
        // CreateAuthorization is idempotent: like a business system, retry what was unavailable
        // (WeChat failing under the soak's faults).
        let mut attempts = 0;
        let answer = loop {
            attempts += 1;
            let replica = &self.collections[number as usize % self.collections.len()];
            match replica.clone().create_authorization(request.clone()).await {
                Ok(answer) => break answer,
                Err(status)
                    if attempts < 20
                        && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => return Err(format!("{order_id}: {status}")),
            }
        };
        let authorization = answer.into_inner().authorization.ok_or("no authorization in the answer")?;
        Ok((order_id, authorization.auth_url))
    }

    /// The payer authorizes at the sandbox, which pushes to collection-svc; returns how long
    /// the push took to be acknowledged.
    pub async fn authorize(&self, auth_url: &str) -> Result<Duration, String> {
        let answer: serde_json::Value = self
            .http
            .post(format!("{}/sandbox/authorize", self.sandbox_url))
            .json(&json!({"auth_url": auth_url, "openid": self.openid, "wait": true}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| wechat::with_causes(&e))?
            .json()
            .await
            .map_err(|e| wechat::with_causes(&e))?;
        let attempt = &answer["push"]["attempts"][0];
        if attempt["outcome"] != "http_200" {
            return Err(format!("push not acknowledged: {attempt}"));
        }
        let elapsed_ms = attempt["elapsed_ms"].as_f64().ok_or("push without timing")?;
        Ok(Duration::from_secs_f64(elapsed_ms / 1e3))
    }

    /// Asks every `poll` until the order is ISSUED; returns the number of GetAuthorization calls.
    async fn poll_issued(&self, order_id: &str, poll: Duration, limit: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        let mut client = self.collections[0].clone();
        for polls in 1.. {
            let request =
                pb::GetAuthorizationRequest { unit_appid: self.unit_appid.clone(), order_id: order_id.to_owned() };
            let authorization = client
                .get_authorization(request)
                .await
                .map_err(|s| format!("{order_id}: {s}"))?
                .into_inner()
                .authorization
                .ok_or("no authorization in the answer")?;
            match pb::AuthorizationState::try_from(authorization.state) {
                Ok(pb::AuthorizationState::Issued) => return Ok(polls),
                Ok(pb::AuthorizationState::IssueFailed) => {
                    return Err(format!("{order_id} failed: {:?}", authorization.failure));
                }
                _ if Instant::now() > deadline => return Err(format!("{order_id} not issued within {limit:?}")),
                _ => tokio::time::sleep(poll).await,
            }
        }
        unreachable!("the loop returns")
    }

    /// The payer authorizes, then the order's outcome arrives on the unit's stream as `issued`;
    /// returns how long the push took to be acknowledged.
    async fn authorize_and_wait(
        &self,
        auth_url: &str,
        order_id: &str,
        issued: tokio::sync::oneshot::Receiver<crate::watcher::Outcome>,
        limit: Duration,
    ) -> Result<Duration, String> {
        let push_ack = self.authorize(auth_url).await?;
        match tokio::time::timeout(limit, issued).await {
            Ok(Ok(outcome)) => outcome.map(|()| push_ack),
            Ok(Err(_)) => Err(format!("{order_id}: the watch ended")),
            Err(_) => Err(format!("{order_id} not issued within {limit:?}")),
        }
    }

    /// The unit's WatchAuthorizations stream, opened by the first flow that needs it.
    async fn watch(&self) -> Result<&IssuedWatch, String> {
        self.watch.get_or_try_init(|| IssuedWatch::start(self.collections[0].clone(), &self.unit_appid)).await
    }

    /// One whole flow.
    pub async fn flow(&self, pdf: &Bytes) -> Result<FlowTimes, String> {
        let started = Instant::now();
        let (order_id, auth_url) = self.create(pdf).await?;
        let create = started.elapsed();
        let limit = Duration::from_secs(120);
        let (push_ack, authorize_to_issued, polls) = match self.poll {
            Some(poll) => {
                let authorizing = Instant::now();
                let push_ack = self.authorize(&auth_url).await?;
                let polls = self.poll_issued(&order_id, poll, limit).await?;
                (push_ack, authorizing.elapsed(), polls)
            }
            None => {
                let watch = self.watch().await?;
                let issued = watch.expect(&order_id);
                let authorizing = Instant::now();
                let push_ack = self.authorize_and_wait(&auth_url, &order_id, issued, limit).await;
                watch.forget(&order_id);
                (push_ack?, authorizing.elapsed(), 0)
            }
        };
        Ok(FlowTimes { create, push_ack, authorize_to_issued, polls })
    }
}

#[derive(Default)]
pub struct FlowsResult {
    pub completed: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub create: Latencies,
    pub push_ack: Latencies,
    pub authorize_to_issued: Latencies,
    pub polls: u64,
}

/// `concurrency` payers and business-system threads, each running flows back to back for
/// `duration`.
pub async fn run_flows(driver: Arc<Driver>, concurrency: usize, duration: Duration, pdf: Bytes) -> FlowsResult {
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (driver, pdf) = (driver.clone(), pdf.clone());
            tokio::spawn(async move {
                let mut result = FlowsResult::default();
                while started.elapsed() < duration {
                    match driver.flow(&pdf).await {
                        Ok(times) => {
                            result.completed += 1;
                            result.polls += times.polls;
                            result.create.record(times.create);
                            result.push_ack.record(times.push_ack);
                            result.authorize_to_issued.record(times.authorize_to_issued);
                        }
                        Err(error) => {
                            result.failed += 1;
                            result.first_error.get_or_insert(error);
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut total = FlowsResult::default();
    for worker in workers {
        let result = worker.await.expect("flow worker");
        total.completed += result.completed;
        total.failed += result.failed;
        total.polls += result.polls;
        total.first_error = total.first_error.or(result.first_error);
        total.create.extend(result.create);
        total.push_ack.extend(result.push_ack);
        total.authorize_to_issued.extend(result.authorize_to_issued);
    }
    total.elapsed = started.elapsed();
    total
}
