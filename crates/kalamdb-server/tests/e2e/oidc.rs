//! OIDC sign-in (`[auth.oidc]`): tokens of external issuers, signed with keys generated here
//! and published as a JWKS by a small HTTP server on loopback (discovery for one issuer, a
//! direct `jwks_url` for the other), accepted or refused as a serious identity check must.

use crate::live::Ws;
use crate::support::{TestServer, rows};
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A signing key: its private half and its public JWK.
struct Key {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl Key {
    fn rsa(kid: &'static str) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    fn ec(kid: &'static str) -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let private = p256::SecretKey::random(&mut rand::thread_rng());
        let der = private.to_pkcs8_der().unwrap();
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
        )
    }

    fn new(kid: &'static str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Self {
            kid,
            alg,
            encoding,
            jwk,
        }
    }

    /// A token with `claims`, signed by this key and naming its `kid`.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The identity provider: serves discovery and the current JWKS, counting key fetches.
struct Idp {
    base: String,
    jwks: Arc<std::sync::Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
}

type IdpState = (String, Arc<std::sync::Mutex<Vec<Jwk>>>, Arc<AtomicUsize>);

impl Idp {
    async fn start(keys: &[&Key]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(std::sync::Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect(),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state: IdpState = (base.clone(), Arc::clone(&jwks), Arc::clone(&fetches));
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State((base, _, _)): State<IdpState>| async move {
                    axum::Json(json!({"issuer": base, "jwks_uri": format!("{base}/keys")}))
                }),
            )
            .route(
                "/keys",
                get(|State((_, jwks, fetches)): State<IdpState>| async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = jwks.lock().unwrap().clone();
                    axum::Json(JwkSet { keys })
                }),
            )
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            jwks,
            fetches,
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims of a token `iss` issues for `sub`, for `aud`, valid for an hour.
fn claims(iss: &str, sub: &str, aud: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": aud, "iat": now(), "exp": now() + 3600})
}

/// `SELECT CURRENT_USER(), CURRENT_ROLE()` with `token`: the names, or the HTTP status and
/// error code.
async fn whoami(s: &TestServer, token: &str) -> Result<(String, String), (u16, String)> {
    let (status, body) = s.sql(token, "SELECT CURRENT_USER(), CURRENT_ROLE()").await;
    if status != 200 {
        return Err((status, body["error"]["code"].as_str().unwrap_or("").into()));
    }
    let row = rows(&body["results"][0]).remove(0);
    Ok((
        row[0].as_str().unwrap().to_string(),
        row[1].as_str().unwrap().to_string(),
    ))
}

#[tokio::test]
async fn external_tokens_sign_in_mapped_users_and_bad_ones_are_refused() {
    let rsa1 = Key::rsa("rsa1");
    let ec1 = Key::ec("ec1");
    let idp = Idp::start(&[&rsa1, &ec1]).await;
    let iss = idp.base.clone();
    let auto_iss = format!("{}/auto", idp.base);
    let jwks_url = format!("{}/keys", idp.base);
    let s = TestServer::start_with(|c| {
        let oidc = &mut c.engine.auth.oidc;
        oidc.jwks_min_refetch_secs = 1;
        oidc.issuers = vec![
            kalamdb_core::config::OidcIssuerConfig {
                name: "idp".into(),
                issuer: iss.clone(),
                audience: vec!["app".into()],
                ..Default::default()
            },
            kalamdb_core::config::OidcIssuerConfig {
                name: "auto".into(),
                issuer: auto_iss.clone(),
                jwks_url,
                audience: vec!["app2".into()],
                username_claim: "preferred_username".into(),
                default_role: "service".into(),
                auto_create_users: true,
                ..Default::default()
            },
        ];
    })
    .await;
    let root = s.root_token().await;
    let alice = rsa1.sign(&claims(&iss, "s-alice", "app"));

    // A valid token of a subject no user is mapped to signs nobody in.
    assert_eq!(
        whoami(&s, &alice).await,
        Err((401, "INVALID_CREDENTIALS".into()))
    );
    s.ok(
        &root,
        "CREATE USER alice WITH OAUTH PROVIDER 'idp' SUBJECT 's-alice' ROLE 'user'",
    )
    .await;
    // Upstream's JSON spelling maps another subject.
    s.ok(
        &root,
        r#"CREATE USER carol WITH OAUTH '{"provider": "idp", "subject": "s-carol"}'"#,
    )
    .await;
    assert_eq!(
        whoami(&s, &alice).await,
        Ok(("alice".into(), "user".into()))
    );
    // ES256 too, and the mapping is by subject, not by key.
    let carol = ec1.sign(&claims(&iss, "s-carol", "app"));
    assert_eq!(
        whoami(&s, &carol).await,
        Ok(("carol".into(), "user".into()))
    );
    let users = s
        .ok(
            &root,
            "SELECT auth_type, auth_data FROM system.users WHERE user_id = 'alice'",
        )
        .await;
    assert_eq!(rows(&users)[0][0], "oauth");
    assert!(
        rows(&users)[0][1].to_string().contains("s-alice"),
        "{users}"
    );

    // Keys are fetched once (discovery, then the JWKS), not per token: fresh tokens (not in
    // the verified-token cache) are checked against the cached keys.
    let fetched = idp.fetches.load(Ordering::SeqCst);
    for i in 0..5 {
        let mut fresh = claims(&iss, "s-alice", "app");
        fresh["jti"] = json!(format!("fresh-{i}"));
        assert!(whoami(&s, &rsa1.sign(&fresh)).await.is_ok());
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), fetched);

    // The refusals.
    let refused = || Err((401, "INVALID_CREDENTIALS".to_string()));
    let mut expired = claims(&iss, "s-alice", "app");
    expired["exp"] = json!(now() - 3600);
    let mut early = claims(&iss, "s-alice", "app");
    early["nbf"] = json!(now() + 3600);
    let mut no_aud = claims(&iss, "s-alice", "app");
    no_aud.as_object_mut().unwrap().remove("aud");
    let stranger = Key::rsa("rsa1"); // same kid, different key: a forged signature
    let unknown_kid = Key::rsa("nope");
    let mut unmapped_email = claims(&iss, "s-dave", "app");
    unmapped_email["email"] = json!("alice@example.com");
    // alg confusion: the RSA public key (as its JWK modulus) used as an HS256 secret.
    let public_as_secret = match &rsa1.jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(p) => p.n.clone(),
        _ => unreachable!(),
    };
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa1".into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims(&iss, "s-alice", "app"),
        &EncodingKey::from_secret(public_as_secret.as_bytes()),
    )
    .unwrap();
    let cases = [
        (
            "wrong issuer",
            rsa1.sign(&claims("http://127.0.0.1:1/evil", "s-alice", "app")),
            refused(),
        ),
        (
            "wrong audience",
            rsa1.sign(&claims(&iss, "s-alice", "other-app")),
            refused(),
        ),
        ("no audience", rsa1.sign(&no_aud), refused()),
        (
            "expired",
            rsa1.sign(&expired),
            Err((401, "TOKEN_EXPIRED".to_string())),
        ),
        ("not yet valid", rsa1.sign(&early), refused()),
        (
            "forged signature",
            stranger.sign(&claims(&iss, "s-alice", "app")),
            refused(),
        ),
        (
            "unknown kid",
            unknown_kid.sign(&claims(&iss, "s-alice", "app")),
            refused(),
        ),
        ("alg confusion", confused, refused()),
        (
            "an email claim names no user",
            rsa1.sign(&unmapped_email),
            refused(),
        ),
    ];
    for (why, token, want) in cases {
        assert_eq!(whoami(&s, &token).await, want, "{why}");
    }

    // Tokens naming unknown key ids cannot make the server fetch keys for each of them: at
    // most one fetch per refetch interval.
    let before = idp.fetches.load(Ordering::SeqCst);
    for kid in ["r1", "r2", "r3", "r4", "r5"] {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(&iss, "s-alice", "app"),
            &unknown_kid.encoding,
        )
        .unwrap();
        assert_eq!(whoami(&s, &token).await, refused());
    }
    assert!(idp.fetches.load(Ordering::SeqCst) <= before + 1);

    // Key rotation: a key published after the last fetch is found by its new kid once the
    // refetch interval (1 s here) has passed.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rsa2 = Key::rsa("rsa2");
    idp.jwks.lock().unwrap().push(rsa2.jwk.clone());
    let rotated = rsa2.sign(&claims(&iss, "s-alice", "app"));
    assert_eq!(
        whoami(&s, &rotated).await,
        Ok(("alice".into(), "user".into()))
    );

    // Live queries accept the same tokens.
    let mut ws = Ws::connect(&s, Some(&alice), "").await;
    assert_eq!(ws.next().await["type"], "auth_success");
    drop(ws);

    // Our own HS256 tokens keep working next to OIDC.
    assert_eq!(
        whoami(&s, &root).await,
        Ok(("root".into(), "system".into()))
    );

    // A dropped user's external tokens stop working at once.
    s.ok(&root, "DROP USER alice").await;
    assert_eq!(
        whoami(&s, &alice).await,
        Err((401, "INVALID_CREDENTIALS".into()))
    );

    // CREATE USER checks the provider and that the subject is not mapped already.
    let (_, code, msg) = s
        .err(
            &root,
            "CREATE USER eve WITH OAUTH PROVIDER 'nope' SUBJECT 'x'",
        )
        .await;
    assert_eq!(code, "SQL_EXECUTION_ERROR", "{msg}");
    assert!(msg.contains("No OIDC provider 'nope'"), "{msg}");
    let (_, code, msg) = s
        .err(
            &root,
            "CREATE USER eve WITH OAUTH PROVIDER 'idp' SUBJECT 's-carol'",
        )
        .await;
    assert_eq!(code, "SQL_EXECUTION_ERROR", "{msg}");
    assert!(msg.contains("carol"), "{msg}");

    // Auto-created users: named by the configured claim, with the default role, once.
    let mut bob_claims = claims(&auto_iss, "s-bob", "app2");
    bob_claims["preferred_username"] = json!("bob");
    let bob = rsa1.sign(&bob_claims);
    assert_eq!(whoami(&s, &bob).await, Ok(("bob".into(), "service".into())));
    assert_eq!(whoami(&s, &bob).await, Ok(("bob".into(), "service".into())));
    // Another subject claiming the same name does not take the account over.
    let mut mallory = claims(&auto_iss, "s-mallory", "app2");
    mallory["preferred_username"] = json!("bob");
    assert_eq!(
        whoami(&s, &rsa1.sign(&mallory)).await,
        Err((401, "INVALID_CREDENTIALS".into()))
    );
    // Nor an existing password account.
    let mut root_claim = claims(&auto_iss, "s-root", "app2");
    root_claim["preferred_username"] = json!("root");
    assert_eq!(
        whoami(&s, &rsa1.sign(&root_claim)).await,
        Err((401, "INVALID_CREDENTIALS".into()))
    );
    // An issuer's token is not valid for the other issuer's audience.
    let mut cross = claims(&auto_iss, "s-bob", "app");
    cross["preferred_username"] = json!("bob");
    assert_eq!(
        whoami(&s, &rsa1.sign(&cross)).await,
        Err((401, "INVALID_CREDENTIALS".into()))
    );
}

#[tokio::test]
async fn a_bad_oidc_configuration_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(dir.path());
    config.engine.auth.oidc.issuers = vec![kalamdb_core::config::OidcIssuerConfig {
        issuer: "https://idp.example.com".into(),
        ..Default::default()
    }];
    let err = config.engine.validate().unwrap_err().to_string();
    assert!(err.contains("audience"), "{err}");
}
