//! The entities stored in the catalog's system partitions.

use serde::{Deserialize, Serialize};

/// A row of `system.namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// Name.
    pub namespace_id: String,
    /// µs since the epoch.
    pub created_at: i64,
    /// Free-form JSON options.
    pub options: Option<String>,
}

/// A row of `system.users`. The user id is the user name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Id / name.
    pub user_id: String,
    /// bcrypt hash; empty = cannot log in (root before setup).
    pub password_hash: String,
    /// Role.
    pub role: kalamdb_commons::Role,
    /// Email.
    pub email: Option<String>,
    /// `internal` (root) or `password`.
    pub auth_type: String,
    /// Consecutive failed logins.
    pub failed_login_attempts: u32,
    /// µs; login refused until then.
    pub locked_until: Option<i64>,
    /// µs.
    pub last_login_at: Option<i64>,
    /// µs.
    pub created_at: i64,
    /// µs.
    pub updated_at: i64,
    /// µs; set by DROP USER (soft delete).
    pub deleted_at: Option<i64>,
    /// Tokens carry the generation they were issued under and are refused once it changed:
    /// a new account (also one re-created under a dropped one's name) starts at its creation
    /// time in µs, and a password or role change moves it on, so every earlier token dies.
    /// (0 for accounts stored before generations existed, matching their older tokens.)
    #[serde(default)]
    pub token_generation: u64,
    /// The external identity an `oauth` account signs in with (OIDC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthIdentity>,
}

/// An external identity: an OIDC provider's name (`[auth.oidc]`) and its `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OAuthIdentity {
    /// The provider (issuer) name.
    pub provider: String,
    /// The subject at that provider.
    pub subject: String,
}

impl UserRecord {
    /// A new, active user with no login history.
    pub fn new(
        user_id: &str,
        password_hash: String,
        role: kalamdb_commons::Role,
        email: Option<String>,
        auth_type: &str,
        now_micros: i64,
    ) -> Self {
        Self {
            user_id: user_id.to_string(),
            password_hash,
            role,
            email,
            auth_type: auth_type.to_string(),
            failed_login_attempts: 0,
            locked_until: None,
            last_login_at: None,
            created_at: now_micros,
            updated_at: now_micros,
            deleted_at: None,
            token_generation: now_micros.max(1) as u64,
            oauth: None,
        }
    }

    /// Invalidates every token issued so far for this account.
    pub fn revoke_tokens(&mut self, now_micros: i64) {
        self.token_generation = (self.token_generation + 1).max(now_micros.max(1) as u64);
    }
}

/// A row of `system.audit_log`: who did what, as whom, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Snowflake id (time-ordered).
    pub audit_id: i64,
    /// µs since the epoch.
    pub timestamp: i64,
    /// The authenticated caller.
    pub actor_user_id: String,
    /// `CREATE_TABLE`, `DROP_USER`, `EXECUTE_AS` …
    pub action: String,
    /// The object acted on.
    pub target: String,
    /// Extra detail (never a password).
    pub details: Option<String>,
    /// For `EXECUTE_AS`: the user acted as.
    pub subject_user_id: Option<String>,
    /// The client's address (absent in entries written before it was recorded).
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A row of `system.storages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageRecord {
    /// Id.
    pub storage_id: String,
    /// Display name.
    pub storage_name: String,
    /// Description.
    pub description: Option<String>,
    /// `filesystem` or `s3`.
    pub storage_type: String,
    /// Root path, or `s3://bucket/prefix`.
    pub base_directory: String,
    /// Credentials as a JSON object (`s3`: access_key_id, secret_access_key, session_token).
    /// Never shown by `system.storages`.
    #[serde(default)]
    pub credentials: Option<String>,
    /// Connection settings as a JSON object (`s3`: region, endpoint, allow_http).
    #[serde(default)]
    pub config_json: Option<String>,
    /// Template for SHARED tables' folders.
    pub shared_tables_template: String,
    /// Template for USER tables' folders.
    pub user_tables_template: String,
    /// µs.
    pub created_at: i64,
    /// µs.
    pub updated_at: i64,
}

impl StorageRecord {
    /// The built-in `local` storage (`<data_path>/storage`).
    pub fn local(now_micros: i64) -> Self {
        Self {
            storage_id: "local".into(),
            storage_name: "Local filesystem".into(),
            description: Some("Default storage under <data_path>/storage".into()),
            storage_type: "filesystem".into(),
            base_directory: "storage".into(),
            credentials: None,
            config_json: None,
            shared_tables_template: "{namespace}/{tableName}".into(),
            user_tables_template: "{namespace}/{tableName}/{userId}".into(),
            created_at: now_micros,
            updated_at: now_micros,
        }
    }
}

/// A row of `system.jobs`: one run of a background job (flush, compaction, stream eviction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Id (a `_seq`).
    pub job_id: String,
    /// `flush`, `compact` or `stream_eviction`.
    pub job_type: String,
    /// `namespace.table`, or `*` for all tables.
    pub target: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// `manual` (a statement) or `policy` (the scheduler).
    pub trigger: String,
    /// Who asked (`system` for the scheduler).
    pub created_by: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// When it started running.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Rows written or removed.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// What it did, or why it failed.
    pub message: Option<String>,
    /// Runs so far (a failed policy job is retried with backoff).
    pub attempts: u32,
}

/// A view: a named, stored `SELECT`, planned again by each query under the caller's identity
/// (so a view over a USER table shows every caller their own rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewRecord {
    /// Namespace.
    pub namespace_id: String,
    /// View name.
    pub view_name: String,
    /// The `SELECT` text; unqualified names resolve in the view's namespace.
    pub sql: String,
    /// Output columns as planned at creation: name, Arrow type (its text form), nullable.
    pub columns: Vec<(String, String, bool)>,
    /// Tables and views the query reads (`ns.name`), at creation.
    pub depends_on: Vec<String>,
    /// Who created it.
    pub created_by: String,
    /// µs.
    pub created_at: i64,
    /// µs.
    pub updated_at: i64,
}

/// A topic (`CREATE TOPIC`): a partitioned, append-only log of messages, fed by table changes
/// (its routes) or published to directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// `namespace.name`.
    pub topic_id: String,
    /// Namespace.
    pub namespace_id: String,
    /// Name within the namespace.
    pub name: String,
    /// Partitions (at least 1); a message goes to hash(key) mod partitions.
    pub partitions: u32,
    /// Messages older than this may be removed.
    pub retention_seconds: Option<u64>,
    /// A partition larger than this may lose its oldest messages.
    pub retention_max_bytes: Option<u64>,
    /// Whether retention keeps messages a consumer group has not acknowledged yet.
    #[serde(default = "keeps_unacked")]
    pub retention_keeps_unacked: bool,
    /// Tables whose changes are appended to the topic.
    pub routes: Vec<TopicRoute>,
    /// The storage its flushed messages go to (`system.storages`).
    #[serde(default = "local_storage")]
    pub storage_id: String,
    /// µs.
    pub created_at: i64,
    /// µs.
    pub updated_at: i64,
}

/// `ALTER TOPIC t ADD SOURCE ns.table ON <op> [WITH (PAYLOAD = …)]`: one kind of change of
/// one table appended to a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRoute {
    /// `namespace.table`.
    pub table_id: String,
    /// `insert`, `update` or `delete`.
    pub op: String,
    /// `key` (the primary key only), `full` (the row) or `diff` (changed columns, old and new).
    pub payload: String,
    /// `WHERE` clause a change's row must pass (the new row; a deleted row's last values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// A consumer group's committed position on one partition of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicOffsetRecord {
    /// `namespace.name`.
    pub topic_id: String,
    /// The group.
    pub group_id: String,
    /// The partition.
    pub partition_id: u32,
    /// The last offset acknowledged (messages up to it are done).
    pub last_acked_offset: u64,
    /// µs.
    pub updated_at: i64,
}

fn keeps_unacked() -> bool {
    true
}

fn local_storage() -> String {
    "local".into()
}
