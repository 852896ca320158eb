//! `cargo run --release -p bench -- [--duration 60] [--concurrency 64] ...`: the end-to-end
//! benchmark (see BENCHMARKS.md). The WeChat sandbox and the load run in this process;
//! bureau-svc and collection-svc run as processes of their own (this binary started again with
//! `serve`), on SQLite, with the dev stack's configuration.
//!
//! Phases: warm-up and one flow with a large PDF (memory per PDF); then, with a fresh pair of
//! service processes, warm-up and closed-loop flows at a chosen concurrency (throughput,
//! latencies, WeChat calls, CPU, memory); a burst of pushes at a chosen rate (acknowledgement
//! latency); the baseline with the WeChat client alone.

mod balancer;
mod baseline;
mod burst;
mod db_counts;
mod flows;
mod render;
mod report;
mod services;
mod soak;
mod stats;
mod watcher;
mod wechat_calls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use devstack::{Addresses, DEMO_OPENID};
use services::{Role, Service};
use stats::mib;

/// Room for the bureau's signature on a supplied PDF (an incremental update of about 10 KiB).
const SIGNATURE_HEADROOM: usize = 64 * 1024;

const USAGE: &str =
    "usage: fiscalbill-bench [--duration SECS] [--concurrency N] [--pdf-kib KIB] [--push-rate PER_SEC] \
[--push-secs SECS] [--baseline-secs SECS] [--big-pdf-mib MIB] [--poll-ms MS] [--replicas N] [--data-dir DIR]
           [--service-workers N] [--json FILE]
           (flows learn that their bill is issued from a WatchAuthorizations stream; with --poll-ms
           they call GetAuthorization every MS instead; --replicas N runs N of each service on
           BENCH_DATABASE_URL, each collection-svc calling its own bureau-svc, pushes balanced;
           --service-workers N: tokio worker threads of each service process, TOKIO_WORKER_THREADS,
           default 1: this machine's cores are shared with the sandbox and the load)
       fiscalbill-bench --soak-secs SECS --soak-rate PER_SEC [--soak-faults FRACTION] [--pdf-kib KIB] [--json FILE]
           (the soak instead: flows at a fixed rate with WeChat failing FRACTION (default 0.05) of
           business calls, sampled every minute)
       fiscalbill-bench --render-bills N
           (the cost of rendering and signing one 10-item bill, in this process)
environment: BENCH_SERVICE_WRAPPER, a command to run both services under (e.g. valgrind --tool=massif);
             BENCH_DATABASE_URL, a PostgreSQL URL for the services' databases instead of SQLite (schemas
             bench_bureau and bench_collection, emptied first)";

#[derive(Clone, Debug)]
struct Options {
    duration: Duration,
    concurrency: usize,
    pdf_kib: usize,
    push_rate: f64,
    push_secs: f64,
    baseline: Duration,
    big_pdf_mib: usize,
    /// Poll GetAuthorization this often instead of watching.
    poll: Option<Duration>,
    /// Processes of each service during the flows and the burst (more than one needs PostgreSQL).
    replicas: usize,
    /// Tokio worker threads of each service process.
    service_workers: usize,
    data_dir: PathBuf,
    json: Option<PathBuf>,
    soak: Option<Duration>,
    soak_rate: f64,
    soak_faults: f64,
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
            poll: None,
            replicas: 1,
            service_workers: 1,
            data_dir: std::env::temp_dir().join("fiscalbill-bench"),
            json: None,
            soak: None,
            soak_rate: 100.0,
            soak_faults: 0.05,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let value = iter.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
            let number =
                |v: &str| v.parse::<f64>().ok().filter(|n| *n > 0.0).ok_or(format!("{arg} {v}: not a positive number"));
            let one_or_more =
                |v: &str| v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or(format!("{arg} {v}: not 1 or more"));
            match arg.as_str() {
                "--duration" => options.duration = Duration::from_secs_f64(number(value)?),
                "--concurrency" => options.concurrency = number(value)? as usize,
                "--pdf-kib" => options.pdf_kib = number(value)? as usize,
                "--push-rate" => options.push_rate = number(value)?,
                "--push-secs" => options.push_secs = number(value)?,
                "--baseline-secs" => options.baseline = Duration::from_secs_f64(number(value)?),
                "--big-pdf-mib" => options.big_pdf_mib = number(value)? as usize,
                "--poll-ms" => options.poll = Some(Duration::from_secs_f64(number(value)? / 1e3)),
                "--replicas" => options.replicas = one_or_more(value)?,
                "--service-workers" => options.service_workers = one_or_more(value)?,
                "--data-dir" => options.data_dir = PathBuf::from(value),
                "--json" => options.json = Some(PathBuf::from(value)),
                "--soak-secs" => options.soak = Some(Duration::from_secs_f64(number(value)?)),
                "--soak-rate" => options.soak_rate = number(value)?,
                "--soak-faults" => options.soak_faults = number(value)?.min(1.0),
                _ => return Err(format!("unknown argument {arg}\n{USAGE}")),
            }
        }
        if options.replicas > 1 && services::postgres(Role::Bureau, 1).is_none() {
            return Err(format!(
                "--replicas {} needs {}: replicas share PostgreSQL",
                options.replicas,
                services::DATABASE_URL_VAR
            ));
        }
        Ok(options)
    }

    fn summary(&self, pdf_limit: usize) -> String {
        format!(
            "concurrency {}, duration {:?}, PDF {} KiB, {}, services' PDF limit {}, {}, {} of each service, {} tokio worker(s) each",
            self.concurrency,
            self.duration,
            self.pdf_kib,
            match self.poll {
                Some(poll) => format!("GetAuthorization every {poll:?}"),
                None => "WatchAuthorizations".to_owned(),
            },
            mib(pdf_limit as u64),
            match services::postgres(Role::Bureau, 1) {
                Some(_) => "PostgreSQL",
                None => "SQLite",
            },
            match self.replicas {
                1 => "one process".to_owned(),
                n => format!("{n} replicas"),
            },
            self.service_workers
        )
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return services::serve(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("--render-bills") {
        let count = args.get(1).and_then(|n| n.parse().ok()).filter(|n| *n > 0).unwrap_or(200);
        return match render::run(count) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("render: {message}");
                ExitCode::FAILURE
            }
        };
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
    let result = match options.soak {
        Some(duration) => runtime.block_on(run_soak(options, duration)),
        None => runtime.block_on(run(options)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("benchmark failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&options.data_dir);
    std::fs::create_dir_all(&options.data_dir).map_err(|e| format!("{}: {e}", options.data_dir.display()))?;
    services::reset_postgres().await?;
    let addresses = Addresses::ephemeral();
    let replicas = replica_addresses(&addresses, options.replicas);
    // WeChat pushes to one URL: with replicas, the balancer's.
    let pushes_to = match options.replicas {
        1 => addresses.clone(),
        _ => {
            let targets = replicas.iter().map(|r| r.collection_http).collect();
            let balancer = balancer::start(targets).await.map_err(|e| format!("balancer: {e}"))?;
            Addresses { collection_http: balancer, ..addresses.clone() }
        }
    };
    let pdf_limit = options.big_pdf_mib * 1024 * 1024;
    // The services and the sandbox take the large PDF with the signature the dev stack's bureau
    // adds to supplied PDFs.
    let services_limit = pdf_limit.max(options.pdf_kib * 1024) + SIGNATURE_HEADROOM;
    let sandbox = wechat_sandbox::start(wechat_sandbox::SandboxConfig {
        listen: addresses.sandbox,
        accounts: devstack::sandbox_accounts(&pushes_to),
        pdf_max_bytes: services_limit,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("sandbox: {e}"))?;
    let sandbox_url = sandbox.base_url().to_owned();
    let driver_for = |replicas: &[Addresses]| {
        let collections: Vec<_> = replicas.iter().map(|r| r.collection_grpc).collect();
        Arc::new(flows::Driver::new(&collections, &sandbox_url, wechat_sandbox::DEMO_UNIT, DEMO_OPENID, options.poll))
    };
    let first_driver = driver_for(&replicas[..1]);
    let http = first_driver.http().clone();
    let pdf = Bytes::from(wechat::pdf::sample_of_size(options.pdf_kib * 1024));

    // One large PDF, with the services otherwise idle: how many copies of it each one holds.
    // This pair of processes is then replaced, so that the memory the large PDF leaves in the
    // allocator does not count as memory the load needed.
    let pair =
        start_services(&replicas[..1], &options.data_dir, services_limit, options.service_workers, &first_driver, &pdf)
            .await?;
    let big_pdf = measure_big_pdf(&pair.iter().collect::<Vec<_>>(), &first_driver, pdf_limit).await?;
    drop(pair);
    let driver = match options.replicas {
        1 => first_driver,
        _ => driver_for(&replicas),
    };
    let running =
        start_services(&replicas, &options.data_dir, services_limit, options.service_workers, &driver, &pdf).await?;
    let services: Vec<&Service> = running.iter().collect();

    // Closed-loop flows.
    eprintln!("bench: {} flows at a time for {:?}", options.concurrency, options.duration);
    for service in &services {
        service.reset_peak().map_err(|e| e.to_string())?;
    }
    let calls_before = wechat_calls::fetch(&http, &sandbox_url).await?;
    let admins: Vec<_> = replicas.iter().flat_map(|r| [r.bureau_admin, r.collection_admin]).collect();
    let db_before = db_counts_of(&http, &admins).await?;
    let cpu_before: Vec<services::Cpu> = services.iter().map(|s| s.cpu()).collect();
    let own_cpu_before = services::cpu_of(std::process::id());
    let flows = flows::run_flows(driver.clone(), options.concurrency, options.duration, pdf.clone()).await;
    let cpu_flows: Vec<services::Cpu> = services.iter().zip(&cpu_before).map(|(s, before)| s.cpu() - *before).collect();
    let own_cpu = services::cpu_of(std::process::id()) - own_cpu_before;
    let db_flows: Vec<db_counts::DbCounts> =
        db_counts_of(&http, &admins).await?.into_iter().zip(db_before).map(|(after, before)| after - before).collect();
    let calls = wechat_calls::per_endpoint(&wechat_calls::fetch(&http, &sandbox_url).await?, &calls_before);
    if let Some(error) = &flows.first_error {
        eprintln!("bench: {} flows failed; first: {error}", flows.failed);
    }

    // A burst of pushes.
    let push_count = (options.push_rate * options.push_secs).round() as usize;
    eprintln!("bench: {push_count} pushes at {} per second", options.push_rate);
    let burst =
        burst::run_push_burst(driver.clone(), push_count, options.push_rate, pdf.clone(), addresses.collection_admin)
            .await;
    if let Some(error) = &burst.first_error {
        eprintln!("bench: push burst: {} failed; first: {error}", burst.failed);
    }
    let peaks: Vec<u64> = services.iter().map(|s| s.memory().peak).collect();
    let calls_so_far = wechat_calls::fetch(&http, &sandbox_url).await?;
    let whole_run = wechat_calls::per_endpoint(&calls_so_far, &BTreeMap::new());
    let credentials_fetched = wechat_calls::credential_fetches(calls_so_far);

    // The baseline, with the services idle.
    eprintln!("bench: baseline for {:?}", options.baseline);
    let baseline = baseline::run(&sandbox_url, DEMO_OPENID, options.concurrency, options.baseline, pdf.clone()).await;

    let results = report::Results {
        machine: report::machine(),
        options: options.summary(services_limit),
        flows,
        calls,
        cpu: by_role(&services, &cpu_flows, |a, b| a + b),
        own_cpu,
        db: by_role(&services, &db_flows, |a, b| a + b),
        burst,
        credentials_fetched,
        whole_run,
        peaks: by_role(&services, &peaks, u64::max),
        big_pdf,
        baseline,
        concurrency: options.concurrency,
    };
    let text = results.render();
    print!("{text}");
    if let Some(path) = &options.json {
        let json = serde_json::to_vec_pretty(&results.to_json(&text)).expect("JSON");
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let started = Instant::now();
    drop(running);
    sandbox.stop().await;
    eprintln!("bench: stopped in {:?}", started.elapsed());
    Ok(())
}

/// The soak (see `soak.rs`), on one pair of service processes after the warm-up.
async fn run_soak(options: Options, duration: Duration) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&options.data_dir);
    std::fs::create_dir_all(&options.data_dir).map_err(|e| format!("{}: {e}", options.data_dir.display()))?;
    services::reset_postgres().await?;
    let addresses = Addresses::ephemeral();
    let pdf_limit = (options.pdf_kib * 1024).max(2 * 1024 * 1024);
    let sandbox = wechat_sandbox::start(wechat_sandbox::SandboxConfig {
        listen: addresses.sandbox,
        accounts: devstack::sandbox_accounts(&addresses),
        pdf_max_bytes: pdf_limit,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("sandbox: {e}"))?;
    let sandbox_url = sandbox.base_url().to_owned();
    let driver = Arc::new(flows::Driver::new(
        &[addresses.collection_grpc],
        &sandbox_url,
        wechat_sandbox::DEMO_UNIT,
        DEMO_OPENID,
        options.poll.map(|poll| poll.max(Duration::from_millis(50))),
    ));
    let pdf = Bytes::from(wechat::pdf::sample_of_size(options.pdf_kib * 1024));
    let running = start_services(
        std::slice::from_ref(&addresses),
        &options.data_dir,
        pdf_limit,
        options.service_workers,
        &driver,
        &pdf,
    )
    .await?;
    let [bureau, collection] = &running[..] else { unreachable!("one of each service") };
    soak::inject_faults(driver.http(), &sandbox_url, options.soak_faults).await?;
    eprintln!(
        "bench: soak for {duration:?}: a flow every {:.1} ms, {:.0}% of business calls failing",
        1e3 / options.soak_rate,
        options.soak_faults * 100.0
    );
    let plan = soak::Plan { rate: options.soak_rate, faults: options.soak_faults, duration, pdf };
    let result = soak::run(driver.clone(), &[bureau, collection], plan, &sandbox_url, DEMO_OPENID).await?;
    let text = format!("{}\n{}", report::machine(), result.render());
    print!("{text}");
    if let Some(path) = &options.json {
        let json = serde_json::to_vec_pretty(&result.to_json()).expect("JSON");
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    drop(running);
    sandbox.stop().await;
    if result.cards != result.distinct_orders || result.cards as u64 != result.started {
        return Err(format!(
            "{} cards for {} distinct orders of {} started: not every bill issued exactly once",
            result.cards, result.distinct_orders, result.started
        ));
    }
    Ok(())
}

/// The addresses of each replica: the first's are `first`; the others listen on ports of
/// their own and share the sandbox.
fn replica_addresses(first: &Addresses, replicas: usize) -> Vec<Addresses> {
    let others = (1..replicas).map(|_| Addresses { sandbox: first.sandbox, ..Addresses::ephemeral() });
    std::iter::once(first.clone()).chain(others).collect()
}

/// Starts a bureau-svc and a collection-svc (which calls that bureau) for each replica's
/// addresses, waits until all serve, and warms them up with 20 flows per replica (tokens,
/// wx_card ticket, s_pappid, template, connections). Returns them as bureau, collection,
/// bureau, collection, ...
async fn start_services(
    replicas: &[Addresses],
    data_dir: &Path,
    pdf_limit: usize,
    workers: usize,
    driver: &flows::Driver,
    pdf: &Bytes,
) -> Result<Vec<Service>, String> {
    let mut services = Vec::new();
    for (replica, addresses) in replicas.iter().enumerate() {
        for role in [Role::Bureau, Role::Collection] {
            let placement = (replica, replicas.len());
            services.push(
                Service::spawn(role, placement, addresses, data_dir, pdf_limit, workers).map_err(|e| e.to_string())?,
            );
        }
    }
    for addresses in replicas {
        for addr in [addresses.bureau_grpc, addresses.collection_grpc] {
            fiscalbill_common::server::wait_until_serving(addr, Duration::from_secs(60)).await?;
        }
    }
    let pids: Vec<String> = services.iter().map(|s| s.pid().to_string()).collect();
    eprintln!("bench: {} — services up (pids {}); warming up", report::machine(), pids.join(", "));
    for _ in 0..20 * replicas.len() {
        driver.flow(pdf).await?;
    }
    Ok(services)
}

/// Each role's replicas' values combined, labelled with the role (and the number of replicas
/// when more than one): bureau-svc first.
fn by_role<T: Copy>(services: &[&Service], values: &[T], combine: impl Fn(T, T) -> T) -> Vec<(String, T)> {
    [Role::Bureau, Role::Collection]
        .into_iter()
        .filter_map(|role| {
            let mine: Vec<T> = services.iter().zip(values).filter(|(s, _)| s.role == role).map(|(_, v)| *v).collect();
            let combined = mine.iter().copied().reduce(&combine)?;
            let label = match mine.len() {
                1 => role.name().to_owned(),
                n => format!("{} ×{n}", role.name()),
            };
            Some((label, combined))
        })
        .collect()
}

/// Runs one flow whose PDF is `size` bytes and reports each service's peak RSS above its RSS
/// before.
async fn measure_big_pdf(
    services: &[&Service],
    driver: &flows::Driver,
    size: usize,
) -> Result<Vec<report::BigPdf>, String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let large_pdf = Bytes::from(wechat::pdf::sample_of_size(size));
    let before: Vec<_> = services
        .iter()
        .map(|s| s.reset_peak().map(|()| s.memory()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    driver.flow(&large_pdf).await?;
    drop(large_pdf);
    Ok(services
        .iter()
        .zip(&before)
        .map(|(service, before)| report::BigPdf {
            service: service.role.name(),
            size: size as u64,
            rss_before: before.rss,
            peak: service.memory().peak,
        })
        .collect())
}

/// Each service's statement and transaction counts so far, from its metrics.
async fn db_counts_of(
    http: &reqwest::Client,
    admins: &[std::net::SocketAddr],
) -> Result<Vec<db_counts::DbCounts>, String> {
    let mut counts = Vec::new();
    for admin in admins {
        counts.push(db_counts::fetch(http, *admin).await?);
    }
    Ok(counts)
}
