//! How results are printed: aligned Unicode tables that fit the terminal (long cells cut with
//! `…`, an expanded one-field-per-line layout when the columns cannot fit or `\x` asks), JSON
//! (an array of row objects per result, keys in column order) or CSV (a header line, then
//! rows; NULL is an empty field). NULL is `NULL` in tables, `null` in JSON.

use comfy_table::{Cell, ContentArrangement, Row, Table, presets::UTF8_FULL_CONDENSED};
use kalamdb_commons::wire::{QueryResult, SqlResponse};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned table.
    Table,
    /// JSON.
    Json,
    /// CSV.
    Csv,
}

impl Format {
    /// Parses `table`, `json` or `csv`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "table" => Some(Format::Table),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// `\x`: when tables use the expanded layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expanded {
    /// Always.
    On,
    /// Never.
    Off,
    /// When the columns do not fit the width.
    Auto,
}

/// How to print.
#[derive(Debug, Clone)]
pub struct Style {
    /// The format.
    pub format: Format,
    /// Expanded tables.
    pub expanded: Expanded,
    /// Print each statement's time.
    pub timing: bool,
    /// The width tables must fit (the terminal's, or 120 when not a terminal).
    pub width: u16,
}

/// Narrowest a column is cut to before the table switches to the expanded layout.
const MIN_COLUMN: usize = 6;

/// A cell as text (`None` for NULL).
pub fn cell_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Prints every result of `reply` to `out`.
pub fn print_reply(
    out: &mut dyn Write,
    reply: &SqlResponse,
    style: &Style,
    elapsed: Duration,
) -> std::io::Result<()> {
    for r in &reply.results {
        print_result(out, r, style)?;
    }
    if style.timing && style.format == Format::Table {
        writeln!(
            out,
            "Time: {:.3} ms (server {:.3} ms)",
            elapsed.as_secs_f64() * 1000.0,
            reply.took
        )?;
    }
    Ok(())
}

/// Prints one statement's result.
pub fn print_result(out: &mut dyn Write, r: &QueryResult, style: &Style) -> std::io::Result<()> {
    let (Some(schema), Some(rows)) = (&r.schema, &r.rows) else {
        return match style.format {
            Format::Json => writeln!(
                out,
                "{{\"message\":{},\"row_count\":{}}}",
                Value::String(r.message.clone().unwrap_or_default()),
                r.row_count
            ),
            Format::Csv => Ok(()),
            Format::Table => writeln!(out, "{}", r.message.as_deref().unwrap_or("OK")),
        };
    };
    let names: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
    match style.format {
        Format::Json => print_json(out, &names, rows),
        Format::Csv => print_csv(out, &names, rows),
        Format::Table => {
            print_table(out, &names, rows, style)?;
            let n = rows.len();
            writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })
        }
    }
}

/// One row as a JSON object with keys in column order.
pub fn row_object(names: &[&str], row: &[Value]) -> String {
    let fields: Vec<String> = names
        .iter()
        .zip(row)
        .map(|(n, v)| format!("{}:{v}", Value::String((*n).to_string())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn print_json(out: &mut dyn Write, names: &[&str], rows: &[Vec<Value>]) -> std::io::Result<()> {
    writeln!(out, "[")?;
    for (i, row) in rows.iter().enumerate() {
        let comma = if i + 1 < rows.len() { "," } else { "" };
        writeln!(out, "  {}{comma}", row_object(names, row))?;
    }
    writeln!(out, "]")
}

fn print_csv(out: &mut dyn Write, names: &[&str], rows: &[Vec<Value>]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let csv_err = |e: csv::Error| std::io::Error::other(e.to_string());
    w.write_record(names).map_err(csv_err)?;
    for row in rows {
        w.write_record(row.iter().map(|v| cell_text(v).unwrap_or_default()))
            .map_err(csv_err)?;
    }
    w.flush()
}

/// Prints `rows` as a table fitted to `style.width`, or expanded.
pub fn print_table(
    out: &mut dyn Write,
    names: &[&str],
    rows: &[Vec<Value>],
    style: &Style,
) -> std::io::Result<()> {
    let width = usize::from(style.width.max(20));
    // Each column needs its text plus 3 characters of border and padding.
    let fits = names.len() * (MIN_COLUMN + 3) < width;
    let expanded = match style.expanded {
        Expanded::On => true,
        Expanded::Off => false,
        Expanded::Auto => !fits,
    };
    if expanded {
        return print_expanded(out, names, rows, width);
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(style.width.max(20))
        .set_truncation_indicator("…")
        .set_header(names.iter().map(|n| Cell::new(*n)));
    for row in rows {
        let mut r = Row::from(
            row.iter()
                .map(|v| Cell::new(cell_text(v).unwrap_or_else(|| "NULL".into()))),
        );
        r.max_height(1);
        table.add_row(r);
    }
    writeln!(out, "{table}")
}

fn print_expanded(
    out: &mut dyn Write,
    names: &[&str],
    rows: &[Vec<Value>],
    width: usize,
) -> std::io::Result<()> {
    let label = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let room = width.saturating_sub(label + 3).max(10);
    for (i, row) in rows.iter().enumerate() {
        let title = format!("-[ RECORD {} ]", i + 1);
        let pad = width.saturating_sub(title.chars().count()).min(40);
        writeln!(out, "{title}{}", "-".repeat(pad))?;
        for (n, v) in names.iter().zip(row) {
            let text = cell_text(v).unwrap_or_else(|| "NULL".into());
            writeln!(out, "{n:<label$} | {}", cut(&text, room))?;
        }
    }
    Ok(())
}

/// `text` on one line, at most `room` characters (`…` when cut).
pub fn cut(text: &str, room: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= room {
        return one_line;
    }
    let mut s: String = one_line.chars().take(room.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn style(format: Format, width: u16) -> Style {
        Style {
            format,
            expanded: Expanded::Auto,
            timing: false,
            width,
        }
    }

    fn render(names: &[&str], rows: &[Vec<Value>], s: &Style) -> String {
        let mut out = Vec::new();
        print_table(&mut out, names, rows, s).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tables_fit_the_width_and_cut_long_cells() {
        let long = "x".repeat(500);
        let rows = vec![vec![json!("1"), json!(long), Value::Null]];
        let text = render(&["id", "body", "note"], &rows, &style(Format::Table, 60));
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
        assert!(text.contains('…') && text.contains("NULL"), "{text}");
    }

    #[test]
    fn too_many_columns_switch_to_the_expanded_layout() {
        let names: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let rows = vec![(0..30).map(|i| json!(i)).collect()];
        let text = render(&names, &rows, &style(Format::Table, 80));
        assert!(text.starts_with("-[ RECORD 1 ]"), "{text}");
        assert!(text.contains("c29 | 29"), "{text}");
    }

    #[test]
    fn json_keeps_column_order_and_csv_leaves_null_empty() {
        let rows = vec![vec![json!("b"), Value::Null, json!(2)]];
        let mut out = Vec::new();
        print_json(&mut out, &["z", "a", "m"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[\n  {\"z\":\"b\",\"a\":null,\"m\":2}\n]\n"
        );
        let mut out = Vec::new();
        print_csv(&mut out, &["z", "a", "m"], &rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "z,a,m\nb,,2\n");
    }
}
