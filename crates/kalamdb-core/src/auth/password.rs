//! Password hashing (bcrypt, on the blocking pool) and the password policy.

use super::AuthError;

/// A few passwords too common to accept.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "12345678",
    "123456789",
    "1234567890",
    "qwerty123",
    "qwertyuiop",
    "iloveyou",
    "admin123",
    "letmein1",
    "welcome1",
    "abc12345",
    "11111111",
    "00000000",
    "passw0rd",
    "changeme",
    "kalamdb1",
];

/// Checks length and the common-password list; the error text is shown to the caller.
pub fn check_policy(pw: &str, min_len: usize) -> Result<(), String> {
    if pw.len() < min_len {
        return Err(format!("password must be at least {min_len} characters"));
    }
    if pw.len() > 72 {
        return Err("password must be at most 72 bytes".into());
    }
    if COMMON_PASSWORDS.contains(&pw.to_ascii_lowercase().as_str()) {
        return Err("password is too common".into());
    }
    Ok(())
}

/// Hashes a password with bcrypt.
pub async fn hash(pw: String, cost: u32) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(pw, cost))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
        .map_err(|e| AuthError::Internal(e.to_string()))
}

/// Verifies a password against a bcrypt hash; any failure is a mismatch.
pub async fn verify(pw: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || bcrypt::verify(pw, &hash).unwrap_or(false))
        .await
        .unwrap_or(false)
}
