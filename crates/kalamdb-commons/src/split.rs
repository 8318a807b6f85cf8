//! Splits request text into statements on `;`, ignoring semicolons inside quotes and comments.

/// Why the text could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A quote or block comment that never closes.
    #[error("unterminated {0} starting at byte {1}")]
    Unterminated(&'static str, usize),
}

/// Splits `sql` into trimmed, non-empty statements.
pub fn split_statements(sql: &str) -> Result<Vec<String>, SplitError> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                let open = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(SplitError::Unterminated("quoted string", open)),
                        Some(&c) if c == q => {
                            if bytes.get(i + 1) == Some(&q) {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let open = i;
                i += 2;
                while !(bytes.get(i) == Some(&b'*') && bytes.get(i + 1) == Some(&b'/')) {
                    if i >= bytes.len() {
                        return Err(SplitError::Unterminated("block comment", open));
                    }
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                push(&mut out, &sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    push(&mut out, &sql[start..]);
    Ok(out)
}

fn push(out: &mut Vec<String>, stmt: &str) {
    let s = stmt.trim();
    if !strip_comments(s).trim().is_empty() {
        out.push(s.to_string());
    }
}

/// The statement without leading `--` line comments (used to skip comment-only pieces).
fn strip_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backslash_is_an_ordinary_character_in_strings() {
        // As the server's parser reads them (standard SQL: only '' escapes a quote).
        let v = split_statements(r"INSERT INTO t VALUES ('C:\tmp\'); SELECT 'a\'").unwrap();
        assert_eq!(v, vec![r"INSERT INTO t VALUES ('C:\tmp\')", r"SELECT 'a\'"]);
    }

    #[test]
    fn splits_outside_quotes_and_comments() {
        let v =
            split_statements("SELECT 'a;b'; -- c;d\nINSERT INTO t VALUES ('it''s;');;  ").unwrap();
        assert_eq!(
            v,
            vec!["SELECT 'a;b'", "-- c;d\nINSERT INTO t VALUES ('it''s;')"]
        );
        assert_eq!(split_statements("/* x; */ SELECT 1").unwrap().len(), 1);
        assert!(split_statements("SELECT 'oops").is_err());
        assert!(
            split_statements("  ;  -- only a comment")
                .unwrap()
                .is_empty()
        );
    }
}
