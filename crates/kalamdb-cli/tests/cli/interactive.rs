//! The shell in a real pseudo-terminal: multi-line statements, completion, `\dt`, `\d`, and
//! `\subscribe` showing a change another client makes, then Ctrl-C back to the prompt.

use crate::{ROOT_PASSWORD, Server};
use expectrl::{ControlCode, Expect};
use std::time::Duration;

/// Types `send` and waits for `want` on the screen.
fn step(shell: &mut impl Expect, send: &str, want: &str) {
    shell.send(send).unwrap();
    if let Err(e) = shell.expect(want) {
        panic!("after {send:?} no {want:?}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_edits_completes_describes_and_subscribes() {
    let s = Server::start().await;
    s.sql(
        "CREATE NAMESPACE app; CREATE SHARED TABLE app.items (id BIGINT PRIMARY KEY, title TEXT)",
    )
    .await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("kalam"));
    cmd.env("KALAM_HOME", home.path())
        .env("TERM", "xterm")
        .args(["-u", &s.url, "--user", "root", "--password", ROOT_PASSWORD]);
    let mut shell = expectrl::Session::spawn(cmd).unwrap();
    shell.set_expect_timeout(Some(Duration::from_secs(20)));
    let (tx, mut done) = tokio::sync::mpsc::channel::<&'static str>(1);
    let driver = tokio::task::spawn_blocking(move || {
        shell.expect("root@").unwrap();
        // A statement over two lines.
        step(&mut shell, "SELECT 40 + 2\r", "-> ");
        step(&mut shell, "AS answer;\r", "(1 row)");
        // Completion of a table name: the statement only works if Tab completed it.
        step(
            &mut shell,
            "SELECT count(*) AS n FROM app.it\t",
            "app.items",
        );
        step(&mut shell, ";\r", "(1 row)");
        step(&mut shell, "\\dt app\r", "items");
        // Ctrl-C cancels a long statement and the shell stays.
        shell
            .send("SELECT count(*) FROM generate_series(1, 100000000000);\r")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        shell.send(ControlCode::EndOfText).unwrap();
        shell.expect("Cancelled.").unwrap();
        step(&mut shell, "SELECT 'still here' AS s;\r", "still here");
        step(&mut shell, "\\d app.items\r", "title");
        step(
            &mut shell,
            "\\subscribe SELECT id, title FROM app.items\r",
            "live: 0 row(s)",
        );
        tx.blocking_send("subscribed").unwrap();
        shell.expect("from the other client").unwrap();
        shell.send(ControlCode::EndOfText).unwrap();
        shell.expect("Unsubscribed.").unwrap();
        shell.send("\\q\r").unwrap();
        shell.expect(expectrl::Eof).unwrap();
    });
    assert_eq!(done.recv().await, Some("subscribed"));
    s.sql("INSERT INTO app.items VALUES (1, 'from the other client')")
        .await;
    driver.await.unwrap();
}
