//! WebSocket live-query messages (`GET /v1/ws`, protocol §6): what clients send and what the
//! server answers, with the exact field names and spellings official clients deserialize.

use crate::wire::SchemaField;
use serde::{Deserialize, Serialize};

/// A JSON object row: column name -> cell (cells encoded as in HTTP results).
pub type Row = serde_json::Map<String, serde_json::Value>;

/// Wire format options of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolOptions {
    /// `json` or `msgpack`.
    pub serialization: String,
    /// `gzip` or `none`.
    pub compression: String,
}

impl Default for ProtocolOptions {
    fn default() -> Self {
        Self {
            serialization: "json".into(),
            compression: "gzip".into(),
        }
    }
}

/// Client -> server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Authenticates a connection opened without an `Authorization` header.
    Authenticate {
        /// Only `jwt`.
        method: String,
        /// The access token.
        #[serde(default)]
        token: Option<String>,
        /// Wire options (required by the protocol).
        protocol: ProtocolOptions,
    },
    /// Starts a live query.
    Subscribe {
        /// The query and its options.
        subscription: SubscriptionRequest,
    },
    /// Asks for the next initial-data batch.
    NextBatch {
        /// The subscription.
        subscription_id: String,
        /// The last `_seq` the client received.
        #[serde(default)]
        last_seq_id: Option<i64>,
    },
    /// Ends a live query (no reply).
    Unsubscribe {
        /// The subscription.
        subscription_id: String,
    },
    /// Keepalive (no reply).
    Ping,
}

/// `subscribe.subscription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRequest {
    /// Client-chosen id, echoed in every message about this subscription.
    pub id: String,
    /// `SELECT cols|* FROM ns.table [WHERE …]`.
    pub sql: String,
    /// Absent or null: no initial data at all; `{}`: all current rows, in batches.
    #[serde(default)]
    pub options: Option<SubscriptionOptions>,
}

/// `subscribe.subscription.options`; unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionOptions {
    /// Rows per initial batch (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Initial data = the newest N rows (at most `batch_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rows: Option<usize>,
    /// Resume: only rows and changes with a larger `_seq`.
    #[serde(
        default,
        alias = "from_seq_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<i64>,
}

/// Progress of an initial load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// First batch, more to come.
    Loading,
    /// A later batch, more to come.
    LoadingBatch,
    /// Initial data complete; changes follow.
    Ready,
}

/// `batch_control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchControl {
    /// Batch number, from 0.
    pub batch_num: u32,
    /// Whether another batch follows (on `next_batch`).
    pub has_more: bool,
    /// Load status.
    pub status: BatchStatus,
    /// Largest `_seq` sent so far.
    pub last_seq_id: Option<i64>,
}

/// `change.change_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// `rows` holds the new rows.
    Insert,
    /// `rows` holds the new versions, `old_values` the changed columns of the old ones.
    Update,
    /// `old_values` holds the deleted rows (with the delete's `_seq`).
    Delete,
}

/// Server -> client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Authentication accepted.
    AuthSuccess {
        /// User id.
        user: String,
        /// Role, lower case.
        role: String,
        /// Wire options in effect.
        protocol: ProtocolOptions,
    },
    /// Authentication refused (the socket closes with 1008).
    AuthError {
        /// Why.
        message: String,
    },
    /// First reply to a successful `subscribe`.
    SubscriptionAck {
        /// The subscription.
        subscription_id: String,
        /// Always 0 (as upstream).
        total_rows: u64,
        /// State of the initial load.
        batch_control: BatchControl,
        /// Columns of the rows that follow.
        schema: Vec<SchemaField>,
    },
    /// A batch of initial rows, in ascending `_seq`.
    InitialDataBatch {
        /// The subscription.
        subscription_id: String,
        /// Rows.
        rows: Vec<Row>,
        /// State of the initial load.
        batch_control: BatchControl,
    },
    /// A committed change that the subscription sees.
    Change {
        /// The subscription.
        subscription_id: String,
        /// insert, update or delete.
        change_type: ChangeType,
        /// New rows (insert, update).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<Vec<Row>>,
        /// Old rows (update: changed columns; delete: whole rows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_values: Option<Vec<Row>>,
    },
    /// Something failed.
    Error {
        /// The subscription, or `protocol`, `rate_limit`, `subscribe`, `invalid_subscription`.
        subscription_id: String,
        /// Stable code (`INVALID_SQL`, `UNSUPPORTED`, …).
        code: String,
        /// Human-readable message.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_options_null_absent_and_unknown_keys() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"subscribe","subscription":{"id":"s1","sql":"SELECT 1","options":null}}"#,
        )
        .unwrap();
        assert!(
            matches!(m, ClientMessage::Subscribe { ref subscription } if subscription.options.is_none())
        );
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"subscribe","subscription":{"id":"s1","sql":"SELECT 1","options":{"from_seq_id":5,"auto_fetch_batches":true}}}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe { subscription } = m else {
            panic!("not a subscribe")
        };
        assert_eq!(subscription.options.unwrap().from, Some(5));
    }

    #[test]
    fn server_messages_use_protocol_spellings() {
        let m = ServerMessage::Change {
            subscription_id: "s".into(),
            change_type: ChangeType::Delete,
            rows: None,
            old_values: Some(vec![Row::new()]),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"change","subscription_id":"s","change_type":"delete","old_values":[{}]}"#
        );
        let b = BatchControl {
            batch_num: 1,
            has_more: true,
            status: BatchStatus::LoadingBatch,
            last_seq_id: None,
        };
        assert!(
            serde_json::to_string(&b)
                .unwrap()
                .contains(r#""status":"loading_batch""#)
        );
    }
}
