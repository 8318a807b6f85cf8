//! Online backup (`BACKUP DATABASE TO …`) and offline restore (`kalamdb-server restore`).
//!
//! A backup is a tree of files: `rocksdb/` (a RocksDB checkpoint: the hot rows, the catalog,
//! users, topics' hot logs, all as of one instant), `storages/<storage_id>/` (a copy of every
//! storage's objects, filesystem and S3 alike: segments, manifests, FILE columns' files) and
//! `backup.json` (what was copied from where). It goes into a folder on the server's machine
//! or under a path of a storage (S3 or filesystem) that holds no tables. While it is taken,
//! flushes, compactions and removals of dropped data wait (they would change segment files
//! and manifests); writes go on, into the hot tier only, so nothing written after the
//! checkpoint is in the backup and everything acknowledged before it is.
//!
//! On a cluster member (docs/cluster.md §11, "Backups") the checkpoint is this member's store,
//! which holds every group as far as it applied it; flushes and compactions run on the groups'
//! leaders, so every member pauses its file changes for the copy ([`HOLD_FILES_CALL`]: taken
//! in node id order, this node's own included, so two backups queue instead of deadlocking; a
//! member's pause lapses unless renewed), and this member first applies what the leaders
//! committed. A backup that cannot pause every member is refused; one during which a pause
//! may have lapsed fails. Restoring it gives a single server's data folder: the Raft logs and
//! marks are left out.

use crate::app_context::AppContext;
use kalamdb_catalog::catalog::StorageRecord;
use kalamdb_catalog::error::{KalamError, Result};
use kalamdb_filestore::{FileStore, S3Config};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where `BACKUP DATABASE` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTarget {
    /// `TO '<folder>'`: a folder on the server's machine.
    Folder(PathBuf),
    /// `TO STORAGE <id> PATH '<path>'`: under `path` of a storage.
    Storage {
        /// The storage.
        storage_id: String,
        /// The folder inside it.
        path: String,
    },
}

impl std::fmt::Display for BackupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(dir) => write!(f, "{}", dir.display()),
            Self::Storage { storage_id, path } => write!(f, "storage {storage_id}, path {path}"),
        }
    }
}

/// `backup.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// Format version.
    version: u32,
    /// When the checkpoint was taken, µs since the epoch.
    created_at: i64,
    /// The node that took it.
    node_id: String,
    /// Each copied filesystem storage: id and its `base_directory` as configured.
    storages: Vec<(String, String)>,
    /// Each copied S3 storage, as the catalog has it (restore writes its objects back).
    #[serde(default)]
    s3_storages: Vec<StorageRecord>,
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupReport {
    /// Files copied (checkpoint and storages).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl BackupReport {
    fn add(&mut self, (files, bytes): (u64, u64)) {
        self.files += files;
        self.bytes += bytes;
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> KalamError {
    KalamError::InvalidInput(format!("{what} {}: {e}", path.display()))
}

fn store_error(e: kalamdb_filestore::FileStoreError) -> KalamError {
    KalamError::Internal(format!("backup storage: {e}"))
}

/// `a/b` joined without doubled or leading slashes.
fn join(prefix: &str, rest: &str) -> String {
    match prefix.trim_matches('/') {
        "" => rest.to_string(),
        p => format!("{p}/{rest}"),
    }
}

/// Engine call: pause this member's file changes for another member's backup
/// ([`FileHold`]); answers once paused (a running flush finishes first).
pub const HOLD_FILES_CALL: &str = "hold-files";

/// Engine call: end such a pause now.
pub const RELEASE_FILES_CALL: &str = "release-files";

/// How long a member's pause lasts unless the backup renews it.
const HOLD_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Longest lease a member grants.
const MAX_HOLD_LEASE: std::time::Duration = std::time::Duration::from_secs(300);

/// How often a backup renews its members' pauses.
const HOLD_RENEWAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a member may take to pause (its running flush or compaction finishes first).
const HOLD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long a renewal or release may take.
const HOLD_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the backing-up member may take to apply what the groups' leaders committed.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The body of [`HOLD_FILES_CALL`] and [`RELEASE_FILES_CALL`].
#[derive(Debug, Serialize, Deserialize)]
struct FileHold {
    /// The backup's pause id.
    id: u64,
    /// How long the pause lasts from now, in ms (at most 5 minutes).
    lease_ms: u64,
    /// Only push the end of a pause already held (never take it again after a gap).
    renew: bool,
}

/// What [`RELEASE_FILES_CALL`] answers when the pause was still held.
const RELEASED: &[u8] = b"released";

/// Serves [`HOLD_FILES_CALL`] and [`RELEASE_FILES_CALL`] on this member.
pub async fn member_files_call(app: &AppContext, name: &str, body: &[u8]) -> Result<Vec<u8>> {
    let hold: FileHold = serde_json::from_slice(body)
        .map_err(|e| KalamError::InvalidInput(format!("a pause request does not decode: {e}")))?;
    let gate = app.tables().file_gate();
    if name == RELEASE_FILES_CALL {
        return Ok(match gate.release(hold.id) {
            true => RELEASED.to_vec(),
            false => b"not held".to_vec(),
        });
    }
    let lease = std::time::Duration::from_millis(hold.lease_ms).min(MAX_HOLD_LEASE);
    match gate.hold(hold.id, lease, hold.renew).await {
        true => Ok(b"held".to_vec()),
        false => Err(KalamError::InvalidInput(format!(
            "pause {} is not held here (it lapsed)",
            hold.id
        ))),
    }
}

/// The other members' pauses a backup here holds, renewed (all at once, every 10 s) from
/// the first one taken until the backup finishes; a renewal that fails marks the backup
/// failed. Dropping it (a panic in the copy) stops the renewals: the pauses lapse.
struct MemberPauses {
    view: std::sync::Arc<dyn crate::cluster_view::ClusterView>,
    id: u64,
    /// Members whose pause was taken.
    held: std::sync::Arc<parking_lot::Mutex<Vec<u64>>>,
    /// Members asked (a call that timed out may still take the pause there).
    asked: Vec<u64>,
    renewing: Option<tokio::task::JoinHandle<()>>,
    /// Why a pause may have lapsed.
    lost: std::sync::Arc<parking_lot::Mutex<Option<String>>>,
}

impl Drop for MemberPauses {
    fn drop(&mut self) {
        if let Some(task) = self.renewing.take() {
            task.abort();
        }
    }
}

impl MemberPauses {
    fn new(view: std::sync::Arc<dyn crate::cluster_view::ClusterView>) -> Self {
        Self {
            view,
            id: uuid::Uuid::new_v4().as_u64_pair().0,
            held: Default::default(),
            asked: Vec::new(),
            renewing: None,
            lost: Default::default(),
        }
    }

    async fn call(
        view: &dyn crate::cluster_view::ClusterView,
        node: u64,
        name: &str,
        hold: &FileHold,
        timeout: std::time::Duration,
    ) -> std::result::Result<Vec<u8>, String> {
        let body = serde_json::to_vec(hold).map_err(|e| e.to_string())?;
        view.call_member(node, name, body, timeout).await
    }

    fn request(id: u64, renew: bool) -> FileHold {
        FileHold {
            id,
            lease_ms: HOLD_LEASE.as_millis() as u64,
            renew,
        }
    }

    /// Takes `node`'s pause; renewals start with the first one taken.
    async fn take(&mut self, node: u64) -> std::result::Result<(), String> {
        self.asked.push(node);
        let request = Self::request(self.id, false);
        Self::call(&*self.view, node, HOLD_FILES_CALL, &request, HOLD_TIMEOUT).await?;
        self.held.lock().push(node);
        if self.renewing.is_none() {
            self.renew_in_background();
        }
        Ok(())
    }

    fn renew_in_background(&mut self) {
        let (view, held, lost) = (
            std::sync::Arc::clone(&self.view),
            std::sync::Arc::clone(&self.held),
            std::sync::Arc::clone(&self.lost),
        );
        let request = Self::request(self.id, true);
        self.renewing = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOLD_RENEWAL).await;
                let nodes = held.lock().clone();
                let renewals = nodes.iter().map(|&node| {
                    let (view, request) = (&view, &request);
                    async move {
                        let renewed =
                            Self::call(&**view, node, HOLD_FILES_CALL, request, HOLD_CALL_TIMEOUT)
                                .await;
                        (node, renewed)
                    }
                });
                for (node, renewed) in futures::future::join_all(renewals).await {
                    if let Err(e) = renewed {
                        lost.lock().get_or_insert(format!("node {node}: {e}"));
                    }
                }
            }
        }));
    }

    /// Ends every pause; fails when one may have lapsed during the backup (a renewal failed,
    /// or a member no longer held it when released).
    async fn finish(mut self) -> Result<()> {
        if let Some(task) = self.renewing.take() {
            task.abort();
        }
        let held = self.held.lock().clone();
        let request = Self::request(self.id, false);
        let releases = self.asked.iter().map(|&node| {
            let (view, request) = (&self.view, &request);
            async move {
                let released = Self::call(
                    &**view,
                    node,
                    RELEASE_FILES_CALL,
                    request,
                    HOLD_CALL_TIMEOUT,
                )
                .await;
                (node, released)
            }
        });
        for (node, released) in futures::future::join_all(releases).await {
            if !held.contains(&node) {
                continue;
            }
            match released {
                Ok(answer) if answer == RELEASED => {}
                Ok(_) => {
                    self.lost
                        .lock()
                        .get_or_insert(format!("node {node}: its pause had lapsed"));
                }
                Err(e) => {
                    self.lost.lock().get_or_insert(format!("node {node}: {e}"));
                }
            }
        }
        match self.lost.lock().take() {
            Some(why) => Err(KalamError::Internal(format!(
                "a member's pause of its flushes and compactions may have lapsed during the \
                 backup ({why}): its files may have changed while they were copied; take the \
                 backup again"
            ))),
            None => Ok(()),
        }
    }
}

/// Pauses file changes here, and on a cluster member on every member, in node id order (so
/// concurrent backups queue rather than deadlock); then, on a member, waits until it applied
/// what the groups' leaders had committed, so its checkpoint holds every flush's manifest.
async fn pause_everywhere(
    app: &AppContext,
) -> Result<(tokio::sync::OwnedRwLockWriteGuard<()>, Option<MemberPauses>)> {
    let Some(view) = app.cluster_view().cloned() else {
        return Ok((app.tables().pause_file_changes().await, None));
    };
    let me = view.node_id();
    let mut nodes: Vec<u64> = view.members().iter().map(|m| m.node_id).collect();
    nodes.push(me);
    nodes.sort_unstable();
    nodes.dedup();
    let mut pauses = MemberPauses::new(std::sync::Arc::clone(&view));
    let mut local = None;
    for node in nodes {
        if node == me {
            local = Some(app.tables().pause_file_changes().await);
            continue;
        }
        if let Err(e) = pauses.take(node).await {
            let _ = pauses.finish().await;
            return Err(KalamError::Store(kalamdb_store::StoreError::Unavailable(
                format!(
                    "a backup in a cluster pauses every member's flushes and compactions, \
                     and node {node} could not: {e}"
                ),
            )));
        }
    }
    let local = match local {
        Some(guard) => guard,
        None => app.tables().pause_file_changes().await,
    };
    let marks = view.read_marks().await;
    let caught_up = match &marks {
        Ok(marks) => view.wait_applied(marks, CATCH_UP_TIMEOUT).await,
        Err(_) => false,
    };
    if !caught_up {
        let _ = pauses.finish().await;
        let why = marks.err().unwrap_or_else(|| "it is still behind".into());
        return Err(KalamError::Store(kalamdb_store::StoreError::Unavailable(
            format!("this member cannot catch up with the groups' leaders for the backup: {why}"),
        )));
    }
    Ok((local, Some(pauses)))
}

/// Format of `backup.json` this build writes; restore reads this one and older.
const FORMAT_VERSION: u32 = 2;

/// A checkpoint taken for upload, removed when dropped (also when the backup fails or its
/// task is dropped at shutdown).
struct TempCheckpoint(PathBuf);

impl Drop for TempCheckpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether one location lies inside the other (or they are the same).
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Takes a backup of `app` into `target`: a folder that does not exist or is empty, or a path
/// of a storage no table or topic uses, with nothing under it. The destination may not
/// overlap the data folder or any storage it copies (it would copy itself).
pub async fn backup(app: &AppContext, target: &BackupTarget) -> Result<BackupReport> {
    use kalamdb_catalog::storages::{folder_location, location};
    let data_path = PathBuf::from(&app.config().storage.data_path);
    let data_at = folder_location(&data_path);
    let records = app.catalog().storages()?;
    let dest_storage = match target {
        BackupTarget::Storage { storage_id, .. } => Some(storage_id.as_str()),
        BackupTarget::Folder(_) => None,
    };
    let sources: Vec<StorageRecord> = records
        .iter()
        .filter(|r| Some(r.storage_id.as_str()) != dest_storage)
        .cloned()
        .collect();
    for r in &sources {
        if r.storage_type == "filesystem" && data_at.starts_with(&location(r, &data_path)) {
            return Err(KalamError::InvalidInput(format!(
                "storage {}'s folder holds the data folder: a copy of it would hold the live \
                 database files; give the storage a folder of its own",
                r.storage_id
            )));
        }
    }
    let (dest, prefix, local, dest_at) = match target {
        BackupTarget::Folder(dir) => {
            require_empty(dir, "backup folder")?;
            (None, String::new(), Some(dir.clone()), folder_location(dir))
        }
        BackupTarget::Storage { storage_id, path } => {
            let record = records
                .iter()
                .find(|r| &r.storage_id == storage_id)
                .ok_or_else(|| KalamError::NotFound {
                    kind: "Storage",
                    name: storage_id.clone(),
                })?;
            let mut at = location(record, &data_path);
            at.extend(
                path.split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string),
            );
            let files = app.tables().cold().files(storage_id)?;
            (Some(files), path.trim_matches('/').to_string(), None, at)
        }
    };
    let copied_into = sources
        .iter()
        .find(|r| overlaps(&dest_at, &location(r, &data_path)))
        .map(|r| format!("storage {}", r.storage_id));
    if let Some(what) =
        copied_into.or_else(|| overlaps(&dest_at, &data_at).then(|| "the data folder".into()))
    {
        return Err(KalamError::InvalidInput(format!(
            "backup destination {target} overlaps {what}: choose one outside the data folder \
             and every storage"
        )));
    }
    let dest = match (dest, &local) {
        (Some(files), _) => files,
        (None, Some(dir)) => {
            create_private_dir(dir)?;
            FileStore::local(dir).map_err(store_error)?
        }
        (None, None) => {
            return Err(KalamError::Internal(
                "a backup target without a place".into(),
            ));
        }
    };
    let mut stores = Vec::new();
    for r in &sources {
        stores.push((r.clone(), app.tables().cold().files(&r.storage_id)?));
    }
    // Segment files and manifests hold still from the checkpoint until the copy is done. The
    // copy runs in its own task that owns the guard: a cancelled request does not release it
    // early, nor stop the copy halfway. Backups take the gate one at a time.
    let (files, members) = pause_everywhere(app).await?;
    let backend = std::sync::Arc::clone(app.backend());
    let node_id = app.node_id().to_string();
    let copy = tokio::spawn(async move {
        let _files = files;
        let copied = copy_backup(backend, dest, prefix, local, data_path, stores, node_id).await;
        let paused = match members {
            Some(pauses) => pauses.finish().await,
            None => Ok(()),
        };
        let report = copied?;
        paused.map(|()| report)
    });
    copy.await
        .map_err(|e| KalamError::Internal(format!("backup task failed: {e}")))?
}

/// The copy itself, under the pauses: checkpoint, storages, then `backup.json`.
async fn copy_backup(
    backend: std::sync::Arc<dyn kalamdb_store::StorageBackend>,
    dest: FileStore,
    prefix: String,
    local: Option<PathBuf>,
    data_path: PathBuf,
    stores: Vec<(StorageRecord, FileStore)>,
    node_id: String,
) -> Result<BackupReport> {
    {
        // Checked again under the gate: a backup that waited for another into the same place
        // finds it taken.
        if dest.has_any(&prefix).await.map_err(store_error)? {
            return Err(KalamError::InvalidInput(format!(
                "backup destination {} is not empty: back up into a new one",
                if prefix.is_empty() {
                    "folder"
                } else {
                    prefix.as_str()
                }
            )));
        }
        let created_at = chrono::Utc::now().timestamp_micros();
        // The checkpoint is taken on local disk (hard links to live files where it can).
        let mut temp = None;
        let checkpoint = match &local {
            Some(dir) => dir.join("rocksdb"),
            None => {
                sweep_checkpoints(&data_path);
                let dir = data_path.join(format!(".backup-{created_at}"));
                temp = Some(TempCheckpoint(dir.clone()));
                dir
            }
        };
        let taken = checkpoint.clone();
        tokio::task::spawn_blocking(move || backend.checkpoint(&taken))
            .await
            .map_err(|e| KalamError::Internal(format!("checkpoint task failed: {e}")))?
            .map_err(|e| KalamError::Internal(format!("checkpoint failed: {e}")))?;
        let mut report = BackupReport::default();
        if temp.is_some() {
            let upload = FileStore::local(&checkpoint).map_err(store_error)?;
            report.add(
                upload
                    .copy_all("", &dest, &join(&prefix, "rocksdb"))
                    .await
                    .map_err(store_error)?,
            );
            drop(temp);
        } else {
            count(&checkpoint, &mut report);
        }
        let mut manifest = Manifest {
            version: FORMAT_VERSION,
            created_at,
            node_id,
            storages: Vec::new(),
            s3_storages: Vec::new(),
        };
        for (record, store) in stores {
            let to = join(&prefix, &format!("storages/{}", record.storage_id));
            report.add(store.copy_all("", &dest, &to).await.map_err(store_error)?);
            if record.storage_type == "filesystem" {
                manifest
                    .storages
                    .push((record.storage_id, record.base_directory));
            } else {
                manifest.s3_storages.push(record);
            }
        }
        // Written last: a backup without it is not one (restore refuses it).
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| KalamError::Internal(e.to_string()))?;
        dest.put_file(&prefix, "backup.json", text)
            .await
            .map_err(store_error)?;
        Ok(report)
    }
}

/// Drops the Raft groups' logs and marks a cluster member's backup holds (`raft.*`
/// partitions): they belong to that cluster, not to the server the restored folder is for.
fn drop_raft_partitions(db: &Path) -> Result<()> {
    use kalamdb_store::StorageBackend;
    let failed = |e: kalamdb_store::StoreError| {
        KalamError::Internal(format!("restored database {}: {e}", db.display()))
    };
    let store = kalamdb_store::RocksBackend::open(db, &kalamdb_store::StoreOptions::default())
        .map_err(failed)?;
    for partition in store.list_partitions() {
        if partition.starts_with("raft.") {
            store.drop_partition(&partition).map_err(failed)?;
        }
    }
    Ok(())
}

/// Removes checkpoints left in the data folder by backups a crash interrupted (they hold hard
/// links to table files RocksDB has since deleted).
fn sweep_checkpoints(data_path: &Path) {
    let Ok(entries) = std::fs::read_dir(data_path) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".backup-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Where a backup is read from: a folder, or `s3://bucket/prefix` (credentials, region and
/// endpoint from the usual `AWS_*` environment variables).
fn open_source(from: &str) -> Result<FileStore> {
    if let Some(url) = from.strip_prefix("s3://") {
        let (bucket, prefix) = url.split_once('/').unwrap_or((url, ""));
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT"));
        return FileStore::s3(&S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            allow_http: endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
            endpoint,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            request_timeout: std::time::Duration::from_secs(60),
            connect_timeout: std::time::Duration::from_secs(10),
        })
        .map_err(|e| KalamError::InvalidInput(format!("cannot open {from}: {e}")));
    }
    let dir = Path::new(from);
    if !dir.is_dir() {
        return Err(KalamError::InvalidInput(format!(
            "backup folder {from} does not exist"
        )));
    }
    FileStore::local(dir).map_err(store_error)
}

/// Restores the backup at `from` (a folder or `s3://bucket/prefix`) into `data_dir` (a
/// server's `storage.data_path`), which must not exist or be empty; the server must not be
/// running on it. Filesystem storages go back to their folders, which must be empty; S3
/// storages' objects go back to their bucket and prefix, which must be empty too, unless
/// `keep_s3` (the bucket is left as it is and the restored server uses what is there now).
/// Every target is checked before anything is written, and what was written is removed
/// again when a copy fails. `plan` is told each copy before it starts.
pub async fn restore(
    from: &str,
    data_dir: &Path,
    keep_s3: bool,
    plan: &mut dyn FnMut(&str),
) -> Result<BackupReport> {
    let source = open_source(from)?;
    let text = source
        .get_file("", "backup.json")
        .await
        .map_err(store_error)?
        .ok_or_else(|| KalamError::InvalidInput(format!("{from} holds no backup.json")))?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| KalamError::InvalidInput(format!("{from} is not a backup: {e}")))?;
    if manifest.version > FORMAT_VERSION {
        return Err(KalamError::InvalidInput(format!(
            "{from} is a backup of format {}, newer than this server reads ({FORMAT_VERSION})",
            manifest.version
        )));
    }
    let complete = source
        .get_file("rocksdb", "CURRENT")
        .await
        .map_err(store_error)?
        .is_some();
    if !complete {
        return Err(KalamError::InvalidInput(format!(
            "{from} has no rocksdb/CURRENT: the backup is incomplete"
        )));
    }
    require_empty(data_dir, "data folder (restore into a new one)")?;
    // Every target is checked before anything is copied.
    let mut targets = Vec::new();
    for (id, base) in &manifest.storages {
        if Path::new(base)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(KalamError::InvalidInput(format!(
                "storage {id}'s folder '{base}' climbs out with '..'"
            )));
        }
        let to = storage_path(data_dir, base);
        require_empty(&to, &format!("storage {id}'s folder"))?;
        targets.push((id.clone(), to));
    }
    let mut s3_targets = Vec::new();
    if !keep_s3 {
        for record in &manifest.s3_storages {
            let store = kalamdb_catalog::storages::open(record, data_dir)?;
            if store.has_any("").await.map_err(store_error)? {
                return Err(KalamError::InvalidInput(format!(
                    "storage {}'s location {} is not empty: empty it (or restore into a new \
                     bucket of that name), or pass --keep-s3-storages to leave it as it is",
                    record.storage_id, record.base_directory
                )));
            }
            s3_targets.push((
                record.storage_id.clone(),
                record.base_directory.clone(),
                store,
            ));
        }
    }
    let mut report = BackupReport::default();
    let mut written: Vec<PathBuf> = Vec::new();
    let mut uploaded: Vec<&FileStore> = Vec::new();
    let result: Result<()> = async {
        let local = |dir: &Path| FileStore::local(dir).map_err(store_error);
        let db = data_dir.join("rocksdb");
        plan(&format!("database files -> {}", db.display()));
        written.push(db.clone());
        report.add(
            source
                .copy_all("rocksdb", &local(&db)?, "")
                .await
                .map_err(store_error)?,
        );
        drop_raft_partitions(&db)?;
        for (id, to) in &targets {
            plan(&format!("storage {id} -> {}", to.display()));
            written.push(to.clone());
            let from = format!("storages/{id}");
            report.add(
                source
                    .copy_all(&from, &local(to)?, "")
                    .await
                    .map_err(store_error)?,
            );
        }
        for (id, base, store) in &s3_targets {
            plan(&format!("storage {id} -> {base}"));
            uploaded.push(store);
            let from = format!("storages/{id}");
            report.add(
                source
                    .copy_all(&from, store, "")
                    .await
                    .map_err(store_error)?,
            );
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // The targets were empty: put them back that way, so the restore can be run again.
        for dir in written {
            let _ = std::fs::remove_dir_all(dir);
        }
        for store in uploaded {
            let _ = store.remove_all("").await;
        }
        return Err(e);
    }
    Ok(report)
}

/// Creates `dir` readable by this user only (a backup holds password hashes).
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("cannot restrict", dir, e))?;
    }
    Ok(())
}

/// Refuses a folder that exists and holds anything.
fn require_empty(dir: &Path, what: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))?;
    if entries.next().is_some() {
        return Err(KalamError::InvalidInput(format!(
            "{what} {} is not empty",
            dir.display()
        )));
    }
    Ok(())
}

/// Where a filesystem storage's files are: relative base directories are under the data path.
fn storage_path(data_path: &Path, base_directory: &str) -> PathBuf {
    let base = Path::new(base_directory);
    if base.is_absolute() {
        base.to_path_buf()
    } else {
        data_path.join(base)
    }
}

fn count(dir: &Path, report: &mut BackupReport) {
    for entry in walk(dir) {
        report.files += 1;
        report.bytes += entry.1;
    }
}

/// Files under `dir` (recursively) with their sizes.
fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    out.push((path, e.metadata().map(|m| m.len()).unwrap_or(0)));
                }
                _ => {}
            }
        }
    }
    out
}
