//! The two services as processes of their own (this binary started again with `serve`), so
//! that each one's memory and CPU can be read from /proc, apart from the sandbox and the load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::Duration;

use devstack::Addresses;
pub use devstack::services::Role;
use devstack::services::ServiceConfig;
use fiscalbill_common::config::LogConfig;
use fiscalbill_common::db::{DatabaseConfig, Db};
use fiscalbill_common::telemetry::{self, TelemetryConfig};

/// The dev stack's addresses as one argument: seven comma-separated socket addresses.
fn encode(a: &Addresses) -> String {
    [a.sandbox, a.bureau_grpc, a.bureau_http, a.bureau_admin, a.collection_grpc, a.collection_http, a.collection_admin]
        .map(|addr| addr.to_string())
        .join(",")
}

fn decode(value: &str) -> Option<Addresses> {
    let parsed: Vec<SocketAddr> = value.split(',').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [sandbox, bureau_grpc, bureau_http, bureau_admin, collection_grpc, collection_http, collection_admin] =
        parsed.try_into().ok()?;
    Some(Addresses {
        sandbox,
        bureau_grpc,
        bureau_http,
        bureau_admin,
        collection_grpc,
        collection_http,
        collection_admin,
    })
}

/// `BENCH_SERVICE_WRAPPER`, a command the services run under (a profiler such as
/// `valgrind --tool=massif`), split into words.
fn wrapper() -> Option<Vec<String>> {
    let value = std::env::var("BENCH_SERVICE_WRAPPER").ok()?;
    let words: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    (!words.is_empty()).then_some(words)
}

/// A service process.
pub struct Service {
    pub role: Role,
    child: Child,
}

impl Service {
    /// Starts replica `replica` (from 0) of `replicas` of `role` with the dev stack's
    /// configuration for `addresses`, its database under `data_dir`, and `pdf_max_bytes` as the
    /// PDF limit. Its log (stdout and stderr) is appended to `data_dir/<role>.log`
    /// (`<role>-<replica>.log` after the first).
    pub fn spawn(
        role: Role,
        (replica, replicas): (usize, usize),
        addresses: &Addresses,
        data_dir: &Path,
        pdf_max_bytes: usize,
        workers: usize,
    ) -> std::io::Result<Self> {
        let log_name = match replica {
            0 => format!("{}.log", role.arg()),
            n => format!("{}-{n}.log", role.arg()),
        };
        let log = std::fs::File::options().create(true).append(true).open(data_dir.join(log_name))?;
        let mut command = match wrapper() {
            Some(words) => {
                let mut command = Command::new(&words[0]);
                command.args(&words[1..]).arg(std::env::current_exe()?);
                command
            }
            None => Command::new(std::env::current_exe()?),
        };
        let child = command
            .args([
                "serve",
                role.arg(),
                &encode(addresses),
                &data_dir.display().to_string(),
                &pdf_max_bytes.to_string(),
                &replicas.to_string(),
            ])
            // Read by tokio's runtime builder, in the services' own binaries as here.
            .env("TOKIO_WORKER_THREADS", workers.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self { role, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and its peak since the last [`Service::reset_peak`].
    pub fn memory(&self) -> Memory {
        memory_of(self.pid())
    }

    /// Starts a new peak-RSS measurement (`/proc/PID/clear_refs`, value 5).
    pub fn reset_peak(&self) -> std::io::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> Cpu {
        cpu_of(self.pid())
    }

    pub fn stop(&mut self) {
        if wrapper().is_some() {
            // A profiler writes its report when the program exits: SIGTERM, which drains.
            let _ = Command::new("kill").arg(self.pid().to_string()).status();
        } else {
            // The benchmark is over, so the process simply ends.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

/// Resident memory of process `pid` now and at its peak, in bytes.
pub fn memory_of(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    Memory { rss: field("VmRSS:"), peak: field("VmHWM:") }
}

/// CPU time process `pid` used so far, with its context switches and minor page faults.
pub fn cpu_of(pid: u32) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the parenthesized command name; minflt, utime and stime are the 10th,
    // 14th and 15th (the whole process's, all threads).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let seconds = |index: usize| {
        Duration::from_secs_f64(fields.get(index).copied().unwrap_or(0) as f64 / clock_ticks_per_second())
    };
    Cpu {
        user: seconds(11),
        system: seconds(12),
        switches: context_switches_of(pid),
        page_faults: fields.get(7).copied().unwrap_or(0),
    }
}

/// Context switches of all of process `pid`'s threads so far (voluntary and not), from each
/// thread's `/proc/PID/task/TID/status`: the process's own status counts its main thread only.
fn context_switches_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            status
                .lines()
                .filter_map(|line| {
                    line.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|count| count.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// User and kernel CPU time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
    /// Context switches of the threads alive when read (a thread that ended takes its count).
    pub switches: u64,
    /// Minor page faults: memory the process took from the system (or got back) and touched.
    pub page_faults: u64,
}

impl Cpu {
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;

    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            user: self.user + other.user,
            system: self.system + other.system,
            switches: self.switches + other.switches,
            page_faults: self.page_faults + other.page_faults,
        }
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;

    fn sub(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            switches: self.switches.saturating_sub(earlier.switches),
            page_faults: self.page_faults.saturating_sub(earlier.page_faults),
        }
    }
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `fiscalbill-bench serve bureau|collection ADDRESSES DATA_DIR PDF_MAX_BYTES REPLICAS`: runs one
/// service (one of REPLICAS of its role) with the dev stack's configuration until killed.
pub fn serve(args: &[String]) -> ExitCode {
    let [role, addresses, data_dir, pdf_max, replicas] = args else {
        eprintln!("usage: fiscalbill-bench serve bureau|collection ADDRESSES DATA_DIR PDF_MAX_BYTES REPLICAS");
        return ExitCode::from(2);
    };
    let (Some(role), Some(addresses), Ok(pdf_max_bytes), Ok(replicas)) =
        (Role::parse(role), decode(addresses), pdf_max.parse(), replicas.parse())
    else {
        eprintln!("serve: invalid arguments {args:?}");
        return ExitCode::from(2);
    };
    let data_dir = PathBuf::from(data_dir);
    fiscalbill_common::server::set_malloc_thresholds();
    // The services' own binaries use tokio's default runtime too: one worker per core.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let _telemetry = telemetry::init(role.name(), &LogConfig::default(), &TelemetryConfig::default(), "info");
        // Held until the process is killed.
        let mut config = ServiceConfig::dev(role, &addresses, &data_dir);
        config.set_pdf_max_bytes(pdf_max_bytes);
        if let Some(database) = postgres(role, replicas) {
            config.set_database(database);
        }
        let running = config.start().await;
        let _running = match running {
            Ok(running) => running,
            Err(message) => {
                eprintln!("{}: {message}", role.name());
                return ExitCode::FAILURE;
            }
        };
        // Killed by the benchmark when it is done.
        std::future::pending::<()>().await;
        ExitCode::SUCCESS
    })
}

/// With `BENCH_DATABASE_URL` (a PostgreSQL URL), the database of each of `replicas` processes of
/// `role`: a schema of the role's own (`bench_bureau`, `bench_collection`) in that database,
/// and 32 connections for the role, shared out among its replicas (with the default 8, the
/// pool bounded the pair at 72 bills/s: sqlx's pool pings a connection when it is taken and
/// when it is given back, so each statement holds one for three round trips; and PostgreSQL
/// accepts 100 clients by default, which 4 processes of 32 would exceed).
pub fn postgres(role: Role, replicas: usize) -> Option<DatabaseConfig> {
    let url = std::env::var(DATABASE_URL_VAR).ok().filter(|url| !url.is_empty())?;
    let schema = Some(format!("bench_{}", role.arg()));
    let max_connections = (32 / replicas.max(1)).max(4) as u32;
    Some(DatabaseConfig { url, schema, max_connections, ..DatabaseConfig::default() })
}

pub const DATABASE_URL_VAR: &str = "BENCH_DATABASE_URL";

/// Empties the services' PostgreSQL schemas (when `BENCH_DATABASE_URL` is set), as a run
/// starts with a fresh data directory on SQLite.
pub async fn reset_postgres() -> Result<(), String> {
    let Some(database) = postgres(Role::Bureau, 1) else { return Ok(()) };
    let db = Db::connect(&database, "bench_bureau").await.map_err(|e| format!("{DATABASE_URL_VAR}: {e}"))?;
    let mut conn = db.write().await.map_err(|e| e.to_string())?;
    for role in [Role::Bureau, Role::Collection] {
        let drop = format!("DROP SCHEMA IF EXISTS bench_{} CASCADE", role.arg());
        sqlx::Executor::execute(&mut *conn, sqlx::AssertSqlSafe(drop)).await.map_err(|e| e.to_string())?;
    }
    drop(conn);
    db.close().await;
    Ok(())
}
