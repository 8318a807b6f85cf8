//! Bench results: per-workload figures, machine description, and printing.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Figures of one workload.
#[derive(Debug, Serialize)]
pub(crate) struct WorkloadResult {
    pub(crate) workload: String,
    pub(crate) concurrency: usize,
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    pub(crate) rows: u64,
    pub(crate) errors: u64,
    pub(crate) requests_per_sec: f64,
    pub(crate) rows_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Server CPU time (user + system, all threads) per row over the measured window, when
    /// `--server-pid` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_cpu_us_per_row: Option<f64>,
    /// Extra facts of the run (set-up times, counts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
}

impl WorkloadResult {
    pub(crate) fn new(
        name: &str,
        concurrency: usize,
        seconds: f64,
        h: &Histogram<u64>,
        rows: u64,
        errors: u64,
    ) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            workload: name.into(),
            concurrency,
            seconds,
            requests: h.len(),
            rows,
            errors,
            requests_per_sec: h.len() as f64 / seconds,
            rows_per_sec: rows as f64 / seconds,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            server_cpu_us_per_row: None,
            notes: Vec::new(),
        }
    }
}

/// Where the numbers were taken.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: f64,
    pub(crate) os: String,
}

impl Machine {
    pub(crate) fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            memory_gib,
            os: std::env::consts::OS.into(),
        }
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) command: String,
    pub(crate) commit: Option<String>,
    pub(crate) machine: Machine,
    pub(crate) server_rss_idle_mib: Option<f64>,
    pub(crate) server_rss_end_mib: Option<f64>,
    pub(crate) results: Vec<WorkloadResult>,
}

impl Report {
    pub(crate) fn print(&self) {
        println!(
            "machine: {} CPUs, {}, {:.1} GiB; commit {}",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.memory_gib,
            self.commit.as_deref().unwrap_or("?")
        );
        if let Some(rss) = self.server_rss_idle_mib {
            println!("server RSS before the run: {rss:.1} MiB");
        }
        if let Some(rss) = self.server_rss_end_mib {
            println!("server RSS after the run: {rss:.1} MiB");
        }
        println!(
            "{:<14} {:>4} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "workload", "conc", "req/s", "rows/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        for r in &self.results {
            println!(
                "{:<14} {:>4} {:>10.0} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                r.workload,
                r.concurrency,
                r.requests_per_sec,
                r.rows_per_sec,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.max_ms,
                r.errors
            );
            if let Some(cpu) = r.server_cpu_us_per_row {
                println!("  server CPU per row: {cpu:.1} µs");
            }
            for note in &r.notes {
                println!("  {note}");
            }
        }
    }
}

/// Resident memory of a process, in MiB.
pub(crate) fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) a process has used so far, in microseconds.
pub(crate) fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Counted in USER_HZ ticks, 100 per second on Linux.
    Some((utime + stime) * 10_000)
}

/// The current git commit, if run inside a checkout.
pub(crate) fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
