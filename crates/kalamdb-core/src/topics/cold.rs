//! A topic partition's cold tier: flushed messages as Parquet segments in the folder
//! `system/topics/<ns>.<name>/p<N>` of the topic's storage, listed by that folder's manifest
//! (the same manifest and segment rules as tables' cold tier, `kalamdb_filestore`).
//!
//! A segment holds the consecutive offsets `min_seq..=max_seq` of its `SegmentMeta` (a flush
//! takes a gap-free run of the hot log), in row groups of [`ROW_GROUP_MESSAGES`], so a fetch
//! of a few messages decodes the row groups that hold them, not the whole segment. Its
//! `ts_ms` column statistics give its age for retention.

use super::log::{Message, Op};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray, UInt8Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt8Type, UInt64Type};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use futures::TryStreamExt;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_filestore::{FileStore, Manifest, SegmentInfo, SegmentMeta};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Most messages one flush writes into one segment.
pub const SEGMENT_MESSAGES: usize = 100_000;
/// Messages per Parquet row group.
pub const ROW_GROUP_MESSAGES: usize = 4_096;

/// The folder of `partition` of topic `topic_id` inside its storage.
pub fn dir(topic_id: &str, partition: u32) -> String {
    format!("{}/p{partition}", topic_dir(topic_id))
}

/// The folder of every partition of topic `topic_id` inside its storage.
pub fn topic_dir(topic_id: &str) -> String {
    format!("system/topics/{topic_id}")
}

/// Writes `messages` (consecutive offsets) of `partition` of `topic_id` as one segment file,
/// not listed yet (see [`ColdPartition::list`]).
pub async fn write_segment(
    files: &FileStore,
    topic_id: &str,
    partition: u32,
    messages: Vec<(u64, Message)>,
) -> Result<SegmentMeta> {
    let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
        return Err(KalamError::Internal(
            "a topic segment needs messages".into(),
        ));
    };
    let dir = dir(topic_id, partition);
    let info = SegmentInfo {
        // Named by its first offset: a flush retried after a crash rewrites the same file.
        id: format!("{:020}", first.0),
        min_seq: first.0 as i64,
        max_seq: last.0 as i64,
        min_key: String::new(),
        max_key: String::new(),
        schema_version: 1,
    };
    let name = dir.clone();
    let segment = tokio::task::spawn_blocking(move || {
        let batch = encode(&messages)?;
        Ok::<_, KalamError>(kalamdb_filestore::encode_segment_grouped(
            &name,
            &[batch],
            info,
            ROW_GROUP_MESSAGES,
        )?)
    })
    .await
    .map_err(|e| KalamError::Internal(e.to_string()))??;
    Ok(files.put_segment(&dir, segment).await?)
}

/// Deletes the files of `segments` (unlisted from `partition` of `topic_id`); returns how many
/// messages they held. A file that cannot be deleted is a stray the next flush removes.
pub async fn delete_segments(
    files: &FileStore,
    topic_id: &str,
    partition: u32,
    segments: &[SegmentMeta],
) -> u64 {
    let dir = dir(topic_id, partition);
    for s in segments {
        if let Err(e) = files.remove_file(&dir, &s.file).await {
            tracing::warn!(dir = %dir, file = %s.file, error = %e, "cannot delete a topic segment");
        }
    }
    segments.iter().map(|s| s.row_count).sum()
}

/// One partition's flushed segments.
#[derive(Debug)]
pub struct ColdPartition {
    dir: String,
    manifest: Manifest,
    /// The offset after the last message ever flushed: offsets below it are read here, the
    /// others from the hot log (never lowered, even when retention removes every segment).
    flushed_to: u64,
    /// Segment footers by segment id (segments never change once written).
    footers: Mutex<HashMap<String, ArrowReaderMetadata>>,
}

impl ColdPartition {
    /// Loads the manifest of `partition` of `topic_id`.
    pub async fn open(files: &FileStore, topic_id: &str, partition: u32) -> Result<Self> {
        let dir = dir(topic_id, partition);
        let manifest = files.manifest(&dir).await?;
        let flushed_to = manifest.segments.last().map_or(0, |s| s.max_seq as u64 + 1);
        Ok(Self {
            dir,
            manifest,
            flushed_to,
            footers: Mutex::default(),
        })
    }

    /// This listing, with offsets below `flushed_to` counted as flushed when that is higher
    /// (a listing re-read after retention removed every segment).
    pub fn at_least(mut self, flushed_to: u64) -> Self {
        self.flushed_to = self.flushed_to.max(flushed_to);
        self
    }

    /// See the `flushed_to` field.
    pub fn flushed_to(&self) -> u64 {
        self.flushed_to
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[SegmentMeta] {
        &self.manifest.segments
    }

    /// Bytes of the segments.
    pub fn bytes(&self) -> u64 {
        self.manifest.segments.iter().map(|s| s.bytes).sum()
    }

    /// Lists `segment` (written by [`write_segment`], of offsets at or after
    /// [`Self::flushed_to`]). The caller removes its messages from the hot log afterwards.
    pub async fn list(&mut self, files: &FileStore, segment: SegmentMeta) -> Result<()> {
        let flushed_to = segment.max_seq as u64 + 1;
        let mut manifest = self.manifest.clone();
        manifest.segments.push(segment);
        files.commit(&self.dir, &manifest).await?;
        self.manifest = manifest;
        self.flushed_to = flushed_to;
        Ok(())
    }

    /// Deletes the files of the folder its manifest does not list (a segment a crash left
    /// written but not listed, or unlisted but not deleted).
    pub async fn remove_strays(&self, files: &FileStore) -> Result<()> {
        files.remove_strays(&self.dir, &self.manifest, None).await?;
        Ok(())
    }

    /// Unlists the first `count` segments and returns them; delete their files with
    /// [`delete_segments`] once readers may no longer be reading them.
    pub async fn unlist_first(
        &mut self,
        files: &FileStore,
        count: usize,
    ) -> Result<Vec<SegmentMeta>> {
        let count = count.min(self.manifest.segments.len());
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut manifest = self.manifest.clone();
        let gone: Vec<SegmentMeta> = manifest.segments.drain(..count).collect();
        files.commit(&self.dir, &manifest).await?;
        self.manifest = manifest;
        let mut footers = self.footers.lock();
        for s in &gone {
            footers.remove(&s.id);
        }
        Ok(gone)
    }

    /// Appends to `out` the messages of offsets `from..to` that `keep` takes, until `out`
    /// holds `limit` or `budget` messages were looked at (each one looked at spends one);
    /// returns the offset after the last message looked at (`None`: none was).
    pub async fn read(
        &self,
        files: &FileStore,
        range: (u64, u64),
        (limit, budget): (usize, &mut usize),
        keep: &(dyn Fn(&Message) -> bool + Sync),
        out: &mut Vec<(u64, Message)>,
    ) -> Result<Option<u64>> {
        let (from, to) = range;
        let mut next = None;
        for segment in &self.manifest.segments {
            let (min, max) = (segment.min_seq as u64, segment.max_seq as u64);
            if max < from {
                continue;
            }
            if min >= to || out.len() >= limit || *budget == 0 {
                break;
            }
            let metadata = self.footer(files, segment).await?;
            let groups = row_groups(&metadata, segment, from, to);
            let columns = (0..schema().fields().len()).collect();
            let mut stream = files.segment_stream(
                &self.dir,
                segment,
                metadata,
                groups,
                columns,
                ROW_GROUP_MESSAGES,
            )?;
            while let Some(batch) = stream
                .try_next()
                .await
                .map_err(|e| KalamError::Internal(format!("reading a topic segment: {e}")))?
            {
                for (offset, message) in decode(&batch)? {
                    if offset < from {
                        continue;
                    }
                    if offset >= to || out.len() >= limit || *budget == 0 {
                        return Ok(next);
                    }
                    *budget -= 1;
                    next = Some(offset + 1);
                    if keep(&message) {
                        out.push((offset, message));
                    }
                }
            }
        }
        Ok(next)
    }

    async fn footer(
        &self,
        files: &FileStore,
        segment: &SegmentMeta,
    ) -> Result<ArrowReaderMetadata> {
        if let Some(m) = self.footers.lock().get(&segment.id) {
            return Ok(m.clone());
        }
        let m = files.segment_metadata(&self.dir, segment).await?;
        self.footers.lock().insert(segment.id.clone(), m.clone());
        Ok(m)
    }
}

/// The row groups of `segment` that hold offsets in `from..to` (all of them if the segment's
/// offsets are not consecutive, which a flush never writes).
fn row_groups(
    metadata: &ArrowReaderMetadata,
    segment: &SegmentMeta,
    from: u64,
    to: u64,
) -> Vec<usize> {
    let groups = metadata.metadata().row_groups();
    let (min, max) = (segment.min_seq as u64, segment.max_seq as u64);
    let consecutive = max - min + 1 == segment.row_count;
    let mut first = min;
    let mut picked = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let rows = g.num_rows().max(0) as u64;
        let last = first + rows;
        if !consecutive || (last > from && first < to) {
            picked.push(i);
        }
        first = last;
    }
    picked
}

/// The Arrow schema of a topic segment.
fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("offset", DataType::UInt64, false),
        Field::new("ts_ms", DataType::Int64, false),
        Field::new("op", DataType::UInt8, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("user", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("payload", DataType::Binary, false),
    ]))
}

fn op_code(op: Op) -> u8 {
    match op {
        Op::Insert => 0,
        Op::Update => 1,
        Op::Delete => 2,
    }
}

fn op_of(code: u8) -> Op {
    match code {
        1 => Op::Update,
        2 => Op::Delete,
        _ => Op::Insert,
    }
}

/// `messages` as one record batch of [`schema`].
fn encode(messages: &[(u64, Message)]) -> Result<RecordBatch> {
    let text = |f: fn(&Message) -> Option<&str>| -> ArrayRef {
        Arc::new(messages.iter().map(|(_, m)| f(m)).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(messages.iter().map(|(o, _)| *o).collect::<UInt64Array>()),
        Arc::new(
            messages
                .iter()
                .map(|(_, m)| m.ts_ms)
                .collect::<Int64Array>(),
        ),
        Arc::new(
            messages
                .iter()
                .map(|(_, m)| op_code(m.op))
                .collect::<UInt8Array>(),
        ),
        text(|m| m.key.as_deref()),
        text(|m| m.user.as_deref()),
        text(|m| m.source.as_deref()),
        Arc::new(BinaryArray::from_iter_values(
            messages.iter().map(|(_, m)| m.payload.as_slice()),
        )),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| KalamError::Internal(e.to_string()))
}

/// The messages of a batch of [`schema`], with their offsets.
fn decode(batch: &RecordBatch) -> Result<Vec<(u64, Message)>> {
    let bad = || KalamError::Internal("a topic segment does not have the topic schema".into());
    if batch.num_columns() != schema().fields().len() {
        return Err(bad());
    }
    let c = |i: usize| batch.column(i);
    let offsets = c(0).as_primitive_opt::<UInt64Type>().ok_or_else(bad)?;
    let ts = c(1).as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
    let ops = c(2).as_primitive_opt::<UInt8Type>().ok_or_else(bad)?;
    let (keys, users, sources) = (
        c(3).as_string_opt::<i32>().ok_or_else(bad)?,
        c(4).as_string_opt::<i32>().ok_or_else(bad)?,
        c(5).as_string_opt::<i32>().ok_or_else(bad)?,
    );
    let payloads = c(6).as_binary_opt::<i32>().ok_or_else(bad)?;
    let text = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    Ok((0..batch.num_rows())
        .map(|i| {
            let message = Message {
                key: text(keys, i),
                payload: payloads.value(i).to_vec(),
                op: op_of(ops.value(i)),
                user: text(users, i),
                ts_ms: ts.value(i),
                source: text(sources, i),
            };
            (offsets.value(i), message)
        })
        .collect())
}

/// The newest `ts_ms` of `segment` (from its statistics; `None` when unknown).
pub fn newest_ms(segment: &SegmentMeta) -> Option<i64> {
    segment.columns.get("ts_ms")?.max.as_ref()?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: u64) -> (u64, Message) {
        let message = Message {
            key: i.is_multiple_of(2).then(|| format!("k{i}")),
            payload: format!("{{\"n\":{i}}}").into_bytes(),
            op: op_of((i % 3) as u8),
            user: Some("alice".into()),
            ts_ms: 1_000 + i as i64,
            source: None,
        };
        (i, message)
    }

    #[tokio::test]
    async fn flushed_messages_read_back_by_offset_range_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::local(dir.path()).unwrap();
        let mut cold = ColdPartition::open(&files, "ns.t", 0).await.unwrap();
        for range in [5..10_005, 10_005..10_105] {
            let segment = write_segment(&files, "ns.t", 0, range.map(message).collect());
            cold.list(&files, segment.await.unwrap()).await.unwrap();
        }
        assert_eq!(cold.flushed_to(), 10_105);
        assert_eq!(newest_ms(&cold.segments()[0]), Some(1_000 + 10_004));

        // Reopened from the manifest: a range spanning row groups and both segments.
        let cold = ColdPartition::open(&files, "ns.t", 0).await.unwrap();
        let all = |_: &Message| true;
        let mut out = Vec::new();
        let mut budget = usize::MAX;
        let next = cold
            .read(
                &files,
                (9_000, u64::MAX),
                (1_050, &mut budget),
                &all,
                &mut out,
            )
            .await
            .unwrap();
        assert_eq!(out.len(), 1_050);
        assert_eq!(out[0], message(9_000));
        assert_eq!(out[1_049], message(10_049));
        assert_eq!(next, Some(10_050));

        // A filter skips messages but still moves `next`; `to` bounds the read.
        let even = |m: &Message| m.key.is_some();
        let mut out = Vec::new();
        let next = cold
            .read(&files, (0, 11), (100, &mut budget), &even, &mut out)
            .await
            .unwrap();
        let offsets: Vec<u64> = out.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![6, 8, 10]);
        assert_eq!(next, Some(11));

        // The budget bounds how many are looked at, kept or not.
        let (mut out, mut budget) = (Vec::new(), 4);
        let next = cold
            .read(&files, (5, 100), (100, &mut budget), &even, &mut out)
            .await
            .unwrap();
        assert_eq!((out.len(), next, budget), (2, Some(9), 0));
    }

    #[tokio::test]
    async fn removed_segments_are_unlisted_and_deleted_but_flushed_to_stays() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::local(dir.path()).unwrap();
        let mut cold = ColdPartition::open(&files, "ns.t", 3).await.unwrap();
        let segment = write_segment(&files, "ns.t", 3, (0..10).map(message).collect());
        cold.list(&files, segment.await.unwrap()).await.unwrap();
        let gone = cold.unlist_first(&files, 1).await.unwrap();
        assert_eq!(delete_segments(&files, "ns.t", 3, &gone).await, 10);
        assert!(cold.segments().is_empty());
        assert_eq!(cold.flushed_to(), 10);
        assert!(
            files
                .file_names(&dir_of(3))
                .await
                .unwrap()
                .iter()
                .all(|f| !f.ends_with(".parquet"))
        );
        let mut out = Vec::new();
        let all = |_: &Message| true;
        let mut budget = 100;
        let read = cold.read(&files, (0, 10), (10, &mut budget), &all, &mut out);
        assert_eq!(read.await.unwrap(), None);
    }

    fn dir_of(p: u32) -> String {
        dir("ns.t", p)
    }
}
