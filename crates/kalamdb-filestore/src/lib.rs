//! The cold tier: Parquet segments and the manifest that lists them, one folder per table scope
//! (a SHARED table, or one user's partition of a USER table), on any `object_store`.
//!
//! A folder holds `manifest.json` and `seg-<id>.parquet` files. Only segments named in the
//! manifest exist as far as readers are concerned; a segment is written whole (an object-store
//! `put` is atomic: the local store stages a file and renames it, S3 publishes an object only
//! once all of it arrived) and only then added to the manifest, which is itself replaced by one
//! atomic `put`. A crash at any step therefore leaves either the old manifest or the new one,
//! never a manifest naming a missing or half-written file (stray files are ignored and cleaned
//! up by the next flush).
//!
//! Stores: a local directory ([`FileStore::local`]) or an S3-compatible bucket
//! ([`FileStore::s3`], through `object_store`'s S3 client).
//!
//! Rows are Arrow record batches; the caller decides their schema. Each column's field metadata
//! may carry the table's stable column id ([`COLUMN_ID_KEY`]), which survives renames.

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use datafusion::parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use futures::FutureExt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Field-metadata key holding a column's stable id.
pub const COLUMN_ID_KEY: &str = "kalamdb:column_id";

const MANIFEST: &str = "manifest.json";

/// Errors of the cold tier.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    /// A manifest could not be parsed.
    #[error("corrupt manifest {path}: {message}")]
    Manifest {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
    /// A local directory could not be prepared.
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = FileStoreError> = std::result::Result<T, E>;

/// One Parquet segment as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Unique id (also in the file name).
    pub id: String,
    /// File name inside the scope folder.
    pub file: String,
    /// Rows, tombstones included.
    pub row_count: u64,
    /// File size.
    pub bytes: u64,
    /// Smallest and largest `_seq` in the segment.
    pub min_seq: i64,
    /// See `min_seq`.
    pub max_seq: i64,
    /// Smallest and largest primary-key sort key (hex), for pruning key lookups.
    pub min_key: String,
    /// See `min_key`.
    pub max_key: String,
    /// Schema version of the table the rows were written under.
    pub schema_version: u32,
    /// Min/max and NULL count of each column that has them, by stable column id (by name for
    /// fields written without one; system columns `_…` left out), for pruning segments
    /// against filters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnStats>,
}

/// Statistics of one column of one segment. `min`/`max` are JSON scalars: integers and
/// temporal values as numbers (µs or days), floats as numbers, text as strings, booleans as
/// booleans; absent when unknown (all NULL, a NaN, text over [`MAX_STAT_TEXT`] bytes, or a
/// type without an order kept here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Smallest non-NULL value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Value>,
    /// Largest non-NULL value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Value>,
    /// NULL cells.
    pub nulls: u64,
}

/// Longest text kept as a min/max statistic.
pub const MAX_STAT_TEXT: usize = 64;

/// Min/max of one column over `arrays`, as JSON scalars (see [`ColumnStats`]).
fn column_stats(arrays: &[&dyn Array]) -> ColumnStats {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::{max, max_boolean, max_string, min, min_boolean, min_string};
    use datafusion::arrow::datatypes::{
        DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
        Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
    };
    use serde_json::Value as J;
    let nulls = arrays.iter().map(|a| a.null_count() as u64).sum();
    let mut out = ColumnStats {
        nulls,
        ..ColumnStats::default()
    };
    // Per array (min, max), then folded; `None` from any array means "unknown" for all.
    let pairs: Option<Vec<Option<(J, J)>>> = arrays
        .iter()
        .map(|a| {
            let num = |lo: Option<f64>, hi: Option<f64>| match (lo, hi) {
                (Some(l), Some(h)) if l.is_finite() && h.is_finite() => {
                    Some(Some((J::from(l), J::from(h))))
                }
                (None, None) => Some(None),
                _ => None,
            };
            let int = |lo: Option<i64>, hi: Option<i64>| {
                Some(lo.zip(hi).map(|(l, h)| (J::from(l), J::from(h))))
            };
            match a.data_type() {
                DataType::Int16 => {
                    let p = a.as_primitive::<Int16Type>();
                    int(min(p).map(i64::from), max(p).map(i64::from))
                }
                DataType::Int32 => {
                    let p = a.as_primitive::<Int32Type>();
                    int(min(p).map(i64::from), max(p).map(i64::from))
                }
                DataType::Int64 => {
                    let p = a.as_primitive::<Int64Type>();
                    int(min(p), max(p))
                }
                DataType::Date32 => {
                    let p = a.as_primitive::<Date32Type>();
                    int(min(p).map(i64::from), max(p).map(i64::from))
                }
                DataType::Time64(TimeUnit::Microsecond) => {
                    let p = a.as_primitive::<Time64MicrosecondType>();
                    int(min(p), max(p))
                }
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    let p = a.as_primitive::<TimestampMicrosecondType>();
                    int(min(p), max(p))
                }
                DataType::Float32 => {
                    let p = a.as_primitive::<Float32Type>();
                    num(min(p).map(f64::from), max(p).map(f64::from))
                }
                DataType::Float64 => {
                    let p = a.as_primitive::<Float64Type>();
                    num(min(p), max(p))
                }
                DataType::Utf8 => {
                    let s = a.as_string::<i32>();
                    match (min_string(s), max_string(s)) {
                        (Some(l), Some(h)) if l.len().max(h.len()) <= MAX_STAT_TEXT => {
                            Some(Some((J::from(l), J::from(h))))
                        }
                        (None, None) => Some(None),
                        _ => None,
                    }
                }
                DataType::Boolean => {
                    let b = a.as_boolean();
                    Some(
                        min_boolean(b)
                            .zip(max_boolean(b))
                            .map(|(l, h)| (J::from(l), J::from(h))),
                    )
                }
                _ => None,
            }
        })
        .collect();
    let Some(pairs) = pairs else {
        return out;
    };
    let order = |a: &J, b: &J| -> std::cmp::Ordering {
        match (a, b) {
            (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x
                    .as_f64()
                    .partial_cmp(&y.as_f64())
                    .unwrap_or(std::cmp::Ordering::Equal),
            },
            (J::String(x), J::String(y)) => x.cmp(y),
            (J::Bool(x), J::Bool(y)) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        }
    };
    for (lo, hi) in pairs.into_iter().flatten() {
        if out.min.as_ref().is_none_or(|m| order(&lo, m).is_lt()) {
            out.min = Some(lo);
        }
        if out.max.as_ref().is_none_or(|m| order(&hi, m).is_gt()) {
            out.max = Some(hi);
        }
    }
    out
}

/// The segments of one scope folder, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this file.
    pub version: u32,
    /// Creation time of the table incarnation the segments belong to (a table dropped and
    /// created again under the same name is a different incarnation).
    #[serde(default)]
    pub table_created_at: i64,
    /// Live segments.
    pub segments: Vec<SegmentMeta>,
}

/// What a new segment holds besides its rows (the caller knows these from the rows).
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Unique id.
    pub id: String,
    /// `_seq` range.
    pub min_seq: i64,
    /// See `min_seq`.
    pub max_seq: i64,
    /// Primary-key sort-key range (hex).
    pub min_key: String,
    /// See `min_key`.
    pub max_key: String,
    /// Table schema version.
    pub schema_version: u32,
}

/// What [`FileStore::probe`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    /// An object could be written.
    pub writable: bool,
    /// It read back the same.
    pub readable: bool,
    /// A listing showed it.
    pub listable: bool,
    /// It could be deleted.
    pub deletable: bool,
    /// Time for the four steps.
    pub latency_ms: f64,
    /// The first failure.
    pub error: Option<String>,
}

/// Where and how to reach an S3-compatible bucket.
#[derive(Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Folder inside the bucket everything goes under (may be empty).
    pub prefix: String,
    /// Region (`us-east-1` when unset).
    pub region: Option<String>,
    /// Endpoint URL of a non-AWS server (MinIO, moto, …); requests then use path-style URLs.
    pub endpoint: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Access key; unset: taken from the environment (`AWS_ACCESS_KEY_ID`, …) or instance metadata.
    pub access_key_id: Option<String>,
    /// Secret key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Per-request timeout.
    pub request_timeout: std::time::Duration,
    /// Connect timeout.
    pub connect_timeout: std::time::Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// A segment encoded in memory, ready for [`FileStore::put_segment`].
#[derive(Debug)]
pub struct EncodedSegment {
    bytes: Vec<u8>,
    meta: SegmentMeta,
}

/// Encodes `batches` as one Parquet segment (ZSTD level 1) described by `info`: CPU work only,
/// no I/O, so callers can run it off their async executor. `dir` only names errors.
pub fn encode_segment(
    dir: &str,
    batches: &[RecordBatch],
    info: SegmentInfo,
) -> Result<EncodedSegment> {
    encode_segment_grouped(dir, batches, info, SEGMENT_ROW_GROUP_ROWS)
}

/// [`encode_segment`] with row groups of at most `row_group_rows` rows (smaller groups let a
/// reader that wants a few rows by position decode only those).
pub fn encode_segment_grouped(
    dir: &str,
    batches: &[RecordBatch],
    info: SegmentInfo,
    row_group_rows: usize,
) -> Result<EncodedSegment> {
    let Some(first) = batches.first() else {
        return Err(FileStoreError::Manifest {
            path: dir.to_string(),
            message: "a segment needs rows".into(),
        });
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, first.schema(), Some(props))?;
    let mut rows = 0u64;
    for b in batches {
        writer.write(b)?;
        rows += b.num_rows() as u64;
    }
    writer.close()?;
    let schema = first.schema();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.name().starts_with('_'))
        .map(|(i, f)| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            let key = f.metadata().get(COLUMN_ID_KEY).unwrap_or(f.name()).clone();
            (key, column_stats(&arrays))
        })
        .collect();
    let meta = SegmentMeta {
        file: format!("seg-{}.parquet", info.id),
        id: info.id,
        row_count: rows,
        bytes: buf.len() as u64,
        min_seq: info.min_seq,
        max_seq: info.max_seq,
        min_key: info.min_key,
        max_key: info.max_key,
        schema_version: info.schema_version,
        columns,
    };
    Ok(EncodedSegment { bytes: buf, meta })
}

/// A stream of one segment's rows (see [`FileStore::segment_stream`]).
pub type SegmentStream = ParquetRecordBatchStream<SegmentReader>;

/// Reads one segment file in byte ranges from its object store (what the Parquet reader
/// asks for: the footer, then the column chunks of the row groups it decodes).
#[derive(Debug, Clone)]
pub struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for SegmentReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// Rows per Parquet row group of a segment: small enough that a short key-range read or a
/// `LIMIT` decodes little more than it returns, large enough to compress well.
pub const SEGMENT_ROW_GROUP_ROWS: usize = 65_536;

/// Segment and manifest access on one object store.
#[derive(Debug, Clone)]
pub struct FileStore {
    store: Arc<dyn ObjectStore>,
}

impl FileStore {
    /// A store rooted at a local directory (created when missing).
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new_with_prefix(root)?),
        })
    }

    /// A store in an S3-compatible bucket. Nothing is contacted until first use (see
    /// [`FileStore::probe`]). Failed requests are retried a few times with backoff, within
    /// the request timeout.
    pub fn s3(cfg: &S3Config) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_region(cfg.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(cfg.request_timeout)
                    .with_connect_timeout(cfg.connect_timeout)
                    .with_allow_http(cfg.allow_http),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: cfg.request_timeout,
                ..RetryConfig::default()
            });
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t);
        }
        let s3 = b.build()?;
        let prefix = cfg.prefix.trim_matches('/');
        Ok(Self {
            store: if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            },
        })
    }

    /// A store over any object store.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// The manifest of `dir` (empty when the folder has none yet).
    pub async fn manifest(&self, dir: &str) -> Result<Manifest> {
        let path = Path::from(format!("{dir}/{MANIFEST}"));
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Manifest::default()),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|e| FileStoreError::Manifest {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Stores a segment made by [`encode_segment`] in `dir` (one atomic put) and returns its
    /// manifest entry; the manifest itself is not changed (see [`FileStore::commit`]).
    pub async fn put_segment(&self, dir: &str, segment: EncodedSegment) -> Result<SegmentMeta> {
        let EncodedSegment { bytes, meta } = segment;
        self.store
            .put(
                &Path::from(format!("{dir}/{}", meta.file)),
                PutPayload::from(bytes),
            )
            .await?;
        Ok(meta)
    }

    /// Writes an uploaded file (a FILE column's content) as `dir/name`, in one put.
    pub async fn put_file(&self, dir: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(
                &Path::from(format!("{dir}/{name}")),
                PutPayload::from(bytes),
            )
            .await?;
        Ok(())
    }

    /// The content of `dir/name`; `None` when there is no such file.
    pub async fn get_file(&self, dir: &str, name: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&Path::from(format!("{dir}/{name}"))).await {
            Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the manifest of `dir` (one atomic put).
    pub async fn commit(&self, dir: &str, manifest: &Manifest) -> Result<()> {
        let text = serde_json::to_vec(manifest).map_err(|e| FileStoreError::Manifest {
            path: dir.to_string(),
            message: e.to_string(),
        })?;
        self.store
            .put(
                &Path::from(format!("{dir}/{MANIFEST}")),
                PutPayload::from(text),
            )
            .await?;
        Ok(())
    }

    /// Reads every row of one segment.
    pub async fn read_segment(&self, dir: &str, segment: &SegmentMeta) -> Result<Vec<RecordBatch>> {
        let path = Path::from(format!("{dir}/{}", segment.file));
        let bytes = self.store.get(&path).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| FileStoreError::Parquet(e.into()))
    }

    /// The footer of a segment (row groups, their statistics, the Arrow schema), read once
    /// per caller: callers cache it, segments being immutable.
    pub async fn segment_metadata(
        &self,
        dir: &str,
        segment: &SegmentMeta,
    ) -> Result<ArrowReaderMetadata> {
        let mut reader = self.segment_reader(dir, segment);
        Ok(ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?)
    }

    /// Streams the rows of `segment` a batch of `batch_rows` at a time: only the root
    /// columns `columns` of the row groups `row_groups`, read with `metadata` (see
    /// [`FileStore::segment_metadata`]). Nothing is read before the stream is polled.
    pub fn segment_stream(
        &self,
        dir: &str,
        segment: &SegmentMeta,
        metadata: ArrowReaderMetadata,
        row_groups: Vec<usize>,
        columns: Vec<usize>,
        batch_rows: usize,
    ) -> Result<SegmentStream> {
        let mask =
            ProjectionMask::roots(metadata.metadata().file_metadata().schema_descr(), columns);
        Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
            self.segment_reader(dir, segment),
            metadata,
        )
        .with_projection(mask)
        .with_row_groups(row_groups)
        .with_batch_size(batch_rows)
        .build()?)
    }

    fn segment_reader(&self, dir: &str, segment: &SegmentMeta) -> SegmentReader {
        SegmentReader {
            store: Arc::clone(&self.store),
            path: Path::from(format!("{dir}/{}", segment.file)),
            size: segment.bytes,
        }
    }

    /// Deletes files in `dir` that the manifest does not name (left by a crash mid-flush),
    /// only those last modified at least `min_age` ago when given.
    pub async fn remove_strays(
        &self,
        dir: &str,
        manifest: &Manifest,
        min_age: Option<std::time::Duration>,
    ) -> Result<usize> {
        // Milliseconds since the epoch a file must be modified before.
        let cutoff = min_age.map(|age| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            i64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(i64::MAX)
        });
        let prefix = Path::from(dir.to_string());
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut removed = 0;
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let is_dir_child = meta
                .location
                .prefix_match(&prefix)
                .is_some_and(|mut p| p.next().is_some() && p.next().is_none());
            let known = name == MANIFEST || manifest.segments.iter().any(|s| s.file == name);
            let young = cutoff.is_some_and(|c| meta.last_modified.timestamp_millis() > c);
            if is_dir_child && !known && !young {
                self.store.delete(&meta.location).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Whether anything is stored under `dir`.
    pub async fn has_any(&self, dir: &str) -> Result<bool> {
        let prefix = Path::from(dir.to_string());
        let mut listed = self.store.list(Some(&prefix));
        Ok(futures::StreamExt::next(&mut listed)
            .await
            .transpose()?
            .is_some())
    }

    /// Copies every object under `from` (recursively; `""` = the whole store) to the same
    /// names under `to` of `dest`, streaming (large objects go up in parts). An object deleted
    /// between the listing and its read is skipped. Answers (objects, bytes) copied.
    pub async fn copy_all(&self, from: &str, dest: &FileStore, to: &str) -> Result<(u64, u64)> {
        let prefix = (!from.is_empty()).then(|| Path::from(from.to_string()));
        let listed: Vec<_> = self.store.list(prefix.as_ref()).try_collect().await?;
        let (mut objects, mut bytes) = (0, 0);
        for meta in listed {
            let name = meta.location.as_ref();
            let rel = match &prefix {
                Some(p) => name
                    .strip_prefix(p.as_ref())
                    .unwrap_or(name)
                    .trim_start_matches('/'),
                None => name,
            };
            let target = if to.is_empty() {
                Path::parse(rel)
            } else {
                Path::parse(format!("{}/{rel}", to.trim_end_matches('/')))
            }
            .map_err(object_store::Error::from)?;
            let mut chunks = match self.store.get(&meta.location).await {
                Ok(got) => got.into_stream(),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let mut writer =
                object_store::buffered::BufWriter::new(Arc::clone(&dest.store), target);
            let written: Result<()> = async {
                while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
                    writer.put(chunk?).await?;
                }
                tokio::io::AsyncWriteExt::shutdown(&mut writer).await?;
                Ok(())
            }
            .await;
            if let Err(e) = written {
                // No half-uploaded parts (billed until removed) or staging files left behind.
                let _ = writer.abort().await;
                return Err(e);
            }
            objects += 1;
            bytes += meta.size;
        }
        Ok((objects, bytes))
    }

    /// Names of the files directly inside `dir` (none when there is no such folder).
    pub async fn file_names(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = Path::from(dir.to_string());
        let listed = self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect())
    }

    /// Names of the folders directly inside `dir`.
    pub async fn child_dirs(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = Path::from(dir.to_string());
        let listed = self.store.list_with_delimiter(Some(&prefix)).await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Writes, reads back, lists and deletes a small object under `_kalamdb_check/`; reports
    /// which steps worked and the first error.
    pub async fn probe(&self, name: &str) -> Probe {
        let path = Path::from(format!("_kalamdb_check/{name}"));
        let payload = b"kalamdb storage check".to_vec();
        let started = std::time::Instant::now();
        let mut p = Probe::default();
        let result: Result<()> = async {
            self.store
                .put(&path, PutPayload::from(payload.clone()))
                .await?;
            p.writable = true;
            let got = self.store.get(&path).await?.bytes().await?;
            p.readable = got.as_ref() == payload.as_slice();
            let prefix = Path::from("_kalamdb_check");
            let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
            p.listable = listed.iter().any(|m| m.location == path);
            self.store.delete(&path).await?;
            p.deletable = true;
            Ok(())
        }
        .await;
        p.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        p.error = result.err().map(|e| e.to_string());
        p
    }

    /// Deletes file `file` of `dir` (gone already is fine).
    pub async fn remove_file(&self, dir: &str, file: &str) -> Result<()> {
        match self
            .store
            .delete(&Path::from(format!("{dir}/{file}")))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes everything under `dir` (a dropped table's folder).
    pub async fn remove_all(&self, dir: &str) -> Result<()> {
        let prefix = Path::from(dir.to_string());
        let listed: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        for meta in listed {
            self.store.delete(&meta.location).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Float64Array, Int32Array, StringArray};
    use serde_json::json;

    #[test]
    fn column_stats_fold_over_arrays_and_skip_what_they_cannot_order() {
        let a = Int32Array::from(vec![Some(5), None, Some(-2)]);
        let b = Int32Array::from(vec![Some(9), Some(0)]);
        let s = column_stats(&[&a, &b]);
        assert_eq!(
            (s.min, s.max, s.nulls),
            (Some(json!(-2)), Some(json!(9)), 1)
        );

        let t = StringArray::from(vec![Some("pear"), Some("apple"), None]);
        let s = column_stats(&[&t]);
        assert_eq!((s.min, s.max), (Some(json!("apple")), Some(json!("pear"))));

        let long = "x".repeat(MAX_STAT_TEXT + 1);
        let t = StringArray::from(vec![Some("a"), Some(long.as_str())]);
        assert_eq!(column_stats(&[&t]).max, None, "long text has no max");

        let f = Float64Array::from(vec![1.5, f64::NAN]);
        assert_eq!(column_stats(&[&f]).max, None, "NaN: unknown");

        let n = Int32Array::from(vec![None, None]);
        let s = column_stats(&[&n]);
        assert_eq!((s.min, s.nulls), (None, 2));

        let bools = BooleanArray::from(vec![true, true]);
        let s = column_stats(&[&bools]);
        assert_eq!((s.min, s.max), (Some(json!(true)), Some(json!(true))));
    }
}
