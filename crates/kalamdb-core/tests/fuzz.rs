//! Fuzzing harness over the engine's entry points: mutated SQL through the executor (our
//! statement splitter and parser, the expression limits, DataFusion planning and execution of
//! what parses) as a plain user, and mutated JSON through the request and WebSocket message
//! decoders. Nothing may panic, crash the process or run past the query timeout.
//!
//! The seed corpus lives in `tests/fuzz/*.txt`. CI runs a fixed, deterministic number of
//! cases; a long run takes `KALAMDB_FUZZ_CASES=<n>` and `KALAMDB_FUZZ_SEED=<u64>` (see
//! docs/fuzzing.md). A failing input is printed, shrunk by proptest.

use kalamdb_commons::{ErrorCode, Role, UserId};
use kalamdb_core::AppContext;
use kalamdb_core::auth::Identity;
use kalamdb_core::config::Config;
use kalamdb_core::sql::executor::SqlExecutor;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use std::sync::Arc;

/// Pieces spliced into seeds: syntax, edge values, and the shapes that once crashed servers.
const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "'",
    "\"",
    ",",
    ";",
    " ",
    "--",
    "/*",
    "*/",
    "$1",
    "$99",
    "SELECT",
    "FROM",
    "WHERE",
    "+",
    "-",
    "*",
    "/",
    "%",
    "||",
    " OR ",
    " AND ",
    " NOT ",
    "=",
    "<>",
    "NULL",
    "TRUE",
    "1e309",
    "-9223372036854775808",
    "9223372036854775807",
    "0.0",
    "'NaN'",
    "CAST(",
    " AS DOUBLE)",
    " AS BIGINT)",
    "system.users",
    "app.notes",
    "information_schema.tables",
    "generate_series(1, 1000000000)",
    "repeat('a', 1000000000)",
    "lpad('a', 2000000000)",
    "array_repeat(1, 1000000000)",
    " UNION ALL SELECT 1",
    "EXECUTE AS USER 'root' (",
    "CURRENT_USER()",
    "SNOWFLAKE_ID()",
    "\u{0}",
    "é",
    "🦀",
    "[",
    "]",
    "{",
    "}",
    "::",
    "->",
];

/// One edit of a seed.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Chain(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..FRAGMENTS.len()).prop_map(|(at, f)| Edit::Insert(at, f)),
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        (0..FRAGMENTS.len(), 2usize..3000).prop_map(|(f, n)| Edit::Chain(f, n)),
    ]
}

/// Applies `edits` to `seed`, at character boundaries.
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for e in edits {
        let at = |pos: usize, len: usize| if len == 0 { 0 } else { pos % (len + 1) };
        match *e {
            Edit::Insert(pos, f) => {
                let i = at(pos, chars.len());
                chars.splice(i..i, FRAGMENTS[f].chars());
            }
            Edit::Delete(pos, n) => {
                let i = at(pos, chars.len());
                let end = (i + n).min(chars.len());
                chars.drain(i..end);
            }
            Edit::Duplicate(pos, n) => {
                let i = at(pos, chars.len());
                let end = (i + n).min(chars.len());
                let piece: Vec<char> = chars[i..end].to_vec();
                chars.splice(end..end, piece);
            }
            // A long flat chain: `1+1+…` with the fragment as operator.
            Edit::Chain(f, n) => {
                let chain = vec!["1"; n].join(FRAGMENTS[f]);
                chars.extend(chain.chars());
            }
        }
    }
    chars.into_iter().collect()
}

fn corpus(name: &str) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("KALAMDB_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let config = RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let seed: u64 = std::env::var("KALAMDB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b61_6c61_6d64_6221);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

#[test]
fn mutated_sql_never_panics_or_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_path = dir.path().to_string_lossy().into_owned();
    config.auth.root_password = "root-pass-123".into();
    config.auth.bcrypt_cost = 4;
    config.query.timeout_secs = 10;
    config.query.memory_limit_mb = 256;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 * 1024 * 1024)
        .enable_all()
        .build()
        .unwrap();
    let app: Arc<AppContext> = rt.block_on(kalamdb_core::engine::open(config)).unwrap();
    let executor = SqlExecutor::new(Arc::clone(&app), "ws://localhost/v1/ws");
    let root = Identity {
        user_id: UserId::new("root"),
        role: Role::System,
    };
    let setup = "CREATE NAMESPACE app; \
                 CREATE USER TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT, n BIGINT); \
                 INSERT INTO app.notes VALUES (1, 'a', 1), (2, 'b', NULL)";
    rt.block_on(executor.execute(&root, None, setup, None, None))
        .unwrap();
    let fuzzer = Identity {
        user_id: UserId::new("fuzzer"),
        role: Role::User,
    };
    let seeds = corpus("sql.txt");
    let strategy = (0..seeds.len(), prop::collection::vec(edit(), 0..5));
    runner(256)
        .run(&strategy, |(seed, edits)| {
            let sql = mutate(&seeds[seed], &edits);
            let params = Some(vec![serde_json::json!(1)]);
            let run = executor.execute(&fuzzer, None, &sql, params, None);
            if let Err(e) = rt.block_on(run) {
                // A panic caught on the query runtime becomes this internal error.
                prop_assert!(
                    !(e.code == ErrorCode::InternalError && e.message.contains("unexpectedly")),
                    "panicked on {sql:?}"
                );
                prop_assert!(e.code != ErrorCode::QueryTimeout, "ran away on {sql:?}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_json_bodies_decode_or_fail_cleanly() {
    let seeds = corpus("json.txt");
    let strategy = (
        0..seeds.len(),
        prop::collection::vec(edit(), 0..6),
        prop::collection::vec(any::<u8>(), 0..16),
    );
    runner(5000)
        .run(&strategy, |(seed, edits, noise)| {
            let mut text = mutate(&seeds[seed], &edits).into_bytes();
            let at = if text.is_empty() {
                0
            } else {
                noise.len() % text.len()
            };
            text.splice(at..at, noise);
            let _ = serde_json::from_slice::<kalamdb_commons::wire::SqlRequest>(&text);
            let _ = serde_json::from_slice::<kalamdb_commons::ws::ClientMessage>(&text);
            Ok(())
        })
        .unwrap();
}
