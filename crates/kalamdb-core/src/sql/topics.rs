//! Topic statements (`docs/protocol.md` §7.1): `CREATE/DROP/CLEAR/ALTER TOPIC` and
//! `SHOW TOPICS`/`DESCRIBE TOPIC` (dba/system), `CONSUME` and `ACK` (service, dba, system).
//! The topics themselves are [`crate::topics`].

use super::ddl::{job_line, resolve, table_output};
use super::parse::{TableRef, TopicCommand};
use super::session::{ExecCtx, Output};
use crate::access;
use crate::app_context::AppContext;
use kalamdb_catalog::catalog::{TopicRecord, TopicRoute};
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_catalog::jobs::JobReport;
use kalamdb_catalog::value::Value;
use kalamdb_commons::KalamDataType as K;

/// On a cluster member that does not lead the meta group: `NOT_LEADER` (the statement is
/// forwarded), as offsets, group claims and topic changes are handed out on that leader
/// (docs/cluster.md §6). Reads without a group run on any member.
fn on_meta_leader(app: &AppContext) -> Result<()> {
    match app.cluster_view().and_then(|v| v.meta_leader_url()) {
        Some(leader) => Err(KalamError::Store(kalamdb_store::StoreError::NotLeader {
            leader: Some(leader),
        })),
        None => Ok(()),
    }
}

/// Most partitions a topic may have.
const MAX_PARTITIONS: u32 = 256;
/// Most messages one `CONSUME` returns.
pub const MAX_CONSUME: u64 = 10_000;

/// Runs a topic statement.
pub(crate) async fn run(app: &AppContext, ctx: &ExecCtx, cmd: TopicCommand) -> Result<Output> {
    let reads_here = match &cmd {
        TopicCommand::Show(_) | TopicCommand::Describe(_) => true,
        TopicCommand::Consume { group, .. } => group.is_none(),
        _ => false,
    };
    if !reads_here {
        on_meta_leader(app)?;
    }
    let topics = app.topics();
    match cmd {
        TopicCommand::Create {
            topic,
            if_not_exists,
            partitions,
            options,
        } => {
            access::check_admin(&ctx.identity, "create topics")?;
            let id = topic_id(ctx, &topic);
            let ns = id.namespace.to_string();
            if app.catalog().namespace(&id.namespace)?.is_none() {
                return Err(KalamError::NotFound {
                    kind: "Namespace",
                    name: ns,
                });
            }
            kalamdb_commons::ids::validate_identifier("topic", id.table.as_str())
                .map_err(|e| KalamError::InvalidSql(e.to_string()))?;
            if topics.topic(&id.to_string()).is_ok() {
                if if_not_exists {
                    return Ok(Output::Message(format!("Topic '{id}' already exists")));
                }
                return Err(KalamError::AlreadyExists {
                    kind: "Topic",
                    name: id.to_string(),
                });
            }
            if partitions == 0 || partitions > MAX_PARTITIONS {
                return Err(KalamError::InvalidInput(format!(
                    "PARTITIONS must be between 1 and {MAX_PARTITIONS}"
                )));
            }
            let (mut retention_seconds, mut retention_max_bytes) = (None, None);
            let mut keeps_unacked = true;
            let mut storage_id = "local".to_string();
            for (name, value) in options {
                let number = || {
                    value.parse::<u64>().map_err(|_| {
                        KalamError::InvalidInput(format!("{name} must be a whole number"))
                    })
                };
                match name.as_str() {
                    "RETENTION_SECONDS" => retention_seconds = Some(number()?),
                    "RETENTION_MAX_BYTES" => retention_max_bytes = Some(number()?),
                    "RETENTION_KEEPS_UNACKED" => {
                        keeps_unacked = match value.to_ascii_lowercase().as_str() {
                            "true" => true,
                            "false" => false,
                            _ => {
                                return Err(KalamError::InvalidInput(
                                    "RETENTION_KEEPS_UNACKED must be true or false".into(),
                                ));
                            }
                        }
                    }
                    "STORAGE_ID" => {
                        if app.catalog().storage(&value)?.is_none() {
                            return Err(KalamError::NotFound {
                                kind: "Storage",
                                name: value,
                            });
                        }
                        storage_id = value;
                    }
                    other => {
                        return Err(KalamError::InvalidInput(format!(
                            "unknown topic option {other} (RETENTION_SECONDS, \
                             RETENTION_MAX_BYTES, RETENTION_KEEPS_UNACKED and STORAGE_ID are \
                             known)"
                        )));
                    }
                }
            }
            let now = chrono::Utc::now().timestamp_micros();
            topics
                .create(TopicRecord {
                    topic_id: id.to_string(),
                    namespace_id: ns,
                    name: id.table.to_string(),
                    partitions,
                    retention_seconds,
                    retention_max_bytes,
                    retention_keeps_unacked: keeps_unacked,
                    routes: Vec::new(),
                    storage_id,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            Ok(Output::Message(format!(
                "Topic '{id}' created with {partitions} partition(s)"
            )))
        }
        TopicCommand::Drop { topic, if_exists } => {
            access::check_admin(&ctx.identity, "drop topics")?;
            let id = topic_id(ctx, &topic).to_string();
            if if_exists && topics.topic(&id).is_err() {
                return Ok(Output::Message(format!("Topic '{id}' does not exist")));
            }
            let _files = app.tables().file_changes().await;
            topics.drop_topic(&id).await?;
            Ok(Output::Message(format!("Topic '{id}' dropped")))
        }
        TopicCommand::Clear(topic) => {
            access::check_admin(&ctx.identity, "clear topics")?;
            let id = topic_id(ctx, &topic).to_string();
            let _files = app.tables().file_changes().await;
            let removed = topics.clear(&id).await?;
            Ok(Output::Message(format!(
                "Topic '{id}' cleared: {removed} message(s) removed"
            )))
        }
        TopicCommand::Flush(topic) => {
            access::check_storage_maintenance(&ctx.identity)?;
            let id = topic_id(ctx, &topic).to_string();
            topics.topic(&id)?;
            let by = ctx.identity.user_id.as_str();
            let outcome = app
                .jobs()
                .run("topic_flush", &id, "manual", by, 1, |_| async {
                    let _files = app.tables().file_changes().await;
                    let done = topics.flush(Some(&id), None, app.tables().faults()).await?;
                    Ok(JobReport {
                        rows: done.messages,
                        bytes: done.bytes,
                        message: format!(
                            "Flushed {} message(s) of topic {id}, {} bytes",
                            done.messages, done.bytes
                        ),
                    })
                })
                .await?;
            Ok(Output::Message(job_line(outcome, "topic_flush", &id)))
        }
        TopicCommand::AddSource {
            topic,
            table,
            op,
            payload,
            filter,
        } => {
            access::check_admin(&ctx.identity, "change topics")?;
            let id = topic_id(ctx, &topic).to_string();
            let table_id = resolve(ctx, &table);
            let source = app.schema_registry().require(&table_id)?;
            if let Some(text) = &filter {
                // Refused now rather than at the first change: unknown columns, unsupported
                // shapes.
                topics.compile_filter(text, &source.def)?;
            }
            let mut def = topics.topic(&id)?;
            let route = TopicRoute {
                table_id: table_id.to_string(),
                op,
                payload,
                filter,
            };
            if def
                .routes
                .iter()
                .any(|r| r.table_id == route.table_id && r.op == route.op)
            {
                return Err(KalamError::AlreadyExists {
                    kind: "Source",
                    name: format!("{} ON {} of topic {id}", route.table_id, route.op),
                });
            }
            let message = format!(
                "Topic '{id}' now receives {} changes of {} ({} payload)",
                route.op.to_ascii_uppercase(),
                route.table_id,
                route.payload
            );
            def.routes.push(route);
            def.updated_at = chrono::Utc::now().timestamp_micros();
            topics.update(def)?;
            Ok(Output::Message(message))
        }
        TopicCommand::DropSource { topic, table, op } => {
            access::check_admin(&ctx.identity, "change topics")?;
            let id = topic_id(ctx, &topic).to_string();
            let table_id = resolve(ctx, &table).to_string();
            let mut def = topics.topic(&id)?;
            let before = def.routes.len();
            def.routes
                .retain(|r| r.table_id != table_id || op.as_ref().is_some_and(|o| *o != r.op));
            let removed = before - def.routes.len();
            if removed == 0 {
                return Err(KalamError::NotFound {
                    kind: "Source",
                    name: format!("{table_id} of topic {id}"),
                });
            }
            def.updated_at = chrono::Utc::now().timestamp_micros();
            topics.update(def)?;
            Ok(Output::Message(format!(
                "Topic '{id}': {removed} source(s) of {table_id} dropped"
            )))
        }
        TopicCommand::Consume {
            topic,
            group,
            partition,
            start,
            limit,
        } => {
            if limit == 0 || limit > MAX_CONSUME {
                return Err(KalamError::InvalidInput(format!(
                    "LIMIT must be between 1 and {MAX_CONSUME}"
                )));
            }
            let id = topic_id(ctx, &topic).to_string();
            let fetch = topics
                .consume(
                    &ctx.identity,
                    &id,
                    group.as_deref(),
                    partition,
                    start,
                    limit as usize,
                )
                .await?;
            let rows = fetch
                .messages
                .into_iter()
                .map(|m| {
                    let opt = |s: Option<String>| s.map_or(Value::Null, Value::Text);
                    vec![
                        Value::Text(id.clone()),
                        Value::I32(m.partition as i32),
                        Value::I64(m.offset as i64),
                        opt(m.message.key),
                        Value::Text(String::from_utf8_lossy(&m.message.payload).into_owned()),
                        Value::I64(m.message.ts_ms),
                        opt(m.message.user),
                        Value::Text(m.message.op.as_str().to_ascii_lowercase()),
                    ]
                })
                .collect();
            table_output(
                &[
                    ("topic_id", K::Text, false),
                    ("partition_id", K::Int, false),
                    ("offset", K::BigInt, false),
                    ("key", K::Text, true),
                    ("payload", K::Text, false),
                    ("timestamp_ms", K::BigInt, false),
                    ("user_id", K::Text, true),
                    ("op", K::Text, false),
                ],
                rows,
            )
        }
        TopicCommand::Ack {
            topic,
            group,
            partition,
            upto,
        } => {
            let id = topic_id(ctx, &topic).to_string();
            let done = topics
                .ack(&ctx.identity, &id, &group, partition, upto)
                .await?;
            Ok(Output::Message(format!(
                "Group '{group}' acknowledged {id} partition {partition} up to offset {done}"
            )))
        }
        TopicCommand::Show(ns) => {
            access::check_admin(&ctx.identity, "list topics")?;
            let rows = app
                .catalog()
                .topics()?
                .into_iter()
                .filter(|t| ns.as_ref().is_none_or(|n| *n == t.namespace_id))
                .map(|t| {
                    vec![
                        Value::Text(t.topic_id),
                        Value::I32(t.partitions as i32),
                        Value::Text(
                            t.routes
                                .iter()
                                .map(|r| format!("{} ON {} ({})", r.table_id, r.op, r.payload))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                    ]
                })
                .collect();
            table_output(
                &[
                    ("topic_id", K::Text, false),
                    ("partitions", K::Int, false),
                    ("sources", K::Text, false),
                ],
                rows,
            )
        }
        TopicCommand::Describe(topic) => {
            access::check_admin(&ctx.identity, "describe topics")?;
            let id = topic_id(ctx, &topic).to_string();
            let def = topics.topic(&id)?;
            let ends = topics.end_offsets(&id)?;
            let rows = ends
                .iter()
                .enumerate()
                .map(|(p, end)| {
                    vec![
                        Value::I32(p as i32),
                        Value::I64(*end as i64),
                        Value::Text(serde_json::to_string(&def.routes).unwrap_or_default()),
                    ]
                })
                .collect();
            table_output(
                &[
                    ("partition_id", K::Int, false),
                    ("next_offset", K::BigInt, false),
                    ("sources", K::Json, false),
                ],
                rows,
            )
        }
    }
}

/// The id (`namespace.name`) a statement of `ctx` means by `topic`.
fn topic_id(ctx: &ExecCtx, topic: &TableRef) -> kalamdb_commons::TableId {
    resolve(ctx, topic)
}
