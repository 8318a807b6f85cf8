//! Server metrics: counters and histograms the request paths update ([`Metrics`]), plus
//! [`Figure`]s read when scraped (storage engine, segment cache, live queries, transactions,
//! process: `providers::system_ops` reads them), rendered in the Prometheus/OpenMetrics text format for
//! `GET /metrics` ([`Metrics::render`]) and listed by `system.stats` ([`Metrics::samples`]).
//!
//! Every name starts with `kalamdb_`. Labels have bounded values: routes are the router's
//! patterns, statement and job kinds are fixed words, never user input.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Identifies cached handles: the metrics' id, the route string's address and length, the
/// method string's, the status.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct HandleKey {
    metrics: u64,
    route: (usize, usize),
    method: (usize, usize),
    status: u16,
}

/// Ids of [`Metrics`] values: cache keys never outlive them into a new one at the same address.
static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(1);

/// A histogram whose observations take no lock (atomic buckets), encoded as Prometheus'
/// classic histogram. (The client crate's own takes a mutex per observation, which many
/// threads observing the same route contend on.)
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    upper: Vec<f64>,
    counts: Vec<AtomicU64>,
    /// f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with these bucket upper bounds (`+Inf` is added).
    pub fn new(buckets: impl Iterator<Item = f64>) -> Self {
        let mut upper: Vec<f64> = buckets.collect();
        upper.push(f64::INFINITY);
        let counts = upper.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            inner: Arc::new(HistogramInner {
                upper,
                counts,
                sum: AtomicU64::new(0f64.to_bits()),
                count: AtomicU64::new(0),
            }),
        }
    }

    /// Records `v`.
    pub fn observe(&self, v: f64) {
        let h = &self.inner;
        let i = h
            .upper
            .iter()
            .position(|u| v <= *u)
            .unwrap_or(h.upper.len() - 1);
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let _ = h
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.inner;
        let buckets: Vec<(f64, u64)> = h
            .upper
            .iter()
            .zip(&h.counts)
            .map(|(u, c)| (*u, c.load(Ordering::Relaxed)))
            .collect();
        // The count from the buckets read, so `+Inf` and `_count` always agree.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(
            f64::from_bits(h.sum.load(Ordering::Relaxed)),
            count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The kinds SQL statements are counted by.
pub const STATEMENT_KINDS: [&str; 7] = [
    "select",
    "insert",
    "update",
    "delete",
    "ddl",
    "transaction",
    "failed",
];

/// The server's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    /// Unique per value (see [`HandleKey`]).
    id: u64,
    registry: Registry,
    /// HTTP requests answered.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency by route (`kind` = route pattern), seconds.
    pub http_seconds: Family<KindLabel, Histogram>,
    /// SQL statements run, by kind ([`STATEMENT_KINDS`]).
    pub statements: Family<KindLabel, Counter>,
    statement_counters: Vec<Counter>,
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
        let statements = Family::<KindLabel, Counter>::default();
        let statement_counters = STATEMENT_KINDS
            .iter()
            .map(|k| {
                statements
                    .get_or_create(&KindLabel {
                        kind: k.to_string(),
                    })
                    .clone()
            })
            .collect();
        let m = Self {
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            registry: Registry::default(),
            http_requests: Family::default(),
            http_seconds,
            statements,
            statement_counters,
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

    /// Counts one statement of `kind` (one of [`STATEMENT_KINDS`]: their counters are made up
    /// front, so counting takes no lock).
    pub fn statement(&self, kind: &str) {
        match STATEMENT_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.statement_counters[i].inc(),
            None => self
                .statements
                .get_or_create(&KindLabel { kind: kind.into() })
                .inc(),
        };
    }

    /// Counts one HTTP request to `route` answered with `status` after `seconds`. The
    /// handles of a (route, method, status) are cached per thread, so the hot path takes no
    /// lock and allocates nothing (`route` is the router's own string: its address is stable).
    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        thread_local! {
            static HANDLES: RefCell<HashMap<HandleKey, (Counter, Histogram)>> =
                RefCell::new(HashMap::new());
        }
        let key = HandleKey {
            metrics: self.id,
            route: (route.as_ptr() as usize, route.len()),
            method: (method.as_ptr() as usize, method.len()),
            status,
        };
        HANDLES.with(|cache| {
            let mut cache = cache.borrow_mut();
            // Bounded, should a caller's strings not be stable after all.
            if cache.len() >= 1024 {
                cache.clear();
            }
            let (count, seconds_of) = cache.entry(key).or_insert_with(|| {
                let count = self
                    .http_requests
                    .get_or_create(&HttpLabels {
                        route: route.into(),
                        method: method.into(),
                        status,
                    })
                    .clone();
                let hist = self
                    .http_seconds
                    .get_or_create(&KindLabel { kind: route.into() })
                    .clone();
                (count, hist)
            });
            count.inc();
            seconds_of.observe(seconds);
        });
    }

    /// Counts a finished job (`status`: completed, failed or cancelled).
    pub fn job(&self, kind: &str, status: &str, seconds: f64) {
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
