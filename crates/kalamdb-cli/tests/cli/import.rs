//! `--import` of a 1,000,000-row CSV and Parquet file: every good row arrives, progress is
//! shown, rejected rows are reported by line; `\export`'s writer round-trips through it.

use crate::{Server, root, run, text};
use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::io::Write;
use std::sync::Arc;

const ROWS: i64 = 1_000_000;

async fn count(s: &Server, table: &str) -> String {
    let r = s
        .sql(&format!("SELECT count(*), sum(id) FROM {table}"))
        .await;
    format!(
        "{} {}",
        r["results"][0]["rows"][0][0].as_str().unwrap(),
        r["results"][0]["rows"][0][1].as_str().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_of_csv_and_parquet_arrive_and_bad_rows_are_reported() {
    let s = Server::start().await;
    s.sql(
        "CREATE NAMESPACE app; \
         CREATE SHARED TABLE app.csv_rows (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE); \
         CREATE SHARED TABLE app.pq_rows (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();

    // CSV: line 1 is the header, row i is on line i + 2; two rows are bad.
    let csv = dir.path().join("rows.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
    writeln!(f, "id,name,score").unwrap();
    for i in 0..ROWS {
        match i {
            999 => writeln!(f, "{i},\"bad, score\",oops").unwrap(),
            500_000 => writeln!(f, "x{i},name {i},1").unwrap(),
            _ => writeln!(f, "{i},\"name, {i}\",{}.5", i % 100).unwrap(),
        }
    }
    f.flush().unwrap();
    drop(f);
    let out = run({
        let mut c = root(home.path(), &s.url);
        c.arg("--import").arg("app.csv_rows").arg(&csv);
        c
    })
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("Imported 999998 row(s) into app.csv_rows"),
        "{stdout}"
    );
    assert!(stdout.contains("2 row(s) rejected:\n  line 1001: 'oops' is not a number\n  line 500002: 'x500000' is not an integer"), "{stdout}");
    assert!(stderr.contains("progress: "), "{stderr}");
    let sum_good = ROWS * (ROWS - 1) / 2 - 999 - 500_000;
    assert_eq!(
        count(&s, "app.csv_rows").await,
        format!("999998 {sum_good}")
    );

    // Parquet: every row arrives.
    let pq = dir.path().join("rows.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let file = std::fs::File::create(&pq).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
    for chunk in 0..10 {
        let ids: Vec<i64> = (chunk * 100_000..(chunk + 1) * 100_000).collect();
        let names: Vec<Option<String>> = ids
            .iter()
            .map(|i| (i % 7 != 0).then(|| format!("it's {i}")))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| *i as f64 / 4.0),
                )),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
    }
    w.close().unwrap();
    let out = run({
        let mut c = root(home.path(), &s.url);
        c.arg("--import").arg("app.pq_rows").arg(&pq);
        c
    })
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).starts_with("Imported 1000000 row(s) into app.pq_rows"));
    assert_eq!(
        count(&s, "app.pq_rows").await,
        format!("1000000 {}", ROWS * (ROWS - 1) / 2)
    );
    let r = s
        .sql("SELECT name, score FROM app.pq_rows WHERE id IN (7, 9) ORDER BY id")
        .await;
    assert_eq!(
        r["results"][0]["rows"],
        serde_json::json!([[null, 1.75], ["it's 9", 2.25]])
    );
}
