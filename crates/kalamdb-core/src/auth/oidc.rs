//! OIDC sign-in: bearer tokens issued by the trusted external identity providers of
//! `[auth.oidc]`, verified against each issuer's published signing keys (JWKS).
//!
//! A token is routed here by its (unverified) `iss` claim naming a configured issuer; then its
//! signature, `exp`/`nbf` (60 s leeway), `iss` and `aud` are checked. Only asymmetric
//! algorithms are accepted (RS256/384/512, PS256/384/512, ES256/384), never HS*, so a public
//! key can never be used as an HMAC secret (`alg` confusion). Keys are fetched from the
//! issuer's `jwks_url` (or discovered through `/.well-known/openid-configuration`, or read
//! from `jwks_file`) on first use, cached for `jwks_cache_secs`, and fetched again when a token
//! names a key id the cache lacks (key rotation), at most once per `jwks_min_refetch_secs`.
//! A failed fetch keeps the keys already known. No request waits on a fetch while cached keys
//! verify its token: stale keys are refreshed in the background.

use crate::config::{OidcConfig, OidcIssuerConfig};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// How long one HTTP fetch of keys or discovery may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const LEEWAY_SECS: u64 = 60;

/// A verified external token.
#[derive(Debug, Clone)]
pub(crate) struct ExternalLogin {
    /// The issuer's provider name.
    pub(crate) provider: String,
    /// The `sub` claim.
    pub(crate) subject: String,
    /// The value of the issuer's `username_claim`, if a string.
    pub(crate) username: Option<String>,
    /// The `email` claim, if any.
    pub(crate) email: Option<String>,
    /// Expiry, Unix seconds.
    pub(crate) exp: i64,
}

/// Why an external token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExternalError {
    /// Past `exp`.
    Expired,
    /// Anything else; the reason is logged, never sent.
    Invalid(String),
}

/// The trusted issuers and their keys.
#[derive(Debug)]
pub(crate) struct Oidc {
    issuers: Vec<Arc<Issuer>>,
    http: reqwest::Client,
    cache_for: Duration,
    min_refetch: Duration,
}

#[derive(Debug)]
pub(crate) struct Issuer {
    config: OidcIssuerConfig,
    keys: RwLock<Keys>,
    /// Held while fetching, so concurrent misses fetch once.
    fetching: Mutex<()>,
}

#[derive(Debug, Default)]
struct Keys {
    set: Vec<Jwk>,
    fetched_at: Option<Instant>,
}

impl Issuer {
    /// The issuer's settings.
    pub(crate) fn config(&self) -> &OidcIssuerConfig {
        &self.config
    }
}

/// The claims read before a token is verified, to route it.
#[derive(serde::Deserialize)]
struct Unverified {
    iss: Option<String>,
}

impl Oidc {
    /// The issuers of `config`; `None` when there are none. Static key files are read now.
    pub(crate) fn new(config: &OidcConfig) -> Result<Option<Self>, String> {
        if config.issuers.is_empty() {
            return Ok(None);
        }
        let mut issuers = Vec::new();
        for c in &config.issuers {
            let mut keys = Keys::default();
            if !c.jwks_file.is_empty() {
                let text = std::fs::read_to_string(&c.jwks_file)
                    .map_err(|e| format!("cannot read {}: {e}", c.jwks_file))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not a JWKS: {e}", c.jwks_file))?;
                keys.set = set.keys;
                keys.fetched_at = Some(Instant::now());
            }
            issuers.push(Arc::new(Issuer {
                config: c.clone(),
                keys: RwLock::new(keys),
                fetching: Mutex::new(()),
            }));
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client for OIDC: {e}"))?;
        Ok(Some(Self {
            issuers,
            http,
            cache_for: Duration::from_secs(config.jwks_cache_secs),
            min_refetch: Duration::from_secs(config.jwks_min_refetch_secs),
        }))
    }

    /// The configured issuer `token` claims to come from, if any (not verified yet).
    pub(crate) fn issuer_of(&self, token: &str) -> Option<&Arc<Issuer>> {
        let claims = jsonwebtoken::dangerous::insecure_decode::<Unverified>(token).ok()?;
        let iss = claims.claims.iss?;
        self.issuers.iter().find(|i| i.config.issuer == iss)
    }

    /// Verifies `token` as one of `issuer`'s.
    pub(crate) async fn verify(
        &self,
        issuer: &Arc<Issuer>,
        token: &str,
    ) -> Result<ExternalLogin, ExternalError> {
        let invalid = |why: &str| ExternalError::Invalid(why.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e.to_string()))?;
        if header
            .typ
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("refresh"))
        {
            return Err(invalid("refresh tokens do not authorize requests"));
        }
        if !is_asymmetric(header.alg) {
            return Err(invalid(
                "only asymmetric algorithms are accepted from OIDC issuers",
            ));
        }
        let key = self
            .key(issuer, header.kid.as_deref(), header.alg)
            .await
            .ok_or_else(|| invalid("no signing key of the issuer matches the token"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&issuer.config.audience);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => ExternalError::Expired,
            _ => ExternalError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let subject = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("the token has no subject"))?;
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| invalid("the token has no expiry"))?;
        Ok(ExternalLogin {
            provider: issuer.config.provider().to_string(),
            subject,
            username: text(&issuer.config.username_claim),
            email: text("email"),
            exp,
        })
    }

    /// The key for `kid` (or the only key fitting `alg` when the token names none). Keys that
    /// are stale are used while fresh ones are fetched in the background; keys that lack it are
    /// fetched now, unless they were fetched within the refetch interval.
    async fn key(
        &self,
        issuer: &Arc<Issuer>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Option<DecodingKey> {
        let (found, fetched_at) = {
            let keys = issuer.keys.read().await;
            (pick(&keys.set, kid, alg), keys.fetched_at)
        };
        let age = fetched_at.map(|t| t.elapsed());
        let from_file = !issuer.config.jwks_file.is_empty();
        if let Some(key) = found {
            if !from_file && age.is_none_or(|a| a >= self.cache_for) {
                let (issuer, http) = (Arc::clone(issuer), self.http.clone());
                tokio::spawn(async move { refresh(&http, &issuer, fetched_at).await });
            }
            return Some(key);
        }
        if from_file || age.is_some_and(|a| a < self.min_refetch) {
            return None;
        }
        refresh(&self.http, issuer, fetched_at).await;
        let keys = issuer.keys.read().await;
        pick(&keys.set, kid, alg)
    }
}

/// Fetches `issuer`'s keys unless another request did since `seen` (when this one looked).
async fn refresh(http: &reqwest::Client, issuer: &Issuer, seen: Option<Instant>) {
    let _one_at_a_time = issuer.fetching.lock().await;
    if issuer.keys.read().await.fetched_at != seen {
        return; // fetched meanwhile
    }
    match fetch(http, &issuer.config).await {
        Ok(set) => {
            *issuer.keys.write().await = Keys {
                set,
                fetched_at: Some(Instant::now()),
            };
        }
        Err(e) => {
            tracing::warn!(issuer = %issuer.config.issuer, error = %e,
                "cannot fetch the OIDC issuer's signing keys; keeping the known ones");
            // Counts as a fetch for the refetch limit, so a down issuer is not hammered.
            issuer.keys.write().await.fetched_at = Some(Instant::now());
        }
    }
}

async fn fetch(http: &reqwest::Client, config: &OidcIssuerConfig) -> Result<Vec<Jwk>, String> {
    let url = if config.jwks_url.is_empty() {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            config.issuer.trim_end_matches('/')
        );
        let doc: serde_json::Value = get_json(http, &discovery).await?;
        doc.get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{discovery} has no jwks_uri"))?
            .to_string()
    } else {
        config.jwks_url.clone()
    };
    let set: JwkSet = get_json(http, &url).await?;
    Ok(set.keys)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = http
        .get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
}

fn is_asymmetric(alg: Algorithm) -> bool {
    use Algorithm::*;
    matches!(
        alg,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384
    )
}

/// The key of `set` the token names by `kid`, or when it names none the only key that can
/// verify `alg`. A key that declares an algorithm must declare `alg`.
fn pick(set: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let fits = |k: &&Jwk| {
        let declared = k.common.key_algorithm.map(|a| a.to_string());
        declared.is_none_or(|d| d == format!("{alg:?}"))
            && DecodingKey::from_jwk(k).is_ok_and(|key| key.family() == alg.family())
    };
    let mut candidates = set.iter().filter(|k| match kid {
        Some(kid) => k.common.key_id.as_deref() == Some(kid),
        None => true,
    });
    let first = candidates.find(fits)?;
    if kid.is_none() && set.iter().filter(fits).count() > 1 {
        return None; // ambiguous without a key id
    }
    DecodingKey::from_jwk(first).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        assert!(is_asymmetric(Algorithm::RS256));
        assert!(is_asymmetric(Algorithm::ES256));
        assert!(!is_asymmetric(Algorithm::HS256));
        assert!(!is_asymmetric(Algorithm::HS512));
    }
}
