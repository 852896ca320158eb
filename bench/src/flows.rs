//! Full flows as a business system and a payer make them: CreateAuthorization (with the bill's
//! PDF), the payer authorizing at WeChat (the sandbox pushes to collection-svc), then
//! GetAuthorization until the authorization is ISSUED.

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

pub struct Driver {
    collection: CollectionServiceClient<Channel>,
    http: reqwest::Client,
    sandbox_url: String,
    unit_appid: String,
    openid: String,
    /// How often a flow asks whether its bill is issued.
    poll: Duration,
    next_order: AtomicU64,
}

/// One flow's timings.
pub struct FlowTimes {
    pub create: Duration,
    /// The callback's answer to the sandbox's push, as WeChat would time it.
    pub push_ack: Duration,
    /// From the payer pressing "authorize" to GetAuthorization answering ISSUED.
    pub authorize_to_issued: Duration,
    pub polls: u64,
}

impl Driver {
    pub fn new(collection_grpc: SocketAddr, sandbox_url: &str, unit_appid: &str, openid: &str, poll: Duration) -> Self {
        let channel = Channel::from_shared(format!("http://{collection_grpc}")).expect("valid URI").connect_lazy();
        let limit = 64 * 1024 * 1024;
        Self {
            collection: CollectionServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            http: reqwest::Client::builder().no_proxy().build().expect("HTTP client"),
            sandbox_url: sandbox_url.to_owned(),
            unit_appid: unit_appid.to_owned(),
            openid: openid.to_owned(),
            poll,
            next_order: AtomicU64::new(1),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// CreateAuthorization for a new order; returns the order id and the payer's link.
    pub async fn create(&self, pdf: &Bytes) -> Result<(String, String), String> {
        let number = self.next_order.fetch_add(1, Ordering::Relaxed);
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
        let answer =
            self.collection.clone().create_authorization(request).await.map_err(|s| format!("{order_id}: {s}"))?;
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
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let attempt = &answer["push"]["attempts"][0];
        if attempt["outcome"] != "http_200" {
            return Err(format!("push not acknowledged: {attempt}"));
        }
        let elapsed_ms = attempt["elapsed_ms"].as_f64().ok_or("push without timing")?;
        Ok(Duration::from_secs_f64(elapsed_ms / 1e3))
    }

    /// Asks until the order is ISSUED; returns the number of GetAuthorization calls.
    pub async fn wait_issued(&self, order_id: &str, limit: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + limit;
        let mut client = self.collection.clone();
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
                _ => tokio::time::sleep(self.poll).await,
            }
        }
        unreachable!("the loop returns")
    }

    /// One whole flow.
    pub async fn flow(&self, pdf: &Bytes) -> Result<FlowTimes, String> {
        let started = Instant::now();
        let (order_id, auth_url) = self.create(pdf).await?;
        let create = started.elapsed();
        let authorizing = Instant::now();
        let push_ack = self.authorize(&auth_url).await?;
        let polls = self.wait_issued(&order_id, Duration::from_secs(120)).await?;
        Ok(FlowTimes { create, push_ack, authorize_to_issued: authorizing.elapsed(), polls })
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

pub struct PushBurstResult {
    pub pushes: usize,
    pub offered_rate: f64,
    /// Pushes sent per second, as achieved.
    pub sent_rate: f64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub push_ack: Latencies,
    /// From the first push until every pushed order was issued.
    pub drained_after: Duration,
}

/// Creates `count` authorizations (untimed), then has their payers authorize at `rate` per
/// second, open loop, and waits until all are issued.
pub async fn run_push_burst(
    driver: Arc<Driver>,
    count: usize,
    rate: f64,
    pdf: Bytes,
    collection_admin: SocketAddr,
) -> PushBurstResult {
    let issued_before = issued_count(driver.http(), collection_admin).await;
    let mut links = Vec::with_capacity(count);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let creating: Vec<_> = (0..count)
        .map(|_| {
            let (driver, pdf, semaphore) = (driver.clone(), pdf.clone(), semaphore.clone());
            tokio::spawn(async move {
                let _slot = semaphore.acquire().await.expect("semaphore");
                driver.create(&pdf).await
            })
        })
        .collect();
    for task in creating {
        match task.await.expect("create task") {
            Ok((_, link)) => links.push(link),
            Err(error) => panic!("setting up the push burst: {error}"),
        }
    }

    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let pushes: Vec<_> = links
        .into_iter()
        .enumerate()
        .map(|(i, link)| {
            let driver = driver.clone();
            let at = tokio::time::Instant::from_std(started + interval * i as u32);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                driver.authorize(&link).await
            })
        })
        .collect();
    let mut result = PushBurstResult {
        pushes: count,
        offered_rate: rate,
        sent_rate: 0.0,
        failed: 0,
        first_error: None,
        push_ack: Latencies::default(),
        drained_after: Duration::ZERO,
    };
    for push in pushes {
        match push.await.expect("push task") {
            Ok(ack) => result.push_ack.record(ack),
            Err(error) => {
                result.failed += 1;
                result.first_error.get_or_insert(error);
            }
        }
    }
    result.sent_rate = count as f64 / started.elapsed().as_secs_f64();
    let target = issued_before + count as u64 - result.failed;
    while issued_count(driver.http(), collection_admin).await < target {
        if started.elapsed() > Duration::from_secs(600) {
            result.first_error.get_or_insert_with(|| "the burst's bills were not all issued within 10 minutes".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.drained_after = started.elapsed();
    result
}

/// ISSUED authorizations, from collection-svc's metrics.
pub async fn issued_count(http: &reqwest::Client, admin: SocketAddr) -> u64 {
    let text = match http.get(format!("http://{admin}/metrics")).send().await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .find_map(|line| line.strip_prefix("fiscalbill_records_by_state{state=\"issued\"} "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

/// A valid PDF of exactly `size` bytes: a one-page bill padded with comment lines before
/// its trailer, which keeps every cross-reference offset valid.
pub fn padded_pdf(size: usize) -> Bytes {
    let pdf = fiscalbill_common::pdf::sample("Benchmark bill");
    let at = pdf.windows(9).rposition(|w| w == b"startxref").expect("the sample has a trailer");
    let missing = size.checked_sub(pdf.len()).expect("size above the sample's");
    let mut padding = Vec::with_capacity(missing);
    while padding.len() < missing {
        let line = (missing - padding.len()).min(1024);
        if line < 2 {
            padding.push(b'\n');
            continue;
        }
        padding.push(b'%');
        padding.extend(std::iter::repeat_n(b'x', line - 2));
        padding.push(b'\n');
    }
    let mut padded = Vec::with_capacity(size);
    padded.extend_from_slice(&pdf[..at]);
    padded.extend_from_slice(&padding);
    padded.extend_from_slice(&pdf[at..]);
    Bytes::from(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_pdfs_have_the_size_asked_and_stay_valid() {
        for size in [4 * 1024, 64 * 1024, 64 * 1024 + 1, 1024 * 1024 + 3] {
            let pdf = padded_pdf(size);
            assert_eq!(pdf.len(), size);
            assert_eq!(fiscalbill_common::pdf::validate(&pdf, size), Ok(()));
        }
    }
}
