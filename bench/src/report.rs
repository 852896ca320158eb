//! The benchmark's results, as text for people and JSON for tools.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::baseline::BaselineResult;
use crate::burst::PushBurstResult;
use crate::db_counts::DbCounts;
use crate::flows::FlowsResult;
use crate::services::Cpu;
use crate::stats::mib;
use crate::wechat_calls::Calls;

/// One large PDF through a service.
pub struct BigPdf {
    pub service: &'static str,
    pub size: u64,
    pub rss_before: u64,
    pub peak: u64,
}

impl BigPdf {
    /// Peak memory above what the service held before, in PDF sizes.
    fn copies(&self) -> f64 {
        self.peak.saturating_sub(self.rss_before) as f64 / self.size as f64
    }
}

pub struct Results {
    pub machine: String,
    pub options: String,
    pub concurrency: usize,
    pub flows: FlowsResult,
    /// WeChat calls during the flows, by endpoint.
    pub calls: BTreeMap<String, u64>,
    /// Each service's CPU during the flows (summed over its replicas).
    pub cpu: Vec<(String, Cpu)>,
    /// This process's CPU (sandbox and load) during the flows.
    pub own_cpu: Cpu,
    /// Each service's SQL statements, queries and write transactions during the flows.
    pub db: Vec<(String, DbCounts)>,
    pub burst: PushBurstResult,
    pub credentials_fetched: Calls,
    pub whole_run: BTreeMap<String, u64>,
    /// Peak RSS of each service over the flows and the burst (the largest of its replicas).
    pub peaks: Vec<(String, u64)>,
    pub big_pdf: Vec<BigPdf>,
    pub baseline: BaselineResult,
}

impl Results {
    fn bills_per_sec(&self) -> f64 {
        self.flows.completed as f64 / self.flows.elapsed.as_secs_f64()
    }

    fn baseline_per_sec(&self) -> f64 {
        self.baseline.completed as f64 / self.baseline.elapsed.as_secs_f64()
    }

    fn per_bill(&self, total: f64) -> f64 {
        total / self.flows.completed.max(1) as f64
    }

    pub fn render(&self) -> String {
        let (flows, burst, baseline) = (&self.flows, &self.burst, &self.baseline);
        let mut lines = vec![
            format!("machine: {}", self.machine),
            format!("options: {}", self.options),
            String::new(),
            format!(
                "flows: {} bills issued in {:.1} s = {:.0} bills/s end to end ({} failed)",
                flows.completed,
                flows.elapsed.as_secs_f64(),
                self.bills_per_sec(),
                flows.failed
            ),
            format!("  CreateAuthorization     p50 / p99 / max  {}", flows.create.summary()),
            format!("  push acknowledgement    p50 / p99 / max  {}", flows.push_ack.summary()),
            format!("  authorize → ISSUED      p50 / p99 / max  {}", flows.authorize_to_issued.summary()),
            format!("  GetAuthorization polls per bill          {:.1}", self.per_bill(flows.polls as f64)),
            "  WeChat calls per bill:".to_owned(),
        ];
        for (endpoint, count) in &self.calls {
            lines.push(format!("    {endpoint:<36} {:.3}  ({count})", self.per_bill(*count as f64)));
        }
        for (service, cpu) in &self.cpu {
            let total = cpu.total().as_secs_f64();
            lines.push(format!(
                "  {service} CPU: {total:.2} s in all ({:.0}% in the kernel), {:.3} ms per bill, \
                 {:.1} context switches and {:.1} minor page faults per bill",
                100.0 * cpu.system.as_secs_f64() / total.max(1e-9),
                self.per_bill(total * 1e3),
                self.per_bill(cpu.switches as f64),
                self.per_bill(cpu.page_faults as f64)
            ));
        }
        for (service, db) in &self.db {
            lines.push(format!(
                "  {service} database: {:.1} SQL statements in {:.1} queries (round trips) and {:.2} write transactions per bill",
                self.per_bill(db.statements as f64),
                self.per_bill(db.queries as f64),
                self.per_bill(db.transactions as f64)
            ));
        }
        let own = self.own_cpu.total().as_secs_f64();
        lines.push(format!(
            "  benchmark process (sandbox + load) CPU: {own:.2} s, {:.3} ms per bill",
            self.per_bill(own * 1e3)
        ));
        lines.push(String::new());
        lines.push(format!(
            "push burst: {} pushes offered at {:.0}/s, sent at {:.0}/s; acknowledgement p50 / p99 / max {}; \
             {} failed; all issued {:.1} s after the first",
            burst.pushes,
            burst.offered_rate,
            burst.sent_rate,
            burst.push_ack.summary(),
            burst.failed,
            burst.drained_after.as_secs_f64()
        ));
        if let Some(error) = &burst.first_error {
            lines.push(format!("  first error: {error}"));
        }
        lines.push(String::new());
        lines.push("token and ticket fetches for the whole run (appid: count):".to_owned());
        for ((endpoint, appid), count) in &self.credentials_fetched {
            lines.push(format!("  {endpoint} {appid}: {count}"));
        }
        lines.push("WeChat calls for the whole run:".to_owned());
        for (endpoint, count) in &self.whole_run {
            lines.push(format!("  {endpoint:<36} {count}"));
        }
        lines.push(String::new());
        for (service, peak) in &self.peaks {
            lines.push(format!("{service} peak RSS under load: {}", mib(*peak)));
        }
        for held in &self.big_pdf {
            lines.push(format!(
                "{} with one {} PDF: RSS {} before, peak {} (+{}), {:.2} PDF sizes",
                held.service,
                mib(held.size),
                mib(held.rss_before),
                mib(held.peak),
                mib(held.peak.saturating_sub(held.rss_before)),
                held.copies()
            ));
        }
        lines.push(String::new());
        lines.push(format!(
            "baseline (WeChat client alone, same calls, {} at a time): {} flows in {:.1} s = {:.0} flows/s; \
             flow p50 / p99 / max {} ({} failed)",
            self.concurrency,
            baseline.completed,
            baseline.elapsed.as_secs_f64(),
            self.baseline_per_sec(),
            baseline.flow.summary(),
            baseline.failed
        ));
        if let Some(error) = &baseline.first_error {
            lines.push(format!("  first error: {error}"));
        }
        lines.push(format!(
            "services / baseline: throughput {:.2}, median latency {:.2}",
            self.bills_per_sec() / self.baseline_per_sec(),
            flows.authorize_to_issued.quantile(0.5).as_secs_f64() / baseline.flow.quantile(0.5).as_secs_f64().max(1e-9)
        ));
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    /// Everything measured, and the text report.
    pub fn to_json(&self, text: &str) -> Value {
        let (flows, burst) = (&self.flows, &self.burst);
        json!({
            "machine": self.machine,
            "options": self.options,
            "flows": {
                "completed": flows.completed, "failed": flows.failed, "elapsed_secs": flows.elapsed.as_secs_f64(),
                "bills_per_sec": self.bills_per_sec(), "create": flows.create.to_json(),
                "push_ack": flows.push_ack.to_json(), "authorize_to_issued": flows.authorize_to_issued.to_json(),
                "polls_per_bill": self.per_bill(flows.polls as f64), "wechat_calls": self.calls,
                "cpu_ms_per_bill": self.cpu.iter().map(|(s, c)| (s.as_str(), self.per_bill(c.total().as_secs_f64() * 1e3)))
                    .collect::<BTreeMap<_, _>>(),
                "kernel_cpu_ms_per_bill": self.cpu.iter().map(|(s, c)| (s.as_str(), self.per_bill(c.system.as_secs_f64() * 1e3)))
                    .collect::<BTreeMap<_, _>>(),
                "context_switches_per_bill": self.cpu.iter().map(|(s, c)| (s.as_str(), self.per_bill(c.switches as f64)))
                    .collect::<BTreeMap<_, _>>(),
                "minor_page_faults_per_bill": self.cpu.iter().map(|(s, c)| (s.as_str(), self.per_bill(c.page_faults as f64)))
                    .collect::<BTreeMap<_, _>>(),
                "statements_per_bill": self.db.iter().map(|(s, d)| (s.as_str(), self.per_bill(d.statements as f64)))
                    .collect::<BTreeMap<_, _>>(),
                "queries_per_bill": self.db.iter().map(|(s, d)| (s.as_str(), self.per_bill(d.queries as f64)))
                    .collect::<BTreeMap<_, _>>(),
                "write_transactions_per_bill": self.db.iter().map(|(s, d)| (s.as_str(), self.per_bill(d.transactions as f64)))
                    .collect::<BTreeMap<_, _>>(),
            },
            "push_burst": {
                "pushes": burst.pushes, "offered_rate": burst.offered_rate, "sent_rate": burst.sent_rate,
                "failed": burst.failed, "push_ack": burst.push_ack.to_json(),
                "drained_secs": burst.drained_after.as_secs_f64(),
            },
            "credentials_fetched": self.credentials_fetched.iter()
                .map(|((endpoint, appid), calls)| json!({"endpoint": endpoint, "appid": appid, "calls": calls}))
                .collect::<Vec<_>>(),
            "peak_rss": self.peaks.iter().map(|(s, peak)| (s.as_str(), *peak)).collect::<BTreeMap<_, _>>(),
            "big_pdf": self.big_pdf.iter()
                .map(|b| json!({"service": b.service, "size": b.size, "rss_before": b.rss_before, "peak": b.peak,
                                "pdf_copies": b.copies()}))
                .collect::<Vec<_>>(),
            "baseline": {
                "completed": self.baseline.completed, "failed": self.baseline.failed,
                "flows_per_sec": self.baseline_per_sec(), "flow": self.baseline.flow.to_json(),
            },
            "report": text,
        })
    }
}

/// Cores, CPU model and memory of this machine.
pub fn machine() -> String {
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
