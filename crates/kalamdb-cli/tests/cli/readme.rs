//! The README's tour, run as written: every `kalam` line of its shell block in order (with a
//! fresh home and the test server's URL), and the last one's output equal to the block the
//! README shows.

use crate::{Server, kalam, run, text};

/// Splits a shell line into words: `"…"` and `'…'` quote (no escapes), spaces separate.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let tour = readme
        .split("<!-- tour:start -->")
        .nth(1)
        .and_then(|t| t.split("<!-- tour:end -->").next())
        .expect("the README marks its tour");
    let commands: Vec<Vec<String>> = tour
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("kalam "))
        .map(words)
        .collect();
    let expected = tour
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    assert!(commands.len() >= 5, "{commands:?}");

    let s = Server::start().await;
    let home = tempfile::tempdir().unwrap();
    let mut last = String::new();
    for words in &commands {
        let mut cmd = kalam(home.path(), &s.url);
        cmd.args(&words[1..]);
        let out = run(cmd).await;
        assert!(out.status.success(), "{words:?}: {}", text(&out.stderr));
        last = text(&out.stdout);
    }
    assert_eq!(last, expected);
}

#[test]
fn shell_words() {
    assert_eq!(
        words(r#"kalam -c "SELECT 'a b'"  x"#),
        vec!["kalam", "-c", "SELECT 'a b'", "x"]
    );
}
