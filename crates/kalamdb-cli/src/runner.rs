//! Running SQL text the way every mode of the CLI does: split into statements like the server
//! (`kalamdb_commons::split`), each sent on its own (so a failure names its statement and the
//! rest can stop or go on), inside the open transaction if any, as the `\as` user if set, and
//! cancelled by Ctrl-C.

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::render::{self, Style};
use std::time::Instant;

/// What runs statements and prints their results.
#[derive(Debug)]
pub struct Runner {
    /// The server.
    pub client: Client,
    /// How results are printed.
    pub style: Style,
    /// `\as`: statements run as `EXECUTE AS USER` this user.
    pub as_user: Option<String>,
}

/// Runs `work` on `rt` until it ends or the user presses Ctrl-C ([`CliError::Cancelled`]).
pub fn cancellable<T>(
    rt: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    rt.block_on(async {
        tokio::select! {
            r = work => r,
            _ = ctrl_c() => Err(CliError::Cancelled),
        }
    })
}

/// Resolves when the user presses Ctrl-C.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handling: never resolve.
        std::future::pending::<()>().await;
    }
}

/// The first keyword of `stmt`, after any comments, upper-cased.
fn first_word(stmt: &str) -> String {
    let mut rest = stmt.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    rest.split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Whether an error ends a whole run (the rest cannot work): a lost connection, Ctrl-C or a
/// refused login.
pub fn ends_run(e: &CliError) -> bool {
    matches!(
        e,
        CliError::Connect { .. } | CliError::Cancelled | CliError::Auth(_)
    )
}

impl Runner {
    /// Runs one statement and prints its result; Ctrl-C cancels it (the server stops the
    /// query when the request goes away).
    pub async fn statement(&mut self, stmt: &str) -> Result<()> {
        let word = first_word(stmt);
        let text = match &self.as_user {
            Some(user)
                if !matches!(
                    word.as_str(),
                    "BEGIN" | "START" | "COMMIT" | "ROLLBACK" | "END"
                ) =>
            {
                format!("EXECUTE AS USER '{}' ({stmt})", user.replace('\'', "''"))
            }
            _ => stmt.to_string(),
        };
        let started = Instant::now();
        let reply = tokio::select! {
            r = self.client.sql(&text) => r,
            _ = ctrl_c() => return Err(CliError::Cancelled),
        };
        // A lone BEGIN opened a transaction the next requests run in; COMMIT/ROLLBACK end it,
        // whether they succeed or not (a failed COMMIT rolled back), and so does a transaction
        // the server no longer knows (expired, killed).
        let gone = matches!(&reply, Err(CliError::Server { message, .. })
            if message.contains("Transaction '") && message.contains("not found"));
        if gone || matches!(word.as_str(), "COMMIT" | "ROLLBACK" | "END") {
            self.client.transaction = None;
        }
        let reply = reply?;
        if matches!(word.as_str(), "BEGIN" | "START") {
            self.client.transaction = reply.results.iter().find_map(|r| r.transaction_id.clone());
        }
        let mut out = std::io::stdout().lock();
        render::print_reply(&mut out, &reply, &self.style, started.elapsed())
            .map_err(|e| CliError::Other(format!("cannot write the output: {e}")))
    }

    /// Runs every statement of `text`, printing errors to stderr; stops at the first failure
    /// unless `keep_going`. Returns how many failed.
    pub async fn text(&mut self, text: &str, keep_going: bool) -> Result<usize> {
        let statements = kalamdb_commons::split::split_statements(text)
            .map_err(|e| CliError::Usage(format!("cannot split the SQL: {e}")))?;
        let mut failed = 0;
        for stmt in statements {
            match self.statement(&stmt).await {
                Ok(()) => {}
                Err(e) if ends_run(&e) => return Err(e),

                Err(e) => {
                    eprintln!("ERROR {e}");
                    failed += 1;
                    if !keep_going {
                        break;
                    }
                }
            }
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_keyword_comes_after_comments() {
        assert_eq!(first_word("-- tx\n/* x */ begin;"), "BEGIN");
        assert_eq!(first_word("COMMIT"), "COMMIT");
        assert_eq!(first_word("(SELECT 1)"), "");
    }
}
