//! The engine's configuration: one typed struct per `server.toml` section it reads (the
//! transport's `[websocket]` belongs to `kalamdb-api`; the server composes the two).
//!
//! Every option has a default (an absent file means built-in defaults) and can be overridden
//! by an environment variable named `KALAMDB_<SECTION>_<KEY>` (upper case), e.g.
//! `KALAMDB_STORAGE_SYNC_WRITES=true`. Upstream's names are honoured as aliases
//! ([`ENV_ALIASES`]): `KALAMDB_DATA_DIR`, `KALAMDB_NODE_ID`, `KALAMDB_ROOT_PASSWORD`,
//! `KALAMDB_JWT_SECRET`, `KALAMDB_LOG_LEVEL`, `KALAMDB_JWT_EXPIRY_HOURS`. [`Config::validate`]
//! turns bad values into clear startup errors. `server.example.toml` documents every key; a
//! test of the server crate checks it lists exactly the keys declared.

pub mod cluster;

use kalamdb_commons::NodeId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Upstream environment names mapped to `(section, key)`.
pub const ENV_ALIASES: &[(&str, &str, &str)] = &[
    ("KALAMDB_DATA_DIR", "storage", "data_path"),
    ("KALAMDB_NODE_ID", "server", "node_id"),
    ("KALAMDB_ROOT_PASSWORD", "auth", "root_password"),
    ("KALAMDB_JWT_SECRET", "auth", "jwt_secret"),
    ("KALAMDB_JWT_EXPIRY_HOURS", "auth", "jwt_expiry_hours"),
    ("KALAMDB_LOG_LEVEL", "logging", "level"),
];

/// The placeholder JWT secret; refused unless the server only listens on loopback.
pub const PLACEHOLDER_JWT_SECRET: &str = "CHANGE_ME_IN_PRODUCTION";

/// A configuration problem found at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or an environment value does not parse.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration value {key}: {reason}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[auth]`
    #[serde(alias = "authentication")]
    pub auth: AuthConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[logging]`
    pub logging: LoggingConfig,
    /// `[metrics]`
    pub metrics: MetricsConfig,
    /// `[stream]`
    pub stream: StreamConfig,
    /// `[query]`
    pub query: QueryConfig,
    /// `[transactions]`
    pub transactions: TransactionsConfig,
    /// `[topics]`
    pub topics: TopicsConfig,
    /// `[cluster]`: absent = a single server (`docs/cluster.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<cluster::ClusterConfig>,
}

/// `[topics]`: topics and consumer groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Seconds a consumer group's fetched range stays claimed without an ACK before it is
    /// handed out again (to any member of the group).
    pub visibility_timeout_secs: u64,
    /// Seconds between runs of the job that removes messages past their topic's retention.
    pub retention_interval_secs: u64,
    /// Messages stay in the hot store at least this long, then a `topic_flush` job moves them
    /// to Parquet segments in the topic's storage (0: only `STORAGE FLUSH TOPIC` does).
    pub flush_after_secs: u64,
    /// Seconds between checks for messages due to be flushed.
    pub flush_interval_secs: u64,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            visibility_timeout_secs: 30,
            retention_interval_secs: 60,
            flush_after_secs: 300,
            flush_interval_secs: 60,
        }
    }
}

/// `[transactions]`: explicit transactions (`BEGIN` … `COMMIT`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionsConfig {
    /// Seconds a transaction continued across requests may go without a statement before it
    /// is rolled back.
    pub idle_timeout_secs: u64,
    /// Seconds any transaction may stay open in all before it is rolled back (its snapshot
    /// holds back compactions of the tables it could read).
    pub max_duration_secs: u64,
    /// MiB of staged rows one transaction may hold; a statement that would exceed it fails
    /// (and aborts the transaction).
    pub max_buffer_mb: u64,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 60,
            max_duration_secs: 300,
            max_buffer_mb: 100,
        }
    }
}

/// `[query]`: how queries run: time, memory and threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Seconds a request's statements may run before they are cancelled (`QUERY_TIMEOUT`);
    /// 0 = no limit.
    pub timeout_secs: u64,
    /// Memory all running queries may hold for sorts, aggregates, joins and results, in MiB;
    /// 0 = a quarter of the machine's RAM. Sorts, aggregates and joins spill to
    /// `<data_path>/tmp` beyond it; other work fails with `RESOURCE_EXHAUSTED`.
    pub memory_limit_mb: usize,
    /// Threads that plan and execute queries, apart from the threads serving connections;
    /// 0 = one per core.
    pub worker_threads: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            memory_limit_mb: 0,
            worker_threads: 0,
        }
    }
}

impl QueryConfig {
    /// The memory limit in bytes ([`QueryConfig::memory_limit_mb`], or a quarter of RAM).
    pub fn memory_limit_bytes(&self) -> usize {
        if self.memory_limit_mb > 0 {
            return self.memory_limit_mb.saturating_mul(1024 * 1024);
        }
        // SAFETY: sysconf only reads system constants.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages <= 0 || page <= 0 {
            return 1024 * 1024 * 1024;
        }
        (pages as usize).saturating_mul(page as usize) / 4
    }

    /// The number of query threads ([`QueryConfig::worker_threads`], or one per core).
    pub fn threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// `[stream]`: STREAM tables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Seconds between runs of the job that deletes expired STREAM rows (they are invisible to
    /// reads as soon as they expire; the job frees their storage).
    pub eviction_interval_secs: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            eviction_interval_secs: 60,
        }
    }
}

/// `[server]`: network and identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Bind address.
    pub host: String,
    /// Bind port (0 = any free port).
    pub port: u16,
    /// This node's id: letters, digits, hyphens, at most 64 characters.
    pub node_id: String,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Seconds a connection has to send a complete request head, counted from its opening or
    /// from its previous response: slow senders and idle keep-alive connections are closed
    /// after it.
    pub request_header_timeout_secs: u64,
    /// Seconds a request has to deliver its whole body (408 `REQUEST_TIMEOUT` beyond).
    pub request_body_timeout_secs: u64,
    /// Seconds a client may take to accept 64 KiB of a response (or of WebSocket messages)
    /// the server is waiting to send, before it is disconnected.
    pub response_write_timeout_secs: u64,
    /// Open connections the server accepts at once; more are closed on accept. Also bounded
    /// by the process's file limit, which the server raises to its hard limit at start.
    pub max_connections: usize,
    /// Open connections one client IP address may hold at once (at most half of the
    /// connections the server accepts).
    pub max_connections_per_ip: usize,
    /// Serve the web console at `/ui`.
    pub ui: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            node_id: "node-1".into(),
            shutdown_timeout_secs: 10,
            request_header_timeout_secs: 30,
            request_body_timeout_secs: 30,
            response_write_timeout_secs: 30,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            ui: true,
        }
    }
}

/// `[storage]`: where data lives and how durable writes are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory; RocksDB lives in `<data_path>/rocksdb`, cold files in `<data_path>/storage`.
    pub data_path: String,
    /// fsync every commit. Off: an acknowledged write survives a process crash (WAL) but may be
    /// lost on power loss. On: it survives power loss too, at one fsync per write.
    pub sync_writes: bool,
    /// RocksDB block cache in MiB.
    pub block_cache_mb: usize,
    /// RocksDB memtable size per partition in MiB.
    pub write_buffer_mb: usize,
    /// Flush policy of tables created without `FLUSH_POLICY`: `rows:N`, `interval:S` or both;
    /// empty: such tables flush only on `STORAGE FLUSH` (upstream's behaviour).
    pub default_flush_policy: String,
    /// Milliseconds between checks of the flush policies.
    pub flush_check_interval_ms: u64,
    /// Seconds a delete's tombstone survives compaction, so a live query resumed with `from`
    /// up to this long ago still learns of the delete. 0: compaction drops every tombstone.
    pub tombstone_retention_secs: u64,
    /// Compaction policy: after a flush leaves a scope with more than this many segments, the
    /// newest ones of similar size are merged into one. 0: only `STORAGE COMPACT` compacts.
    pub compaction_trigger_segments: usize,
    /// Milliseconds a segment merged away by compaction is kept for readers that still hold
    /// the previous manifest; 0 deletes it at once.
    pub superseded_file_grace_ms: u64,
    /// MiB of decoded cold segments kept for primary-key lookups and compactions (scans
    /// stream segments and do not use it); least recently used ones are evicted first.
    pub segment_cache_mb: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_path: "./data".into(),
            sync_writes: false,
            block_cache_mb: 8,
            write_buffer_mb: 4,
            default_flush_policy: String::new(),
            flush_check_interval_ms: 1000,
            tombstone_retention_secs: 86_400,
            compaction_trigger_segments: 16,
            superseded_file_grace_ms: 30_000,
            segment_cache_mb: 256,
        }
    }
}

/// `[auth]`: users, passwords and tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret, at least 32 characters unless the server only listens on loopback.
    pub jwt_secret: String,
    /// Access-token lifetime in hours; refresh tokens live 7 times longer.
    pub jwt_expiry_hours: u64,
    /// Password of the built-in `root` user; empty = first-run setup via `/v1/api/auth/setup`.
    pub root_password: String,
    /// bcrypt cost (4..=31); 12 costs about 0.25 s per login on a small machine.
    pub bcrypt_cost: u32,
    /// Minimum password length for new passwords.
    pub min_password_length: usize,
    /// Allow `/v1/api/auth/setup` and `/status` from non-loopback addresses.
    pub allow_remote_setup: bool,
    /// Consecutive failed logins that lock an account.
    pub max_failed_logins: u32,
    /// How long a locked account stays locked, in seconds.
    pub lockout_seconds: u64,
    /// Requests per second one client IP may make to the login, refresh and setup endpoints.
    pub auth_requests_per_ip_per_sec: u32,
    /// `[auth.oidc]`: external identity providers whose tokens sign users in.
    pub oidc: OidcConfig,
}

/// The `iss` of this server's own tokens (no external issuer may use it).
pub const TOKEN_ISSUER: &str = "kalamdb";

/// `[auth.oidc]`: trusted OpenID Connect issuers (Google, Azure AD, Auth0, Keycloak, Firebase
/// …). Their RS256/ES256 ID or access tokens are accepted as bearer tokens next to our own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The trusted issuers (`[[auth.oidc.issuers]]`); none = OIDC off.
    pub issuers: Vec<OidcIssuerConfig>,
    /// How long fetched signing keys are used before they are fetched again, in seconds.
    pub jwks_cache_secs: u64,
    /// A token naming a key id the cached keys lack makes the keys be fetched again, at most
    /// once per this many seconds per issuer (key rotation without a flood of fetches).
    pub jwks_min_refetch_secs: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            jwks_cache_secs: 3600,
            jwks_min_refetch_secs: 10,
        }
    }
}

/// One trusted issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The provider's name in `CREATE USER … WITH OAUTH PROVIDER '<name>' SUBJECT '…'`;
    /// empty = the issuer URL.
    pub name: String,
    /// The `iss` claim its tokens carry, e.g. `https://accounts.google.com`.
    pub issuer: String,
    /// Where its signing keys (a JWKS) are; empty = discovered from
    /// `<issuer>/.well-known/openid-configuration`.
    pub jwks_url: String,
    /// A JWKS file read instead of fetching (static keys, air-gapped set-ups).
    pub jwks_file: String,
    /// Accepted `aud` values (the app's client id); a token must name one. Required.
    pub audience: Vec<String>,
    /// The claim whose value names a user created on first sign-in (`sub`,
    /// `preferred_username` …); its value must be a valid user name, or the sign-in is refused.
    pub username_claim: String,
    /// The role of users created on first sign-in.
    pub default_role: String,
    /// Create a user the first time an unknown subject signs in; otherwise only subjects
    /// mapped by `CREATE USER … WITH OAUTH …` sign in.
    pub auto_create_users: bool,
}

impl Default for OidcIssuerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            issuer: String::new(),
            jwks_url: String::new(),
            jwks_file: String::new(),
            audience: Vec::new(),
            username_claim: "sub".into(),
            default_role: "user".into(),
            auto_create_users: false,
        }
    }
}

impl OidcConfig {
    /// Every issuer names its `iss` and an audience, at most one key source, a known role, and
    /// a provider name no other issuer has.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "auth.oidc.issuers",
            reason,
        };
        for (key, value) in [
            ("auth.oidc.jwks_cache_secs", self.jwks_cache_secs),
            (
                "auth.oidc.jwks_min_refetch_secs",
                self.jwks_min_refetch_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be > 0 (a token with a random key id must not make every \
                             request fetch keys)"
                        .into(),
                });
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut urls = std::collections::HashSet::new();
        for i in &self.issuers {
            if !urls.insert(i.issuer.as_str()) {
                return Err(invalid(format!("issuer {} is listed twice", i.issuer)));
            }
            if i.issuer.is_empty() {
                return Err(invalid(
                    "every issuer needs `issuer` (its iss claim)".into(),
                ));
            }
            if i.issuer == TOKEN_ISSUER {
                return Err(invalid(format!(
                    "'{}' is this server's own issuer",
                    i.issuer
                )));
            }
            if i.audience.is_empty() {
                return Err(invalid(format!(
                    "issuer {} needs `audience` (the client ids its tokens are for)",
                    i.issuer
                )));
            }
            if !i.jwks_url.is_empty() && !i.jwks_file.is_empty() {
                return Err(invalid(format!(
                    "issuer {}: set jwks_url or jwks_file, not both",
                    i.issuer
                )));
            }
            match kalamdb_commons::Role::parse(&i.default_role) {
                None => {
                    return Err(invalid(format!(
                        "issuer {}: unknown default_role '{}'",
                        i.issuer, i.default_role
                    )));
                }
                // Anyone the provider signs in would become an administrator.
                Some(role) if role.is_admin() && i.auto_create_users => {
                    return Err(invalid(format!(
                        "issuer {}: users created on first sign-in cannot get the admin role \
                         '{}'; create admins with CREATE USER … WITH OAUTH",
                        i.issuer, i.default_role
                    )));
                }
                Some(_) => {}
            }
            if !names.insert(i.provider()) {
                return Err(invalid(format!(
                    "two issuers share the provider name '{}'",
                    i.provider()
                )));
            }
        }
        Ok(())
    }
}

impl OidcIssuerConfig {
    /// The provider name users are mapped under.
    pub fn provider(&self) -> &str {
        if self.name.is_empty() {
            &self.issuer
        } else {
            &self.name
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: PLACEHOLDER_JWT_SECRET.into(),
            jwt_expiry_hours: 24,
            root_password: String::new(),
            bcrypt_cost: 12,
            min_password_length: 8,
            allow_remote_setup: false,
            max_failed_logins: 5,
            lockout_seconds: 900,
            auth_requests_per_ip_per_sec: 20,
            oidc: OidcConfig::default(),
        }
    }
}

/// `[limits]`: request size limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted HTTP body in bytes.
    pub max_request_body_bytes: usize,
    /// Largest file of a FILE column, in bytes (a multipart request is also bound by
    /// `max_request_body_bytes`).
    pub max_file_bytes: usize,
    /// Most files one multipart request may carry.
    pub max_files_per_request: usize,
    /// Largest accepted SQL text in bytes.
    pub max_sql_bytes: usize,
    /// Most `$n` parameters per request.
    pub max_params: usize,
    /// Largest single parameter in bytes.
    pub max_param_bytes: usize,
    /// Deepest expression nesting a statement may have: `a + b + c` is 3 deep, and so is a
    /// chain of three `UNION ALL`s. Deeper statements are refused (`INVALID_SQL`) before
    /// planning.
    pub max_expression_depth: usize,
    /// Most expression nodes one statement may have (an `IN` list of 10,000 literals has
    /// about 10,000).
    pub max_expression_nodes: usize,
    /// Most table references (tables, views, subqueries, table functions) in one statement.
    pub max_table_references: usize,
    /// Most nodes of a query's logical plan, with views and `WITH` queries expanded at every
    /// use (so a short statement that doubles at every level is refused before optimizing).
    pub max_plan_nodes: usize,
    /// Largest single value a function may build (`repeat`, `lpad`, `array_repeat`,
    /// `range` …), in bytes; larger ones fail with `RESOURCE_EXHAUSTED` before they are
    /// allocated.
    pub max_value_bytes: usize,
    /// Largest result one request may return, in bytes of its rows in memory; larger ones
    /// fail with `RESOURCE_EXHAUSTED` (use LIMIT, or page with a key range).
    pub max_result_bytes: usize,
    /// Longest client-chosen name accepted: subscription ids, namespace names in requests,
    /// login names, in bytes.
    pub max_name_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 10 * 1024 * 1024,
            max_file_bytes: 5 * 1024 * 1024,
            max_files_per_request: 10,
            max_sql_bytes: 1024 * 1024,
            max_params: 50,
            max_param_bytes: 512 * 1024,
            max_expression_depth: 1_000,
            max_expression_nodes: 100_000,
            max_table_references: 1_000,
            max_plan_nodes: 10_000,
            max_value_bytes: 64 * 1024 * 1024,
            max_result_bytes: 128 * 1024 * 1024,
            max_name_bytes: 256,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Log filter (`info`, `debug`, `kalamdb_core=debug,info` …).
    pub level: String,
    /// `text` (one human-readable line per event) or `json` (one JSON object per line).
    pub format: String,
    /// Statements that take at least this many milliseconds are logged (target
    /// `kalamdb::slow_query`, with user and statement); 0 = off.
    pub slow_query_ms: u64,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            slow_query_ms: 1000,
        }
    }
}

/// `[metrics]`: `GET /metrics` (Prometheus text format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` at all.
    pub enabled: bool,
    /// Bearer token a scraper must send; empty = only clients on loopback may scrape.
    pub token: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: String::new(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing file is empty (built-in defaults).
    pub fn read_file(path: &Path) -> Result<String, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses TOML text (no environment, no validation).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Applies `KALAMDB_<SECTION>_<KEY>` variables and the upstream aliases.
    pub fn with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table =
            toml::Table::try_from(&self).map_err(|e| ConfigError::Parse(e.to_string()))?;
        apply_env(&mut table, env)?;
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))
    }

    /// Checks values that have rules beyond their type.
    pub fn validate(&self) -> Result<(), ConfigError> {
        NodeId::parse(&self.server.node_id).map_err(|e| ConfigError::Invalid {
            key: "server.node_id",
            reason: format!("{e} (letters, digits and hyphens, at most 64 characters)"),
        })?;
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            return Err(ConfigError::Invalid {
                key: "auth.bcrypt_cost",
                reason: format!("{} is outside 4..=31", self.auth.bcrypt_cost),
            });
        }
        if self.stream.eviction_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "stream.eviction_interval_secs",
                reason: "must be > 0".into(),
            });
        }
        let (srv, lim) = (&self.server, &self.limits);
        for (key, value) in [
            (
                "server.request_header_timeout_secs",
                srv.request_header_timeout_secs as usize,
            ),
            (
                "server.request_body_timeout_secs",
                srv.request_body_timeout_secs as usize,
            ),
            (
                "server.response_write_timeout_secs",
                srv.response_write_timeout_secs as usize,
            ),
            ("server.max_connections", srv.max_connections),
            ("server.max_connections_per_ip", srv.max_connections_per_ip),
            ("limits.max_expression_depth", lim.max_expression_depth),
            ("limits.max_expression_nodes", lim.max_expression_nodes),
            ("limits.max_table_references", lim.max_table_references),
            ("limits.max_plan_nodes", lim.max_plan_nodes),
            ("limits.max_value_bytes", lim.max_value_bytes),
            ("limits.max_result_bytes", lim.max_result_bytes),
            ("limits.max_name_bytes", lim.max_name_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be > 0".into(),
                });
            }
        }
        if self.auth.auth_requests_per_ip_per_sec == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.auth_requests_per_ip_per_sec",
                reason: "must be > 0".into(),
            });
        }
        if self.auth.max_failed_logins == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.max_failed_logins",
                reason: "must be > 0".into(),
            });
        }
        if self.auth.jwt_expiry_hours == 0 {
            return Err(ConfigError::Invalid {
                key: "auth.jwt_expiry_hours",
                reason: "must be > 0".into(),
            });
        }
        let loopback = matches!(self.server.host.as_str(), "127.0.0.1" | "localhost" | "::1");
        let weak =
            self.auth.jwt_secret == PLACEHOLDER_JWT_SECRET || self.auth.jwt_secret.len() < 32;
        if weak && !loopback {
            return Err(ConfigError::Invalid {
                key: "auth.jwt_secret",
                reason: "set a secret of at least 32 characters (KALAMDB_JWT_SECRET) before \
                         listening on a non-loopback address"
                    .into(),
            });
        }
        self.auth.oidc.validate()?;
        if !matches!(self.logging.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "logging.format",
                reason: format!("'{}' is neither text nor json", self.logging.format),
            });
        }
        if self.storage.data_path.is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.data_path",
                reason: "must not be empty".into(),
            });
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }

    /// The node id, validated.
    pub fn node_id(&self) -> NodeId {
        NodeId::parse(&self.server.node_id).unwrap_or_else(|_| NodeId::new("node-1"))
    }
}

/// Applies `KALAMDB_<SECTION>_<KEY>` variables and the upstream aliases ([`ENV_ALIASES`]) to
/// `table`, a configuration file's sections with every key present (its defaults filled in):
/// only keys it has are set, with the type of their current value.
pub fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("KALAMDB_") else {
            continue;
        };
        let target = ENV_ALIASES
            .iter()
            .find(|(alias, _, _)| *alias == name)
            .map(|(_, s, k)| (s.to_string(), k.to_string()))
            .or_else(|| {
                table.iter().find_map(|(section, v)| {
                    let prefix = format!("{}_", section.to_ascii_uppercase());
                    let key = rest.strip_prefix(&prefix)?.to_ascii_lowercase();
                    v.as_table()?
                        .contains_key(&key)
                        .then(|| (section.clone(), key))
                })
            });
        let Some((section, key)) = target else {
            continue;
        };
        let Some(slot) = table
            .get_mut(&section)
            .and_then(|s| s.as_table_mut())
            .and_then(|s| s.get_mut(&key))
        else {
            continue;
        };
        *slot = match slot {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| ConfigError::Parse(format!("{name}={raw:?} is not an integer")))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                "1" | "true" | "TRUE" | "yes" | "on" => true,
                "0" | "false" | "FALSE" | "no" | "off" => false,
                _ => {
                    return Err(ConfigError::Parse(format!(
                        "{name}={raw:?} is not a boolean"
                    )));
                }
            }),
            other => {
                return Err(ConfigError::Parse(format!(
                    "{name}: cannot override {other:?}"
                )));
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_env_overrides() {
        let c = Config::default()
            .with_env(env(&[
                ("KALAMDB_SERVER_PORT", "9000"),
                ("KALAMDB_DATA_DIR", "/tmp/x"),
                ("KALAMDB_STORAGE_SYNC_WRITES", "true"),
                ("KALAMDB_ROOT_PASSWORD", "pw"),
                ("KALAMDB_UNRELATED", "ignored"),
            ]))
            .unwrap();
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.storage.data_path, "/tmp/x");
        assert!(c.storage.sync_writes);
        assert_eq!(c.auth.root_password, "pw");
        assert_eq!(c.server.host, "127.0.0.1");
        assert!(
            Config::default()
                .with_env(env(&[("KALAMDB_SERVER_PORT", "x")]))
                .is_err()
        );
    }

    #[test]
    fn node_id_is_validated() {
        let mut c = Config::default();
        c.server.node_id = "bad id!".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("server.node_id"), "{err}");
        c.server.node_id = "node-prod-01".into();
        c.validate().unwrap();
    }

    #[test]
    fn weak_secret_refused_off_loopback() {
        let mut c = Config::default();
        c.server.host = "0.0.0.0".into();
        assert!(c.validate().is_err());
        c.auth.jwt_secret = "x".repeat(32);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(Config::from_toml("[server]\nhots = \"x\"\n").is_err());
        let c = Config::from_toml("[authentication]\nbcrypt_cost = 4\n").unwrap();
        assert_eq!(c.auth.bcrypt_cost, 4);
    }
}
