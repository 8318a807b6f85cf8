//! HS256 JWTs: issue and verify access and refresh tokens (`docs/protocol.md` §3.4).
//!
//! Claims: `sub`, `iss = "kalamdb"`, `exp`, `iat`, `email`, `role`, `token_type`. Verification
//! pins the algorithm to HS256 (so `alg: none` and asymmetric tricks fail), checks the
//! signature, expiry (60 s leeway), issuer, `iat` not in the future, and the token type.

use super::AuthError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kalamdb_catalog::catalog::UserRecord;
use kalamdb_commons::Role;
use serde::{Deserialize, Serialize};

/// Issuer of our tokens.
pub const ISSUER: &str = crate::config::TOKEN_ISSUER;
const LEEWAY_SECS: i64 = 60;

/// Access or refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Authorizes API calls.
    Access,
    /// Only exchanges for a new pair.
    Refresh,
}

/// Token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Email.
    pub email: Option<String>,
    /// Role at issue time; when present it must still be the user's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Not before, Unix seconds (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Access or refresh.
    pub token_type: TokenKind,
    /// The account's token generation at issue time; the token is refused once the account's
    /// generation moved on (password or role change, account dropped and re-created).
    #[serde(default)]
    pub tgen: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Past `exp` (+ leeway).
    Expired,
    /// Anything else.
    Invalid,
}

/// Issues and verifies tokens.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    expiry_secs: i64,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("expiry_secs", &self.expiry_secs)
            .finish()
    }
}

impl TokenService {
    /// A service signing with `secret`; access tokens live `expiry_hours`, refresh 7x longer.
    pub fn new(secret: &str, expiry_hours: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            expiry_secs: (expiry_hours as i64).saturating_mul(3600),
        }
    }

    /// Issues a token; returns it and its expiry (Unix seconds).
    pub fn issue(&self, user: &UserRecord, kind: TokenKind) -> Result<(String, i64), AuthError> {
        let now = chrono::Utc::now().timestamp();
        let life = match kind {
            TokenKind::Access => self.expiry_secs,
            TokenKind::Refresh => self.expiry_secs.saturating_mul(7),
        };
        let claims = Claims {
            sub: user.user_id.clone(),
            iss: ISSUER.into(),
            exp: now + life,
            iat: now,
            email: user.email.clone(),
            role: Some(user.role),
            nbf: None,
            token_type: kind,
            tgen: user.token_generation,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        Ok((token, claims.exp))
    }

    /// Verifies a token of the expected kind.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS as u64;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            },
        )?;
        let claims = data.claims;
        let now = chrono::Utc::now().timestamp();
        if claims.iat > now + LEEWAY_SECS || claims.sub.is_empty() || claims.token_type != kind {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserRecord {
        UserRecord::new("alice", String::new(), Role::User, None, "password", 0)
    }

    #[test]
    fn roundtrip_and_kind_check() {
        let svc = TokenService::new("a-secret-that-is-long-enough-for-hs256", 1);
        let (access, _) = svc.issue(&user(), TokenKind::Access).unwrap();
        let (refresh, _) = svc.issue(&user(), TokenKind::Refresh).unwrap();
        assert_eq!(svc.verify(&access, TokenKind::Access).unwrap().sub, "alice");
        assert_eq!(
            svc.verify(&refresh, TokenKind::Access).unwrap_err(),
            TokenError::Invalid
        );
        let other = TokenService::new("another-secret-that-is-long-enough!!", 1);
        assert_eq!(
            other.verify(&access, TokenKind::Access).unwrap_err(),
            TokenError::Invalid
        );
    }

    fn signed(claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(b"a-secret-that-is-long-enough-for-hs256"),
        )
        .unwrap()
    }

    fn claims(exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "alice".into(),
            iss: ISSUER.into(),
            exp: now + exp_in,
            iat: now - 10,
            email: None,
            role: Some(Role::User),
            nbf: None,
            token_type: TokenKind::Access,
            tgen: 0,
        }
    }

    #[test]
    fn expired_tokens_are_reported_as_expired() {
        let svc = TokenService::new("a-secret-that-is-long-enough-for-hs256", 1);
        let token = signed(&claims(-3600));
        assert_eq!(
            svc.verify(&token, TokenKind::Access).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn not_before_is_checked_and_the_role_claim_is_optional() {
        let svc = TokenService::new("a-secret-that-is-long-enough-for-hs256", 1);
        let mut early = claims(3600);
        early.nbf = Some(chrono::Utc::now().timestamp() + 600);
        assert_eq!(
            svc.verify(&signed(&early), TokenKind::Access).unwrap_err(),
            TokenError::Invalid
        );
        let mut roleless = claims(3600);
        roleless.role = None;
        assert!(svc.verify(&signed(&roleless), TokenKind::Access).is_ok());
    }
}
