//! The soak: flows started at a fixed rate (open loop) for a long time while WeChat fails a
//! share of the business calls, sampled every minute: each service's resident memory and open
//! file descriptors, and the latency of the flows that ended in that minute. Flat from the first
//! minute to the last is the goal. Afterwards every bill must be in the card package exactly
//! once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::flows::Driver;
use crate::services::Service;
use crate::stats::{Latencies, mib, ms};

/// The business endpoints faults are injected on, as in the fault test.
const BUSINESS_PATHS: &[&str] = &[
    "/nontax/getbillauthurl",
    "/nontax/createbillcard",
    "/card/invoice/platform/setpdf",
    "/card/invoice/platform/getpdf",
    "/nontax/insertbill",
];

/// One minute of the soak.
pub struct Window {
    pub minute: usize,
    /// Per service: (name, RSS bytes, open file descriptors).
    pub services: Vec<(&'static str, u64, usize)>,
    pub flows: Latencies,
    pub failed: u64,
}

pub struct SoakResult {
    pub rate: f64,
    pub faults: f64,
    pub windows: Vec<Window>,
    pub started: u64,
    pub issued: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// Cards the soak's orders added to the payer's card package (all of them issued, eventually),
    /// and how many distinct orders they are for.
    pub cards: usize,
    pub distinct_orders: usize,
}

#[derive(Default)]
struct Minute {
    flows: Latencies,
    failed: u64,
}

/// Adds faults on each business endpoint: system busy, the per-minute quota (by their rulebook
/// names), HTTP 503 and a dropped connection, each with a quarter of `share`.
pub async fn inject_faults(http: &reqwest::Client, sandbox_url: &str, share: f64) -> Result<(), String> {
    let kinds = [
        json!({"kind": "error", "name": "system_busy"}),
        json!({"kind": "error", "name": "minute_quota"}),
        json!({"kind": "http_status", "status": 503}),
        json!({"kind": "drop"}),
    ];
    for path in BUSINESS_PATHS {
        for kind in &kinds {
            let mut rule = kind.clone();
            rule["path"] = json!(path);
            rule["probability"] = json!(share / kinds.len() as f64);
            http.post(format!("{sandbox_url}/sandbox/faults"))
                .json(&rule)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| format!("fault {rule}: {e}"))?;
        }
    }
    Ok(())
}

/// Starts a flow every `1 / rate` seconds for `duration`, sampling every minute; then waits for
/// the flows in flight and counts the cards.
/// What the soak runs: flows per second, the share of business calls that fail, for how long,
/// with which PDF.
pub struct Plan {
    pub rate: f64,
    pub faults: f64,
    pub duration: Duration,
    pub pdf: Bytes,
}

pub async fn run(
    driver: Arc<Driver>,
    services: &[&Service],
    plan: Plan,
    sandbox_url: &str,
    openid: &str,
) -> Result<SoakResult, String> {
    let Plan { rate, faults, duration, pdf } = plan;
    let minutes = (duration.as_secs_f64() / 60.0).ceil() as usize;
    let cards_before = card_orders(&driver, sandbox_url, openid).await?.len();
    let current: Arc<Mutex<Minute>> = Arc::default();
    // Issued, failed, the first failure.
    let tally: Arc<Mutex<(u64, u64, Option<String>)>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut next_sample = started + Duration::from_secs(60);
    let mut windows = Vec::new();
    let mut tasks = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < duration {
        ticker.tick().await;
        let (driver, pdf, minute, tally) = (driver.clone(), pdf.clone(), current.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let flow_started = Instant::now();
            match driver.flow(&pdf).await {
                Ok(_) => {
                    minute.lock().unwrap().flows.record(flow_started.elapsed());
                    tally.lock().unwrap().0 += 1;
                }
                Err(error) => {
                    minute.lock().unwrap().failed += 1;
                    let mut tally = tally.lock().unwrap();
                    tally.1 += 1;
                    tally.2.get_or_insert(error);
                }
            }
        }));
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(60);
            let minute = std::mem::take(&mut *current.lock().unwrap());
            let window = sample(windows.len() + 1, services, minute);
            eprintln!("bench: soak {}", window.render());
            windows.push(window);
            tasks.retain(|task| !task.is_finished());
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    if windows.len() < minutes {
        let minute = std::mem::take(&mut *current.lock().unwrap());
        windows.push(sample(windows.len() + 1, services, minute));
    }
    let (issued, failed, first_error) = tally.lock().unwrap().clone();
    // Flows that gave up waiting still end issued: wait (up to 10 minutes) until every order
    // started is in the card package.
    let expected = cards_before + issued as usize + failed as usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut orders = card_orders(&driver, sandbox_url, openid).await?;
    while orders.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        orders = card_orders(&driver, sandbox_url, openid).await?;
    }
    let distinct: BTreeSet<&String> = orders.iter().collect();
    Ok(SoakResult {
        rate,
        faults,
        windows,
        started: issued + failed,
        issued,
        failed,
        first_error,
        cards: orders.len() - cards_before,
        distinct_orders: distinct.len() - cards_before,
    })
}

/// The order of each card in the payer's card package.
async fn card_orders(driver: &Driver, sandbox_url: &str, openid: &str) -> Result<Vec<String>, String> {
    let cards: Value = driver
        .http()
        .get(format!("{sandbox_url}/sandbox/users/{openid}/cards"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(cards["cards"]
        .as_array()
        .map(|cards| cards.iter().filter_map(|c| c["order_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
}

fn sample(minute: usize, services: &[&Service], flows: Minute) -> Window {
    let services = services.iter().map(|s| (s.role.name(), s.memory().rss, open_files(s.pid()))).collect();
    Window { minute, services, flows: flows.flows, failed: flows.failed }
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

impl Window {
    fn render(&self) -> String {
        let services: Vec<String> =
            self.services.iter().map(|(name, rss, fds)| format!("{name} RSS {} fds {fds}", mib(*rss))).collect();
        format!(
            "minute {:>3}: {} flows (p50 / p99 {} / {} ms), {} failed; {}",
            self.minute,
            self.flows.len(),
            ms(self.flows.quantile(0.5)),
            ms(self.flows.quantile(0.99)),
            self.failed,
            services.join("; ")
        )
    }
}

impl SoakResult {
    pub fn render(&self) -> String {
        let mut lines = vec![format!(
            "soak: {} flows at {:.0}/s with {:.0}% of business calls failing; {} issued, {} failed{}",
            self.started,
            self.rate,
            self.faults * 100.0,
            self.issued,
            self.failed,
            self.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        )];
        lines.extend(self.windows.iter().map(Window::render));
        lines.push(format!(
            "card package: {} cards for {} distinct orders of the {} started (every one issued once when all three are equal)",
            self.cards, self.distinct_orders, self.started
        ));
        lines.join("\n") + "\n"
    }

    pub fn to_json(&self) -> Value {
        json!({
            "rate": self.rate,
            "faults": self.faults,
            "started": self.started,
            "issued": self.issued,
            "failed": self.failed,
            "first_error": self.first_error,
            "cards": self.cards,
            "distinct_orders": self.distinct_orders,
            "windows": self.windows.iter().map(|w| json!({
                "minute": w.minute,
                "flows": w.flows.to_json(),
                "failed": w.failed,
                "services": w.services.iter().map(|(name, rss, fds)| json!({"service": name, "rss": rss, "fds": fds})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}
