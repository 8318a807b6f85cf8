//! `\import` / `--import` and `\export`: files in and out of tables.
//!
//! Import reads CSV (a header line naming the columns), JSON Lines (one object per line) or
//! Parquet, by extension; each record becomes a row literal typed by the table's columns
//! (`DESCRIBE TABLE`), and rows go in multi-VALUES `INSERT`s of [`BATCH_ROWS`], a few requests in
//! flight at once. A record that cannot be a row (a bad number, an unknown field) is rejected
//! before sending; a batch the server refuses is sent again row by row, so every rejected row is
//! reported with its line (CSV/JSON Lines) or row number (Parquet) and the server's reason,
//! and every other row arrives. Export writes a query's rows as CSV, JSON Lines or Parquet.

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::render::{cell_text, row_object};
use crate::runner::Runner;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use kalamdb_commons::KalamDataType;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most rows per `INSERT` request.
pub const BATCH_ROWS: usize = 1000;
/// Most bytes of row literals per `INSERT` request (under the server's 1 MiB `max_sql_bytes`).
const BATCH_BYTES: usize = 512 * 1024;
/// `INSERT` requests in flight at once.
const IN_FLIGHT: usize = 3;

/// How a column's values are written as SQL literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    Boolean,
    Text,
}

impl Kind {
    fn of(sql_type: &str) -> Self {
        let t = sql_type.to_ascii_uppercase();
        match t.split('(').next().unwrap_or("") {
            "SMALLINT" | "INT" | "INTEGER" | "BIGINT" | "TINYINT" => Kind::Integer,
            "FLOAT" | "DOUBLE" | "REAL" | "DECIMAL" | "NUMERIC" => Kind::Number,
            "BOOLEAN" | "BOOL" => Kind::Boolean,
            _ => Kind::Text,
        }
    }

    /// The literal of `text` (not NULL) for a column of this kind.
    fn literal(self, text: &str) -> std::result::Result<String, String> {
        let t = text.trim();
        match self {
            Kind::Integer => t
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| format!("'{text}' is not an integer")),
            Kind::Number => match t.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(t.to_string()),
                _ => Err(format!("'{text}' is not a number")),
            },
            Kind::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" => Ok("TRUE".into()),
                "false" | "f" | "0" | "no" => Ok("FALSE".into()),
                _ => Err(format!("'{text}' is not a boolean")),
            },
            Kind::Text => Ok(quote(text)),
        }
    }
}

/// `text` as a SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The result of an import.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Rows inserted.
    pub rows: u64,
    /// Rejected rows: (line or row number, reason).
    pub rejected: Vec<(u64, String)>,
    /// How long it took.
    pub elapsed: Duration,
}

impl ImportReport {
    /// The summary a user sees.
    pub fn summary(&self, table: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let mut s = format!(
            "Imported {} row(s) into {table} in {secs:.2} s ({:.0} rows/s)",
            self.rows,
            self.rows as f64 / secs
        );
        if !self.rejected.is_empty() {
            s.push_str(&format!("; {} row(s) rejected:", self.rejected.len()));
            for (line, why) in self.rejected.iter().take(20) {
                s.push_str(&format!("\n  line {line}: {why}"));
            }
            if self.rejected.len() > 20 {
                s.push_str(&format!("\n  … and {} more", self.rejected.len() - 20));
            }
        }
        s
    }
}

/// One record of the file: its line (or row) number and its cells by file column (None:
/// NULL), or why it cannot be a row.
type Record = (u64, std::result::Result<Vec<Option<String>>, String>);

/// The table's columns: (name, kind), in table order.
async fn columns(client: &mut Client, table: &str) -> Result<Vec<(String, Kind)>> {
    let reply = client.sql(&format!("DESCRIBE TABLE {table}")).await?;
    let rows = reply
        .results
        .first()
        .and_then(|r| r.rows.clone())
        .unwrap_or_default();
    Ok(rows
        .iter()
        .filter_map(|r| {
            let name = r.first()?.as_str()?.to_string();
            let ty = r.get(3)?.as_str()?;
            Some((name, Kind::of(ty)))
        })
        .collect())
}

/// Imports `path` into `table` (as `runner`'s `\\as` user when set); shows progress on a
/// terminal (a line every second otherwise).
pub async fn import(runner: &mut Runner, table: &str, path: &Path) -> Result<ImportReport> {
    let started = Instant::now();
    let client = &mut runner.client;
    let table_cols = columns(client, table).await?;
    let (names, records, total): Source = match extension(path).as_str() {
        "csv" => csv_records(path)?,
        "jsonl" | "ndjson" | "json" => jsonl_records(path, &table_cols)?,
        "parquet" => parquet_records(path)?,
        other => {
            return Err(CliError::Usage(format!(
                "cannot import .{other} files: use .csv, .jsonl or .parquet"
            )));
        }
    };
    let kinds: Vec<Kind> = names
        .iter()
        .map(|n| {
            table_cols
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(n))
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{table} has no column '{n}' (from {})",
                        path.display()
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let insert = Insert {
        head: format!("INSERT INTO {table} ({}) VALUES ", names.join(", ")),
        as_user: runner.as_user.clone(),
    };
    let progress = Progress::new(total);
    let mut report = ImportReport::default();
    // Records become batches of literal rows; rejected records are reported at once.
    let mut pending: Vec<(u64, String)> = Vec::with_capacity(BATCH_ROWS);
    let mut records = records.peekable();
    // Batches go out with a snapshot of the session (outside any open transaction); one whose
    // token expired waits until the others are back, the session is renewed once, and it goes
    // again.
    let mut snapshot = client.clone();
    snapshot.transaction = None;

    let mut expired: Vec<Vec<(u64, String)>> = Vec::new();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let (mut sent_rows, mut done) = (0u64, false);
    loop {
        if in_flight.is_empty() && !expired.is_empty() {
            client.refresh().await?;
            snapshot.session = client.session.clone();
        }
        while in_flight.len() < IN_FLIGHT {
            let batch = match expired.pop() {
                Some(b) => b,
                None if done => break,
                None => match next_batch(&mut records, &kinds, &mut pending, &mut report) {
                    Some(b) => b,
                    None => {
                        done = true;
                        break;
                    }
                },
            };
            let (c, sql) = (snapshot.clone(), insert.sql(&batch));
            in_flight.push(async move { (c.sql_once(&sql).await, batch) });
        }
        let Some((outcome, batch)) = in_flight.next().await else {
            break;
        };
        match outcome {
            Ok(_) => report.rows += batch.len() as u64,
            Err(CliError::Server { code, .. }) if code == "TOKEN_EXPIRED" => {
                expired.push(batch);
                continue;
            }
            Err(CliError::Server { .. }) => {
                refused(&snapshot, &insert, batch.clone(), &mut report).await?
            }
            Err(e) => {
                eprintln!("{} row(s) were imported before this error", report.rows);
                return Err(e);
            }
        }
        sent_rows += batch.len() as u64;
        progress.update(sent_rows, batch.last().map_or(0, |(l, _)| *l));
    }
    progress.finish();
    report.rejected.sort_by_key(|(l, _)| *l);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The `INSERT` an import sends.
struct Insert {
    /// `INSERT INTO t (cols) VALUES `.
    head: String,
    /// `\\as`: sent as `EXECUTE AS USER` this user.
    as_user: Option<String>,
}

impl Insert {
    fn sql(&self, batch: &[(u64, String)]) -> String {
        let sql = batch_sql(&self.head, batch);
        match &self.as_user {
            Some(u) => format!("EXECUTE AS USER '{}' ({sql})", u.replace('\'', "''")),
            None => sql,
        }
    }
}

/// A batch the server refused: halves sent again until every row that can go in went in and
/// each refused row is reported with the server's reason (a bad row costs about log2(batch)
/// requests, not one per row).
async fn refused(
    client: &Client,
    insert: &Insert,
    batch: Vec<(u64, String)>,
    report: &mut ImportReport,
) -> Result<()> {
    let halves = |mut part: Vec<(u64, String)>| {
        let second = part.split_off(part.len() / 2);
        [second, part]
    };
    let mut todo: Vec<Vec<(u64, String)>> = halves(batch).into_iter().collect();
    while let Some(part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        match client.sql_once(&insert.sql(&part)).await {
            Ok(_) => report.rows += part.len() as u64,
            Err(CliError::Server { message, .. }) if part.len() == 1 => report
                .rejected
                .extend(part.first().map(|(l, _)| (*l, message))),
            Err(CliError::Server { .. }) => todo.extend(halves(part)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The lower-case extension of `path`.
fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn batch_sql(head: &str, batch: &[(u64, String)]) -> String {
    let mut sql = String::with_capacity(head.len() + batch.len() * 64);
    sql.push_str(head);
    for (i, (_, row)) in batch.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql
}

/// The next batch of up to [`BATCH_ROWS`] row literals; `None` at the end of the file.
fn next_batch(
    records: &mut std::iter::Peekable<Box<dyn Iterator<Item = Record> + Send>>,
    kinds: &[Kind],
    pending: &mut Vec<(u64, String)>,
    report: &mut ImportReport,
) -> Option<Vec<(u64, String)>> {
    let mut bytes = 0;
    for (line, cells) in records.by_ref() {
        let row = cells.and_then(|cells| {
            if cells.len() != kinds.len() {
                return Err(format!(
                    "{} field(s), expected {}",
                    cells.len(),
                    kinds.len()
                ));
            }
            let lits: std::result::Result<Vec<String>, String> = cells
                .iter()
                .zip(kinds)
                .map(|(c, k)| c.as_deref().map_or(Ok("NULL".into()), |t| k.literal(t)))
                .collect();
            Ok(format!("({})", lits?.join(", ")))
        });
        match row {
            Ok(r) => {
                bytes += r.len();
                pending.push((line, r));
            }
            Err(why) => report.rejected.push((line, why)),
        }
        if pending.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
            break;
        }
    }
    (!pending.is_empty()).then(|| std::mem::take(pending))
}

/// Progress of an import: a bar on a terminal, a line a second otherwise.
struct Progress {
    bar: ProgressBar,
    plain: bool,
    started: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} [{elapsed_precise}, ETA {eta}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        Self {
            bar,
            plain,
            started: Instant::now(),
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    /// `rows` sent, up to line (or row) `at` of the file.
    fn update(&self, rows: u64, at: u64) {
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(1e-6);
        self.bar.set_position(at);
        self.bar
            .set_message(format!("lines, {rows} rows, {rate:.0} rows/s"));
        if self.plain && self.last_line.get().elapsed() >= Duration::from_secs(1) {
            self.last_line.set(Instant::now());
            eprintln!("progress: {rows} rows sent ({rate:.0} rows/s)");
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| CliError::file(path, e))
}

/// Counts lines (the progress bar's length for text files).
fn count_lines(path: &Path) -> Result<u64> {
    let reader = std::io::BufReader::with_capacity(1 << 20, open(path)?);
    Ok(reader.split(b'\n').count() as u64)
}

type Source = (Vec<String>, Box<dyn Iterator<Item = Record> + Send>, u64);

fn csv_records(path: &Path) -> Result<Source> {
    let total = count_lines(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(std::io::BufReader::with_capacity(1 << 20, open(path)?));
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| CliError::file(path, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let records = reader.into_records().map(|r| match r {
        Ok(rec) => {
            let line = rec.position().map_or(0, |p| p.line());
            // An empty field is NULL (CSV cannot tell `""` from nothing).
            let cells = rec
                .iter()
                .map(|f| (!f.is_empty()).then(|| f.to_string()))
                .collect();
            (line, Ok(cells))
        }
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            (line, Err(e.to_string()))
        }
    });
    Ok((names, Box::new(records), total))
}

fn jsonl_records(path: &Path, table_cols: &[(String, Kind)]) -> Result<Source> {
    let total = count_lines(path)?;
    // The columns are the first object's keys (in table order): a DEFAULT fills the others,
    // and a later line without one of them sends NULL for it.
    let first = std::io::BufReader::new(open(path)?)
        .lines()
        .map_while(|l| l.ok())
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Map<String, Value>>(&l).ok())
        .ok_or_else(|| CliError::file(path, "the first line is not a JSON object"))?;
    let names: Vec<String> = table_cols
        .iter()
        .map(|(n, _)| n)
        .filter(|n| first.keys().any(|k| k.eq_ignore_ascii_case(n)))
        .cloned()
        .collect();
    if let Some(k) = first
        .keys()
        .find(|k| !names.iter().any(|n| n.eq_ignore_ascii_case(k)))
    {
        return Err(CliError::Usage(format!(
            "the table has no column '{k}' (from {})",
            path.display()
        )));
    }
    let reader = std::io::BufReader::with_capacity(1 << 20, open(path)?);
    let cols = names.clone();
    let records = reader
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(move |(i, line)| {
            let n = i as u64 + 1;
            let cells = line.map_err(|e| e.to_string()).and_then(|l| {
                let obj: serde_json::Map<String, Value> =
                    serde_json::from_str(&l).map_err(|e| format!("not a JSON object: {e}"))?;
                if let Some(k) = obj
                    .keys()
                    .find(|k| !cols.iter().any(|c| c.eq_ignore_ascii_case(k)))
                {
                    return Err(format!("'{k}' is not a column of the first line"));
                }
                Ok(cols
                    .iter()
                    .map(|c| {
                        obj.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(c))
                            .and_then(|(_, v)| cell_text(v))
                    })
                    .collect())
            });
            (n, cells)
        });
    Ok((names, Box::new(records), total))
}

fn parquet_records(path: &Path) -> Result<Source> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
        .map_err(|e| CliError::file(path, e))?;
    let total = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| CliError::file(path, e))?;
    let mut row = 0u64;
    let records = reader.flat_map(move |batch| {
        let out: Vec<Record> = match batch {
            Err(e) => {
                row += 1;
                vec![(row, Err(e.to_string()))]
            }
            Ok(batch) => {
                let options = FormatOptions::default();
                let formatters: std::result::Result<Vec<_>, _> = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect();
                match formatters {
                    Err(e) => vec![(row + 1, Err(e.to_string()))],
                    Ok(f) => (0..batch.num_rows())
                        .map(|i| {
                            row += 1;
                            let cells = batch
                                .columns()
                                .iter()
                                .zip(&f)
                                .map(|(c, f)| c.is_valid(i).then(|| f.value(i).to_string()))
                                .collect();
                            (row, Ok(cells))
                        })
                        .collect(),
                }
            }
        };
        out
    });
    Ok((names, Box::new(records), total))
}

/// Writes the rows of `sql` to `path` (CSV, JSON Lines or Parquet, by extension); returns how
/// many.
pub async fn export(runner: &mut Runner, sql: &str, path: &Path) -> Result<usize> {
    let ext = extension(path);
    if !matches!(
        ext.as_str(),
        "csv" | "jsonl" | "ndjson" | "json" | "parquet"
    ) {
        return Err(CliError::Usage(format!(
            "cannot export to .{ext} files: use .csv, .jsonl or .parquet"
        )));
    }
    let sql = match &runner.as_user {
        Some(u) => format!("EXECUTE AS USER '{}' ({sql})", u.replace('\'', "''")),
        None => sql.to_string(),
    };
    let reply = runner.client.sql(&sql).await?;
    let Some(result) = reply.results.into_iter().last() else {
        return Ok(0);
    };
    let (Some(schema), Some(rows)) = (result.schema, result.rows) else {
        return Err(CliError::Usage(
            "\\export needs a query that returns rows".into(),
        ));
    };
    let names: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
    let file = std::fs::File::create(path).map_err(|e| CliError::file(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let io = |e: std::io::Error| CliError::file(path, e);
    match ext.as_str() {
        "csv" => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(&names)
                .map_err(|e| CliError::file(path, e))?;
            for r in &rows {
                w.write_record(r.iter().map(|v| cell_text(v).unwrap_or_default()))
                    .map_err(|e| CliError::file(path, e))?;
            }
            w.flush().map_err(io)?;
        }
        "jsonl" | "ndjson" | "json" => {
            for r in &rows {
                writeln!(out, "{}", row_object(&names, r)).map_err(io)?;
            }
        }
        "parquet" => {
            let types: Vec<KalamDataType> = schema.iter().map(|f| f.data_type).collect();
            let batch = arrow_batch(&names, &types, &rows)
                .map_err(|e| CliError::Other(format!("cannot build the Parquet rows: {e}")))?;
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props))
                .map_err(|e| CliError::file(path, e))?;
            w.write(&batch).map_err(|e| CliError::file(path, e))?;
            w.close().map_err(|e| CliError::file(path, e))?;
        }
        other => {
            return Err(CliError::Usage(format!(
                "cannot export to .{other} files: use .csv, .jsonl or .parquet"
            )));
        }
    }
    out.flush().map_err(io)?;
    Ok(rows.len())
}

/// Result rows as one Arrow batch: integers, floats and booleans typed, everything else text.
fn arrow_batch(
    names: &[&str],
    types: &[KalamDataType],
    rows: &[Vec<Value>],
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, (name, ty)) in names.iter().zip(types).enumerate() {
        let cells = rows.iter().map(|r| r.get(i).unwrap_or(&Value::Null));
        let (dt, array): (DataType, ArrayRef) = match Kind::of(&ty.sql_name()) {
            Kind::Integer => (
                DataType::Int64,
                Arc::new(
                    cells
                        .map(|v| cell_text(v).and_then(|t| t.parse::<i64>().ok()))
                        .collect::<Int64Array>(),
                ),
            ),
            Kind::Number if !matches!(ty, KalamDataType::Decimal { .. }) => (
                DataType::Float64,
                Arc::new(
                    cells
                        .map(|v| cell_text(v).and_then(|t| t.parse::<f64>().ok()))
                        .collect::<Float64Array>(),
                ),
            ),
            Kind::Boolean => (
                DataType::Boolean,
                Arc::new(cells.map(Value::as_bool).collect::<BooleanArray>()),
            ),
            _ => (
                DataType::Utf8,
                Arc::new(cells.map(cell_text).collect::<StringArray>()),
            ),
        };
        fields.push(Field::new(*name, dt, true));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_follow_the_column_kind() {
        assert_eq!(Kind::of("BIGINT").literal(" 42 "), Ok("42".into()));
        assert!(Kind::of("INT").literal("4x").is_err());
        assert_eq!(Kind::of("DECIMAL(10,2)").literal("1.50"), Ok("1.50".into()));
        assert!(Kind::of("DOUBLE").literal("NaN").is_err());
        assert_eq!(Kind::of("BOOLEAN").literal("t"), Ok("TRUE".into()));
        assert_eq!(Kind::of("TEXT").literal("it's"), Ok("'it''s'".into()));
        assert_eq!(
            Kind::of("TIMESTAMP").literal("2026-01-01"),
            Ok("'2026-01-01'".into())
        );
    }
}
