//! The recent log lines of this process, kept in memory for `system.server_logs`.
//!
//! [`layer`] is a `tracing` layer the binary installs beside its log output: each event
//! becomes one [`LogLine`] in a ring of the last [`KEPT_LINES`]. Logging is process-wide, so
//! the ring is too; reading it never blocks a logger for longer than a copy.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::LazyLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How many lines are kept.
pub const KEPT_LINES: usize = 2000;

/// One logged event.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When, in microseconds since the epoch.
    pub timestamp: i64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: &'static str,
    /// The thread's name (or id).
    pub thread: String,
    /// The module that logged it.
    pub target: String,
    /// Its source line, when known.
    pub line: Option<u32>,
    /// The message and its fields (`key=value`).
    pub message: String,
    /// The request being served when it was logged (the `request` span's `request_id`).
    pub request_id: Option<String>,
}

static RECENT: LazyLock<Mutex<VecDeque<LogLine>>> =
    LazyLock::new(|| Mutex::new(VecDeque::with_capacity(KEPT_LINES)));

/// The kept lines, oldest first.
pub fn recent() -> Vec<LogLine> {
    RECENT.lock().iter().cloned().collect()
}

/// The layer that keeps lines (filtered by whatever filter the subscriber applies).
pub fn layer() -> RecentLines {
    RecentLines
}

/// See [`layer`].
#[derive(Debug, Clone, Copy)]
pub struct RecentLines;

/// A `request` span's id, kept in the span's extensions.
struct RequestId(String);

impl<S> Layer<S> for RecentLines
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() != "request" {
            return;
        }
        let mut text = Text::default();
        attrs.record(&mut text);
        let request_id = text
            .0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("request_id="))
            .map(str::to_string);
        if let (Some(request_id), Some(span)) = (request_id, ctx.span(id)) {
            span.extensions_mut().insert(RequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        let request_id = ctx.event_scope(event).and_then(|scope| {
            scope
                .filter_map(|span| span.extensions().get::<RequestId>().map(|r| r.0.clone()))
                .next()
        });
        let thread = std::thread::current();
        let line = LogLine {
            timestamp: chrono::Utc::now().timestamp_micros(),
            level: meta.level().as_str(),
            thread: thread
                .name()
                .map_or_else(|| format!("{:?}", thread.id()), str::to_string),
            target: meta.target().to_string(),
            line: meta.line(),
            message: text.0,
            request_id,
        };
        let mut ring = RECENT.lock();
        if ring.len() == KEPT_LINES {
            ring.pop_front();
        }
        ring.push_back(line);
    }
}

/// The message first, then the other fields as `key=value`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_the_message_and_fields_of_recent_events() {
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(rows = 3, "flushed {}", "t1");
        });
        let last = recent().pop().expect("a line");
        assert_eq!(last.level, "WARN");
        assert_eq!(last.message, "flushed t1 rows=3");
        assert!(last.target.contains("server_logs"), "{}", last.target);
        assert!(last.line.is_some());
    }
}
