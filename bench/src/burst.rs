//! A burst of pushes: payers authorizing at a fixed rate, open loop, whatever the services'
//! pace; each push's acknowledgement is timed as WeChat would see it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::flows::Driver;
use crate::stats::Latencies;

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
