//! `cargo run --release -p bench -- [--duration 60] [--concurrency 64] ...`: the end-to-end
//! benchmark (see BENCHMARKS.md). The WeChat sandbox and the load run in this process;
//! bureau-svc and collection-svc run as processes of their own (this binary started again with
//! `serve`), on SQLite, with the dev stack's configuration.
//!
//! Phases: warm-up; one flow with a large PDF (memory per PDF); closed-loop flows at a chosen
//! concurrency (throughput, latencies, WeChat calls, CPU, memory); a burst of pushes at a chosen
//! rate (acknowledgement latency); the baseline with the WeChat client alone.

mod baseline;
mod flows;
mod services;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::{Addresses, DEMO_OPENID};
use serde_json::{Value, json};
use services::{Role, Service};
use stats::mib;

const USAGE: &str = "usage: fiscalbill-bench [--duration SECS] [--concurrency N] [--pdf-kib KIB] [--push-rate PER_SEC] \
[--push-secs SECS] [--baseline-secs SECS] [--big-pdf-mib MIB] [--poll-ms MS] [--data-dir DIR] [--json FILE]";

#[derive(Clone, Debug)]
struct Options {
    duration: Duration,
    concurrency: usize,
    pdf_kib: usize,
    push_rate: f64,
    push_secs: f64,
    baseline: Duration,
    big_pdf_mib: usize,
    poll: Duration,
    data_dir: PathBuf,
    json: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            duration: Duration::from_secs(60),
            concurrency: 64,
            pdf_kib: 64,
            push_rate: 1000.0,
            push_secs: 10.0,
            baseline: Duration::from_secs(20),
            big_pdf_mib: 10,
            poll: Duration::from_millis(5),
            data_dir: std::env::temp_dir().join("fiscalbill-bench"),
            json: None,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let value = iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
            let number =
                |v: &str| v.parse::<f64>().ok().filter(|n| *n > 0.0).ok_or(format!("{arg} {v}: not a positive number"));
            match arg.as_str() {
                "--duration" => options.duration = Duration::from_secs_f64(number(value)?),
                "--concurrency" => options.concurrency = number(value)? as usize,
                "--pdf-kib" => options.pdf_kib = number(value)? as usize,
                "--push-rate" => options.push_rate = number(value)?,
                "--push-secs" => options.push_secs = number(value)?,
                "--baseline-secs" => options.baseline = Duration::from_secs_f64(number(value)?),
                "--big-pdf-mib" => options.big_pdf_mib = number(value)? as usize,
                "--poll-ms" => options.poll = Duration::from_secs_f64(number(value)? / 1e3),
                "--data-dir" => options.data_dir = PathBuf::from(value),
                "--json" => options.json = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown argument {arg}\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return services::serve(&args[1..]);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("benchmark failed: {message}");
            ExitCode::FAILURE
        }
    }
}

/// WeChat calls by endpoint, from the sandbox's statistics.
async fn wechat_calls(http: &reqwest::Client, sandbox_url: &str) -> Result<BTreeMap<(String, String), u64>, String> {
    let stats: Value = http
        .get(format!("{sandbox_url}/sandbox/stats"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let rows = stats["calls"].as_array().ok_or("sandbox stats without calls")?;
    Ok(rows
        .iter()
        .map(|row| {
            let key =
                (row["endpoint"].as_str().unwrap_or("").to_owned(), row["appid"].as_str().unwrap_or("").to_owned());
            (key, row["calls"].as_u64().unwrap_or(0))
        })
        .collect())
}

fn per_endpoint(
    after: &BTreeMap<(String, String), u64>,
    before: &BTreeMap<(String, String), u64>,
) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for ((endpoint, appid), calls) in after {
        let earlier = before.get(&(endpoint.clone(), appid.clone())).copied().unwrap_or(0);
        *totals.entry(endpoint.clone()).or_insert(0) += calls - earlier;
    }
    totals.retain(|_, calls| *calls > 0);
    totals
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).map_or("?".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({model}), {memory} memory")
}

async fn run(options: Options) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&options.data_dir);
    std::fs::create_dir_all(&options.data_dir).map_err(|e| format!("{}: {e}", options.data_dir.display()))?;
    let addresses = Addresses::ephemeral();
    let pdf_limit = options.big_pdf_mib * 1024 * 1024;
    let sandbox = wechat_sandbox::start(wechat_sandbox::SandboxConfig {
        listen: addresses.sandbox,
        accounts: devstack::sandbox_accounts(&addresses),
        pdf_max_bytes: pdf_limit.max(options.pdf_kib * 1024),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("sandbox: {e}"))?;
    let sandbox_url = sandbox.base_url().to_owned();
    let services_limit = pdf_limit.max(options.pdf_kib * 1024);
    let bureau =
        Service::spawn(Role::Bureau, &addresses, &options.data_dir, services_limit).map_err(|e| e.to_string())?;
    let collection =
        Service::spawn(Role::Collection, &addresses, &options.data_dir, services_limit).map_err(|e| e.to_string())?;
    for addr in [addresses.bureau_grpc, addresses.collection_grpc] {
        fiscalbill_common::server::wait_until_serving(addr, Duration::from_secs(60)).await?;
    }
    let services = [&bureau, &collection];
    let driver = Arc::new(flows::Driver::new(
        addresses.collection_grpc,
        &sandbox_url,
        wechat_sandbox::DEMO_UNIT,
        DEMO_OPENID,
        options.poll,
    ));
    let http = driver.http().clone();
    let pdf = flows::padded_pdf(options.pdf_kib * 1024);
    eprintln!("bench: {} — services up (pids {} and {}); warming up", machine(), bureau.pid(), collection.pid());

    // Warm-up: tokens, ticket, s_pappid, template, connections.
    for _ in 0..20 {
        driver.flow(&pdf).await?;
    }

    // One large PDF, with the services otherwise idle: how many copies of it each one holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let big_pdf = flows::padded_pdf(pdf_limit);
    let before: Vec<_> = services
        .iter()
        .map(|s| s.reset_peak().map(|()| s.memory()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    driver.flow(&big_pdf).await?;
    let after: Vec<_> = services.iter().map(|s| s.memory()).collect();
    let big_pdf_held: Vec<Value> = services
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(service, (before, after))| {
            let extra = after.peak.saturating_sub(before.rss);
            json!({"service": service.role.name(), "rss_before": before.rss, "peak": after.peak, "extra": extra,
                   "pdf_copies": extra as f64 / big_pdf.len() as f64})
        })
        .collect();
    drop(big_pdf);

    // Closed-loop flows.
    eprintln!("bench: {} flows at a time for {:?}", options.concurrency, options.duration);
    for service in services {
        service.reset_peak().map_err(|e| e.to_string())?;
    }
    let calls_before = wechat_calls(&http, &sandbox_url).await?;
    let cpu_before: Vec<services::Cpu> = services.iter().map(|s| s.cpu()).collect();
    let own_cpu_before = services::cpu_of(std::process::id());
    let flows = flows::run_flows(driver.clone(), options.concurrency, options.duration, pdf.clone()).await;
    let cpu_flows: Vec<services::Cpu> = services.iter().zip(&cpu_before).map(|(s, before)| s.cpu() - *before).collect();
    let own_cpu = services::cpu_of(std::process::id()) - own_cpu_before;
    let calls = per_endpoint(&wechat_calls(&http, &sandbox_url).await?, &calls_before);
    if let Some(error) = &flows.first_error {
        eprintln!("bench: {} flows failed; first: {error}", flows.failed);
    }

    // A burst of pushes.
    let push_count = (options.push_rate * options.push_secs).round() as usize;
    eprintln!("bench: {push_count} pushes at {} per second", options.push_rate);
    let burst =
        flows::run_push_burst(driver.clone(), push_count, options.push_rate, pdf.clone(), addresses.collection_admin)
            .await;
    if let Some(error) = &burst.first_error {
        eprintln!("bench: push burst: {} failed; first: {error}", burst.failed);
    }
    let peaks: Vec<u64> = services.iter().map(|s| s.memory().peak).collect();
    let whole_run = per_endpoint(&wechat_calls(&http, &sandbox_url).await?, &BTreeMap::new());
    let credentials_fetched: BTreeMap<(String, String), u64> = wechat_calls(&http, &sandbox_url)
        .await?
        .into_iter()
        .filter(|((endpoint, _), _)| endpoint == "/cgi-bin/stable_token" || endpoint == "/cgi-bin/ticket/getticket")
        .collect();

    // The baseline, with the services idle.
    eprintln!("bench: baseline for {:?}", options.baseline);
    let baseline = baseline::run(&sandbox_url, DEMO_OPENID, options.concurrency, options.baseline, pdf.clone()).await;

    // Report.
    let bills_per_sec = flows.completed as f64 / flows.elapsed.as_secs_f64();
    let baseline_per_sec = baseline.completed as f64 / baseline.elapsed.as_secs_f64();
    let bills = flows.completed.max(1) as f64;
    let mut out = String::new();
    let mut line = |text: String| {
        println!("{text}");
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("machine: {}", machine()));
    line(format!(
        "options: concurrency {}, duration {:?}, PDF {} KiB, GetAuthorization every {:?}, services' PDF limit {}",
        options.concurrency,
        options.duration,
        options.pdf_kib,
        options.poll,
        mib(services_limit as u64)
    ));
    line(String::new());
    line(format!(
        "flows: {} bills issued in {:.1} s = {:.0} bills/s end to end ({} failed)",
        flows.completed,
        flows.elapsed.as_secs_f64(),
        bills_per_sec,
        flows.failed
    ));
    line(format!("  CreateAuthorization     p50 / p99 / max  {}", flows.create.summary()));
    line(format!("  push acknowledgement    p50 / p99 / max  {}", flows.push_ack.summary()));
    line(format!("  authorize → ISSUED      p50 / p99 / max  {}", flows.authorize_to_issued.summary()));
    line(format!("  GetAuthorization polls per bill          {:.1}", flows.polls as f64 / bills));
    line("  WeChat calls per bill:".to_owned());
    for (endpoint, count) in &calls {
        line(format!("    {endpoint:<36} {:.3}  ({count})", *count as f64 / bills));
    }
    for (service, cpu) in services.iter().zip(&cpu_flows) {
        line(format!(
            "  {} CPU: {:.2} s in all ({:.0}% in the kernel), {:.3} ms per bill",
            service.role.name(),
            cpu.total().as_secs_f64(),
            100.0 * cpu.system.as_secs_f64() / cpu.total().as_secs_f64().max(1e-9),
            cpu.total().as_secs_f64() * 1e3 / bills
        ));
    }
    line(format!(
        "  benchmark process (sandbox + load) CPU: {:.2} s, {:.3} ms per bill",
        own_cpu.total().as_secs_f64(),
        own_cpu.total().as_secs_f64() * 1e3 / bills
    ));
    line(String::new());
    line(format!(
        "push burst: {} pushes offered at {:.0}/s, sent at {:.0}/s; acknowledgement p50 / p99 / max {}; {} failed; all issued {:.1} s after the first",
        burst.pushes,
        burst.offered_rate,
        burst.sent_rate,
        burst.push_ack.summary(),
        burst.failed,
        burst.drained_after.as_secs_f64()
    ));
    line(String::new());
    line("token and ticket fetches for the whole run (appid: count):".to_owned());
    for ((endpoint, appid), count) in &credentials_fetched {
        line(format!("  {endpoint} {appid}: {count}"));
    }
    line("WeChat calls for the whole run:".to_owned());
    for (endpoint, count) in &whole_run {
        line(format!("  {endpoint:<36} {count}"));
    }
    line(String::new());
    for (service, peak) in services.iter().zip(&peaks) {
        line(format!("{} peak RSS under load: {}", service.role.name(), mib(*peak)));
    }
    for held in &big_pdf_held {
        line(format!(
            "{} with one {} PDF: RSS {} before, peak {} (+{}), {:.2} PDF sizes",
            held["service"].as_str().unwrap_or(""),
            mib(pdf_limit as u64),
            mib(held["rss_before"].as_u64().unwrap_or(0)),
            mib(held["peak"].as_u64().unwrap_or(0)),
            mib(held["extra"].as_u64().unwrap_or(0)),
            held["pdf_copies"].as_f64().unwrap_or(0.0)
        ));
    }
    line(String::new());
    line(format!(
        "baseline (WeChat client alone, same calls, {} at a time): {} flows in {:.1} s = {:.0} flows/s; flow p50 / p99 / max {} ({} failed)",
        options.concurrency,
        baseline.completed,
        baseline.elapsed.as_secs_f64(),
        baseline_per_sec,
        baseline.flow.summary(),
        baseline.failed
    ));
    line(format!(
        "services / baseline: throughput {:.2}, median latency {:.2}",
        bills_per_sec / baseline_per_sec,
        flows.authorize_to_issued.quantile(0.5).as_secs_f64() / baseline.flow.quantile(0.5).as_secs_f64().max(1e-9)
    ));
    if let Some(error) = &baseline.first_error {
        line(format!("baseline: first error: {error}"));
    }

    if let Some(path) = &options.json {
        let report = json!({
            "machine": machine(),
            "options": {"concurrency": options.concurrency, "duration_secs": options.duration.as_secs_f64(),
                        "pdf_kib": options.pdf_kib, "poll_ms": options.poll.as_secs_f64() * 1e3,
                        "push_rate": options.push_rate, "push_secs": options.push_secs},
            "flows": {"completed": flows.completed, "failed": flows.failed, "elapsed_secs": flows.elapsed.as_secs_f64(),
                      "bills_per_sec": bills_per_sec, "create": flows.create.to_json(), "push_ack": flows.push_ack.to_json(),
                      "authorize_to_issued": flows.authorize_to_issued.to_json(), "polls_per_bill": flows.polls as f64 / bills,
                      "wechat_calls": calls,
                      "cpu_ms_per_bill": services.iter().zip(&cpu_flows).map(|(s, c)| (s.role.name(), c.total().as_secs_f64() * 1e3 / bills)).collect::<BTreeMap<_, _>>()},
            "push_burst": {"pushes": burst.pushes, "offered_rate": burst.offered_rate, "sent_rate": burst.sent_rate,
                           "failed": burst.failed, "push_ack": burst.push_ack.to_json(), "drained_secs": burst.drained_after.as_secs_f64()},
            "credentials_fetched": credentials_fetched.iter().map(|((e, a), c)| json!({"endpoint": e, "appid": a, "calls": c})).collect::<Vec<_>>(),
            "peak_rss": services.iter().zip(&peaks).map(|(s, p)| (s.role.name(), *p)).collect::<BTreeMap<_, _>>(),
            "big_pdf": big_pdf_held,
            "baseline": {"completed": baseline.completed, "failed": baseline.failed, "flows_per_sec": baseline_per_sec, "flow": baseline.flow.to_json()},
            "report": out,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report).expect("JSON"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let started = Instant::now();
    drop((bureau, collection));
    sandbox.stop().await;
    eprintln!("bench: stopped in {:?}", started.elapsed());
    Ok(())
}
