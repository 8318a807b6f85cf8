//! The interactive shell: line editing and history (`~/.kalam/history`), statements over
//! several lines until `;`, tab completion, and the backslash commands (`\?` lists them).

use crate::complete::{ShellHelper, Vocabulary};
use crate::error::{CliError, Result};
use crate::render::{Expanded, Format};
use crate::runner::{Runner, ctrl_c};
use rustyline::error::ReadlineError;
use rustyline::history::{FileHistory, History};
use rustyline::{Config, Editor};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

const HELP: &str = "\
SQL statements end with ';' and may span lines. Backslash commands:
  \\q, \\quit                 leave
  \\?, \\help                 this help
  \\dt [ns], \\tables [ns]    list tables
  \\d TABLE, \\describe TABLE columns of a table
  \\dn                       list namespaces
  \\du                       list users
  \\use NS                   default namespace for unqualified names
  \\format table|json|csv    output format
  \\x [on|off|auto]          expanded rows (one field per line)
  \\timing [on|off]          print statement times
  \\as [USER]                run statements as USER (EXECUTE AS); no USER: as yourself
  \\flush TABLE              STORAGE FLUSH TABLE
  \\jobs                     recent jobs
  \\health                   the server's health
  \\info, \\session           who and where you are
  \\history                  statements of this and earlier sessions
  \\i FILE                   run the statements of FILE
  \\refresh                  reload names for completion
  \\subscribe SELECT …       live rows and changes until Ctrl-C
  \\unsubscribe              (a subscription ends with Ctrl-C)
  \\consume TOPIC [GROUP]    messages of a topic until Ctrl-C (acked when a group is given)
  \\import TABLE FILE        import .csv, .jsonl or .parquet
  \\export \"SELECT …\" FILE   export rows to .csv, .jsonl or .parquet
Ctrl-C cancels a running statement or clears the line; Ctrl-D leaves.";

/// Runs the shell until `\q` or end of input; returns the exit code.
pub fn run(rt: &tokio::runtime::Runtime, mut runner: Runner, instance: &str) -> Result<u8> {
    let helper = ShellHelper::default();
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(10_000)
        .map_err(|e| CliError::Other(e.to_string()))?
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::with_config(config).map_err(|e| CliError::Other(e.to_string()))?;
    editor.set_helper(Some(helper.clone()));
    let history = crate::config::home().join("history");
    if let Some(dir) = history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = editor.load_history(&history);
    rt.block_on(refresh(&mut runner, &helper));
    println!(
        "kalam {}: connected to {} as {}. \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        runner.client.session.url,
        runner.client.session.user
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            let ns = runner.client.namespace.as_deref().unwrap_or("default");
            let tx = if runner.client.transaction.is_some() {
                "*"
            } else {
                ""
            };
            let who = runner
                .as_user
                .as_deref()
                .unwrap_or(&runner.client.session.user);
            format!("{who}@{instance}:{ns}{tx}> ")
        } else {
            "-> ".to_string()
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::Other(e.to_string())),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.is_empty() {
            continue;
        }
        if buffer.is_empty() && (trimmed.starts_with('\\') || matches!(trimmed, "quit" | "exit")) {
            let _ = editor.add_history_entry(trimmed);
            match command(rt, &mut runner, &helper, Some(&editor), trimmed) {
                Ok(Flow::Quit) => break,
                Ok(Flow::Go | Flow::Failed) => {}
                Err(e) => eprintln!("ERROR {e}"),
            }
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !complete(&buffer) {
            continue;
        }
        let text = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(text.trim());
        let _ = editor.save_history(&history);
        match rt.block_on(runner.text(&text, false)) {
            Ok(_) => {}
            Err(CliError::Cancelled) => eprintln!("Cancelled."),
            Err(e) => eprintln!("ERROR {e}"),
        }
        if text.to_ascii_uppercase().contains("CREATE ")
            || text.to_ascii_uppercase().contains("DROP ")
        {
            rt.block_on(refresh(&mut runner, &helper));
        }
    }
    let _ = editor.save_history(&history);
    Ok(0)
}

/// Runs a script (`-c`, `-f`, stdin): its lines starting with `\\` are backslash commands, the
/// text between them SQL. Returns how many statements or commands failed; stops at the first
/// failure unless `keep_going`.
pub fn script(
    rt: &tokio::runtime::Runtime,
    runner: &mut Runner,
    text: &str,
    keep_going: bool,
) -> Result<usize> {
    let helper = ShellHelper::default();
    let mut failed = 0;
    let mut sql = String::new();
    let lines = text.lines().map(Some).chain(std::iter::once(None));
    for line in lines {
        let is_command = line.is_some_and(|l| l.trim_start().starts_with('\\'));
        if !is_command && let Some(l) = line {
            sql.push_str(l);
            sql.push('\n');
            continue;
        }
        if !sql.trim().is_empty() {
            failed += rt.block_on(runner.text(&std::mem::take(&mut sql), keep_going))?;
            if failed > 0 && !keep_going {
                return Ok(failed);
            }
        }
        let Some(l) = line.filter(|_| is_command) else {
            continue;
        };
        match command(rt, runner, &helper, None, l.trim()) {
            Ok(Flow::Quit) => return Ok(failed),
            Ok(Flow::Go) => {}
            Ok(Flow::Failed) => {
                failed += 1;
                if !keep_going {
                    return Ok(failed);
                }
            }
            Err(e) if crate::runner::ends_run(&e) => return Err(e),
            Err(e) => {
                eprintln!("ERROR {e}");
                failed += 1;
                if !keep_going {
                    return Ok(failed);
                }
            }
        }
    }
    Ok(failed)
}

/// Whether `buffer` holds whole statements: it ends with `;` outside quotes and comments.
fn complete(buffer: &str) -> bool {
    let t = buffer.trim_end();
    t.ends_with(';') && kalamdb_commons::split::split_statements(t).is_ok()
}

enum Flow {
    Go,
    /// A statement the command ran failed (its error is printed).
    Failed,
    Quit,
}

/// Runs one backslash command.
fn command(
    rt: &tokio::runtime::Runtime,
    runner: &mut Runner,
    helper: &ShellHelper,
    editor: Option<&Editor<ShellHelper, FileHistory>>,
    line: &str,
) -> Result<Flow> {
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let sql = |runner: &mut Runner, text: String| -> Result<Flow> {
        match rt.block_on(runner.text(&text, false))? {
            0 => Ok(Flow::Go),
            _ => Ok(Flow::Failed),
        }
    };
    let needs = |what: &str| CliError::Usage(format!("{name} needs {what}"));
    match name {
        "\\q" | "\\quit" | "quit" | "exit" => return Ok(Flow::Quit),
        "\\?" | "\\help" => println!("{HELP}"),
        "\\dt" | "\\tables" => {
            // SHOW TABLES works for every role (system.tables is for admins).
            let within = if rest.is_empty() {
                String::new()
            } else {
                format!(" IN {rest}")
            };
            return sql(runner, format!("SHOW TABLES{within}"));
        }
        "\\d" | "\\describe" => {
            if rest.is_empty() {
                return Err(needs("a table"));
            }
            return sql(runner, format!("DESCRIBE TABLE {rest}"));
        }
        "\\dn" => return sql(runner, "SHOW NAMESPACES".into()),
        "\\du" => {
            return sql(
                runner,
                "SELECT user_id, role, email, auth_type, last_login_at FROM system.users \
                 ORDER BY user_id"
                    .into(),
            );
        }
        "\\use" => {
            if rest.is_empty() {
                return Err(needs("a namespace"));
            }
            runner.client.namespace = Some(rest.trim_end_matches(';').to_string());
        }
        "\\format" => {
            runner.style.format = Format::parse(rest)
                .ok_or_else(|| CliError::Usage("\\format table, json or csv".into()))?;
        }
        "\\x" => {
            runner.style.expanded = match rest {
                "on" => Expanded::On,
                "off" => Expanded::Off,
                "auto" => Expanded::Auto,
                "" if runner.style.expanded == Expanded::On => Expanded::Off,
                "" => Expanded::On,
                _ => return Err(CliError::Usage("\\x [on|off|auto]".into())),
            };
            println!("Expanded display is {:?}.", runner.style.expanded);
        }
        "\\timing" => {
            runner.style.timing = match rest {
                "on" => true,
                "off" => false,
                _ => !runner.style.timing,
            };
            println!(
                "Timing is {}.",
                if runner.style.timing { "on" } else { "off" }
            );
        }
        "\\as" => {
            runner.as_user = (!rest.is_empty()).then(|| rest.trim_matches('\'').to_string());
            match &runner.as_user {
                Some(u) => println!("Statements now run as {u} (EXECUTE AS USER)."),
                None => println!("Statements run as yourself."),
            }
        }
        "\\flush" => {
            if rest.is_empty() {
                return Err(needs("a table"));
            }
            return sql(runner, format!("STORAGE FLUSH TABLE {rest}"));
        }
        "\\jobs" => {
            return sql(
                runner,
                "SELECT job_id, job_type, target, status, created_at, message FROM system.jobs \
                 ORDER BY created_at DESC LIMIT 20"
                    .into(),
            );
        }
        "\\health" => {
            let health = rt.block_on(runner.client.get_json("/health"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&health).unwrap_or_default()
            );
        }
        "\\info" | "\\session" => {
            let me = rt.block_on(runner.client.get_json("/v1/api/auth/me"))?;
            let c = &runner.client;
            println!("server:    {}", c.session.url);
            println!("instance:  {}", c.session.instance);
            println!(
                "user:      {} (role {})",
                c.session.user,
                me["user"]["role"].as_str().unwrap_or("?")
            );
            println!("namespace: {}", c.namespace.as_deref().unwrap_or("default"));
            if let Some(u) = &runner.as_user {
                println!("as user:   {u}");
            }
            if let Some(t) = &c.transaction {
                println!("transaction: {t}");
            }
            println!(
                "format:    {:?}, expanded {:?}, timing {}",
                runner.style.format, runner.style.expanded, runner.style.timing
            );
        }
        "\\history" => {
            let Some(h) = editor.map(Editor::history) else {
                return Err(CliError::Usage(
                    "\\history is a command of the shell".into(),
                ));
            };
            for i in 0..h.len() {
                if let Ok(Some(entry)) = h.get(i, rustyline::history::SearchDirection::Forward) {
                    println!("{:5}  {}", i + 1, entry.entry);
                }
            }
        }
        "\\i" => {
            if rest.is_empty() {
                return Err(needs("a file"));
            }
            let text =
                std::fs::read_to_string(rest).map_err(|e| CliError::file(rest.as_ref(), e))?;
            return match script(rt, runner, &text, false)? {
                0 => Ok(Flow::Go),
                _ => Ok(Flow::Failed),
            };
        }
        "\\refresh" => {
            rt.block_on(refresh(runner, helper));
            println!("Names reloaded.");
        }
        "\\subscribe" => {
            if rest.is_empty() {
                return Err(needs("a SELECT"));
            }
            let query = rest.trim_end_matches(';').to_string();
            let Runner { client, style, .. } = runner;
            rt.block_on(crate::live::subscribe(client, &query, style, ctrl_c()))?;
            println!("Unsubscribed.");
        }
        "\\unsubscribe" => println!("No subscription is running (Ctrl-C ends one)."),
        "\\consume" => {
            let mut words = rest.split_whitespace();
            let topic = words.next().ok_or_else(|| needs("a topic"))?;
            let group = words.next().map(|g| g.trim_matches('\'').to_string());
            rt.block_on(consume(runner, topic, group.as_deref()))?;
        }
        "\\import" => {
            let (table, file) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| needs("a table and a file"))?;
            let import = crate::transfer::import(runner, table, file.trim().as_ref());
            let report = crate::runner::cancellable(rt, import)?;
            println!("{}", report.summary(table));
        }
        "\\export" => {
            let (query, file) =
                split_export(rest).ok_or_else(|| needs("\"SELECT …\" and a file"))?;
            let export = crate::transfer::export(runner, &query, file.as_ref());
            let n = crate::runner::cancellable(rt, export)?;
            println!("Exported {n} row(s) to {file}.");
        }
        other => {
            return Err(CliError::Usage(format!(
                "unknown command {other}: \\? lists them"
            )));
        }
    }
    Ok(Flow::Go)
}

/// `"SELECT …" file` (the query in double quotes) or `SELECT … file` (the last word is the
/// file).
fn split_export(rest: &str) -> Option<(String, String)> {
    if let Some(stripped) = rest.strip_prefix('"') {
        let (query, file) = stripped.split_once('"')?;
        let file = file.trim();
        return (!file.is_empty()).then(|| (query.to_string(), file.to_string()));
    }
    let (query, file) = rest.rsplit_once(char::is_whitespace)?;
    Some((query.trim().to_string(), file.to_string()))
}

/// Reloads the names completion offers.
async fn refresh(runner: &mut Runner, helper: &ShellHelper) {
    let reply = runner
        .client
        .sql("SELECT table_schema, table_name, column_name FROM information_schema.columns")
        .await;
    let Ok(reply) = reply else {
        return;
    };
    let mut v = Vocabulary::default();
    for row in reply
        .results
        .first()
        .and_then(|r| r.rows.as_ref())
        .into_iter()
        .flatten()
    {
        let text = |i: usize| row.get(i).and_then(Value::as_str).map(str::to_string);
        if let (Some(ns), Some(t), Some(c)) = (text(0), text(1), text(2)) {
            v.tables.insert(format!("{ns}.{t}"));
            v.tables.insert(t);
            v.namespaces.insert(ns);
            v.columns.insert(c);
        }
    }
    *helper.vocabulary.lock() = v;
}

/// `\consume`: the topic's messages from the start (a group: from its last ack, acking what it
/// shows) on every partition, long-polling, until Ctrl-C.
async fn consume(runner: &mut Runner, topic: &str, group: Option<&str>) -> Result<()> {
    let client = &mut runner.client;
    let reply = client
        .sql(&format!(
            "SELECT partitions FROM system.topics WHERE topic_id = '{}'",
            topic.replace('\'', "''")
        ))
        .await?;
    let partitions = reply
        .results
        .first()
        .and_then(|r| r.rows.as_ref())
        .and_then(|rows| rows.first())
        .and_then(|row| row.first())
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .ok_or_else(|| CliError::Usage(format!("there is no topic {topic} (use ns.topic)")))?;
    let mut next: Vec<Option<u64>> = vec![None; partitions as usize];
    println!("Consuming {topic} ({partitions} partition(s)); Ctrl-C stops.");
    let stop = ctrl_c();
    tokio::pin!(stop);
    loop {
        for p in 0..partitions {
            let start = next[p as usize].map_or(json!("Earliest"), |o| json!({"Offset": o}));
            let mut body = json!({"topic_id": topic, "partition_id": p, "start": start, "limit": 100,
                                  "timeout_seconds": if partitions == 1 { 5 } else { 1 }});
            if let Some(g) = group {
                body["group_id"] = json!(g);
            }
            let fetch = tokio::select! {
                r = client.post_json("/v1/api/topics/consume", &body) => r?,
                _ = &mut stop => return Ok(()),
            };
            let messages = fetch["messages"].as_array().cloned().unwrap_or_default();
            for m in &messages {
                let payload = m["payload"]
                    .as_str()
                    .and_then(decode_base64)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                // Ignoring write errors: a closed pipe (`| head`) must not panic.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{p}/{} {} {} {}",
                    m["offset"],
                    m["op"].as_str().unwrap_or(""),
                    m["key"].as_str().unwrap_or("-"),
                    payload
                );
            }
            next[p as usize] = fetch["next_offset"].as_u64().or(next[p as usize]);
            if let (Some(g), Some(last)) =
                (group, messages.last().and_then(|m| m["offset"].as_u64()))
            {
                let ack = json!({"topic_id": topic, "group_id": g, "partition_id": p, "upto_offset": last});
                client.post_json("/v1/api/topics/ack", &ack).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Standard base64 (the topic routes' payload encoding).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes() {
        assert!(!complete("SELECT 1"));
        assert!(complete("SELECT 1;\n"));
        assert!(!complete("SELECT ';\n"));
        assert!(complete("SELECT ';';"));
    }

    #[test]
    fn export_arguments() {
        assert_eq!(
            split_export("\"SELECT * FROM a.b\" out.csv"),
            Some(("SELECT * FROM a.b".into(), "out.csv".into()))
        );
        assert_eq!(
            split_export("SELECT 1 x.csv"),
            Some(("SELECT 1".into(), "x.csv".into()))
        );
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
    }
}
