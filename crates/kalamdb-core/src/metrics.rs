//! Server metrics: counters and histograms the request paths update ([`Metrics`]), plus
//! [`Figure`]s read when scraped (storage engine, segment cache, live queries, transactions,
//! process: `providers::system_ops` reads them), rendered in the Prometheus/OpenMetrics text format for
//! `GET /metrics` ([`Metrics::render`]) and listed by `system.stats` ([`Metrics::samples`]).
//!
//! Every name starts with `kalamdb_`. Labels have bounded values: routes are the router's
//! patterns, statement and job kinds are fixed words, never user input.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;

/// An HTTP request's route pattern, method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route pattern (`/v1/api/sql`), or `other` for unmatched paths.
    pub route: String,
    /// `GET`, `POST` …
    pub method: String,
    /// The response status.
    pub status: u16,
}

/// One label naming a kind (a route, a statement kind, a job type).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: String,
}

/// A finished job's type and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// `flush`, `compact`, `topic_flush` …
    pub kind: String,
    /// `completed` or `failed`.
    pub status: String,
}

/// The server's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests answered.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency by route (`kind` = route pattern), seconds.
    pub http_seconds: Family<KindLabel, Histogram>,
    /// SQL statements run, by kind (`select`, `insert`, `update`, `delete`, `ddl`, `other`).
    pub statements: Family<KindLabel, Counter>,
    /// Rows inserted, updated or deleted by statements.
    pub rows_written: Counter,
    /// Rows returned to clients by queries.
    pub rows_read: Counter,
    /// WebSocket connections opened.
    pub ws_connections: Counter,
    /// Change messages sent to live subscriptions.
    pub live_deliveries: Counter,
    /// From a change's commit to its message being queued for a subscriber, seconds.
    pub live_delivery_seconds: Histogram,
    /// Jobs finished, by type and outcome.
    pub jobs: Family<JobLabels, Counter>,
    /// Job duration by type, seconds.
    pub job_seconds: Family<KindLabel, Histogram>,
    /// Rows written to Parquet by flush jobs.
    pub flushed_rows: Counter,
    /// Bytes written to Parquet by flush and compaction jobs.
    pub flushed_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kalamdb");
        // 50 µs to ~6.5 s.
        let latency = || Histogram::new(exponential_buckets(0.00005, 2.0, 18));
        let http_seconds =
            Family::<KindLabel, Histogram>::new_with_constructor(latency as fn() -> Histogram);
        let job_seconds = Family::<KindLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 4.0, 10))) as fn() -> Histogram,
        );
        let m = Self {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_seconds,
            statements: Family::default(),
            rows_written: Counter::default(),
            rows_read: Counter::default(),
            ws_connections: Counter::default(),
            live_deliveries: Counter::default(),
            live_delivery_seconds: latency(),
            jobs: Family::default(),
            job_seconds,
            flushed_rows: Counter::default(),
            flushed_bytes: Counter::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route (kind)",
            m.http_seconds.clone(),
        );
        registry.register(
            "sql_statements",
            "SQL statements run, by kind",
            m.statements.clone(),
        );
        registry.register("jobs", "Jobs finished, by type and status", m.jobs.clone());
        registry.register("job_seconds", "Job duration by type", m.job_seconds.clone());
        registry.register(
            "live_delivery_seconds",
            "From a change's commit to its messages queued for every subscriber",
            m.live_delivery_seconds.clone(),
        );
        let counters = [
            (
                "rows_written",
                "Rows inserted, updated or deleted by statements",
                &m.rows_written,
            ),
            (
                "rows_read",
                "Rows returned to clients by queries",
                &m.rows_read,
            ),
            (
                "websocket_connections_opened",
                "WebSocket connections opened",
                &m.ws_connections,
            ),
            (
                "live_deliveries",
                "Change messages queued for live subscriptions",
                &m.live_deliveries,
            ),
            (
                "flushed_rows",
                "Rows written to Parquet by flush jobs",
                &m.flushed_rows,
            ),
            (
                "flushed_bytes",
                "Bytes of Parquet written by flush and compaction jobs",
                &m.flushed_bytes,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        Self { registry, ..m }
    }

    /// Counts one statement of `kind`.
    pub fn statement(&self, kind: &str) {
        self.statements
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Counts a finished job.
    pub fn job(&self, kind: &str, ok: bool, seconds: f64) {
        let status = if ok { "completed" } else { "failed" };
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.into(),
                status: status.into(),
            })
            .inc();
        self.job_seconds
            .get_or_create(&KindLabel { kind: kind.into() })
            .observe(seconds);
    }

    /// The exposition: these metrics and `figures`, in the OpenMetrics text format.
    pub fn render(&self, figures: &[Figure]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        for f in figures {
            let (kind, suffix) = if f.counter {
                ("counter", "_total")
            } else {
                ("gauge", "")
            };
            let _ = writeln!(out, "# HELP kalamdb_{} {}.", f.name, f.help);
            let _ = writeln!(out, "# TYPE kalamdb_{} {kind}", f.name);
            let _ = writeln!(out, "kalamdb_{}{suffix} {}", f.name, f.value);
        }
        out.push_str("# EOF\n");
        out
    }

    /// Every sample of [`Metrics::render`] as (name with labels, value), for `system.stats`.
    pub fn samples(&self, figures: &[Figure]) -> Vec<(String, String)> {
        self.render(figures)
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.to_string()))
            })
            .collect()
    }
}

/// A figure read when scraped.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Name without the `kalamdb_` prefix (and without `_total`).
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Monotonic (a counter) rather than a level (a gauge).
    pub counter: bool,
    /// The value.
    pub value: f64,
}

pub(crate) fn gauge(name: &'static str, help: &'static str, value: f64) -> Figure {
    Figure {
        name,
        help,
        counter: false,
        value,
    }
}

pub(crate) fn counter(name: &'static str, help: &'static str, value: f64) -> Figure {
    Figure {
        name,
        help,
        counter: true,
        value,
    }
}

/// Figures of this process from `/proc` (Linux; zeros elsewhere).
#[derive(Debug, Default)]
pub(crate) struct ProcessStats {
    pub(crate) rss_bytes: u64,
    pub(crate) cpu_seconds: f64,
    pub(crate) open_fds: u64,
}

impl ProcessStats {
    pub(crate) fn read() -> Self {
        // SAFETY: sysconf only reads system constants.
        let (page, ticks) = unsafe {
            (
                libc::sysconf(libc::_SC_PAGESIZE),
                libc::sysconf(libc::_SC_CLK_TCK),
            )
        };
        let rss_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        // Fields after the command name (which may hold spaces): utime is the 12th, stime
        // the 13th of what follows the closing parenthesis.
        let cpu_ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let user: u64 = fields.get(11)?.parse().ok()?;
                let system: u64 = fields.get(12)?.parse().ok()?;
                Some(user + system)
            })
            .unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Self {
            rss_bytes: rss_pages * u64::try_from(page).unwrap_or(4096),
            cpu_seconds: cpu_ticks as f64 / (ticks.max(1) as f64),
            open_fds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_figures() {
        let m = Metrics::new();
        m.statement("select");
        m.statement("select");
        m.rows_written.inc_by(3);
        m.http_seconds
            .get_or_create(&KindLabel {
                kind: "/v1/api/sql".into(),
            })
            .observe(0.001);
        let text = m.render(&[
            gauge("x_level", "A level", 2.0),
            counter("y", "Things", 5.0),
        ]);
        assert!(
            text.contains("kalamdb_sql_statements_total{kind=\"select\"} 2"),
            "{text}"
        );
        assert!(text.contains("kalamdb_rows_written_total 3"), "{text}");
        assert!(text.contains("kalamdb_http_request_seconds_count{kind=\"/v1/api/sql\"} 1"));
        assert!(text.contains("kalamdb_x_level 2\n"));
        assert!(text.contains("# TYPE kalamdb_y counter\nkalamdb_y_total 5\n"));
        assert!(text.ends_with("# EOF\n"));
        let samples = m.samples(&[]);
        assert!(samples.contains(&(
            "kalamdb_sql_statements_total{kind=\"select\"}".into(),
            "2".into()
        )));
    }

    #[test]
    fn process_figures_are_read() {
        let p = ProcessStats::read();
        assert!(p.rss_bytes > 0 && p.open_fds > 0, "{p:?}");
    }
}
