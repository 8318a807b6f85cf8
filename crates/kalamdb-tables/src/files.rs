//! The content of FILE columns on the cold tier: the folder uploads go to, the uploads whose
//! statement has not finished, and the sweep that deletes the files no row version refers to.
//!
//! A FILE cell holds a reference (JSON text with the file's `id`); the file itself is
//! `{FILE_FOLDER}/{id}-{slug}.{ext}` in its scope's folder. A file is garbage once no version
//! the table keeps refers to it: the latest version of every key in the hot tier and in the
//! one segment a full compaction leaves (tombstones keep their cells, so a deleted row's file
//! stays while its tombstone is retained). The sweep (in `flush`) runs after each full
//! compaction of a scope, under the scope's folder lock, so no flush moves rows meanwhile.
//!
//! Order matters for uploads racing the sweep: the folder is listed first, then the pending
//! uploads are read, then the rows. An upload listed but not pending any more has finished
//! its statement before the rows are read, so its row (if it committed) is seen.

use crate::rows::StoredRow;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use kalamdb_catalog::schema_registry::CachedTable;
use kalamdb_catalog::value::Value;
use kalamdb_commons::KalamDataType;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

/// The folder (inside a scope's folder) uploaded files are written to.
pub const FILE_FOLDER: &str = "f0001";

/// Uploads whose statement has not finished, by `{folder key}/{name}`.
#[derive(Debug, Default, Clone)]
pub(crate) struct PendingFiles(Arc<Mutex<HashSet<String>>>);

/// An uploaded file whose statement has not finished: the sweep leaves it alone until this is
/// dropped (after the statement committed or failed, or was cancelled).
#[derive(Debug)]
pub struct PendingFile {
    set: PendingFiles,
    key: String,
}

impl PendingFiles {
    /// Marks `name` of folder `folder_key` pending until the returned guard is dropped.
    pub(crate) fn hold(&self, folder_key: &str, name: &str) -> PendingFile {
        let key = format!("{folder_key}/{name}");
        self.lock().insert(key.clone());
        PendingFile {
            set: self.clone(),
            key,
        }
    }

    /// The pending names of folder `folder_key`.
    pub(crate) fn of(&self, folder_key: &str) -> HashSet<String> {
        let prefix = format!("{folder_key}/");
        self.lock()
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashSet<String>> {
        self.0.lock()
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        self.set.lock().remove(&self.key);
    }
}

/// The file id a stored name starts with (`{id}-{slug}.{ext}` or `{id}.{ext}`).
fn id_of_name(name: &str) -> &str {
    name.split(['-', '.']).next().unwrap_or(name)
}

/// The file id of a FILE cell's text, if it is a reference to a file of [`FILE_FOLDER`].
fn id_of_ref(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let sub = v.get("sub").and_then(|s| s.as_str()).unwrap_or(FILE_FOLDER);
    (sub == FILE_FOLDER)
        .then(|| v.get("id")?.as_str().map(str::to_string))
        .flatten()
}

/// Indexes (in the definition's columns, which lead the Arrow schema) of the FILE columns.
fn file_columns(table: &CachedTable) -> Vec<usize> {
    (table.def.columns.iter().enumerate())
        .filter(|(_, c)| c.data_type == KalamDataType::File)
        .map(|(i, _)| i)
        .collect()
}

/// The file ids `batch`'s FILE columns refer to, added to `ids`.
pub(crate) fn batch_refs(table: &CachedTable, batch: &RecordBatch, ids: &mut HashSet<String>) {
    for c in file_columns(table) {
        let Some(col) = batch.columns().get(c) else {
            continue;
        };
        if col.data_type() != &DataType::Utf8 {
            continue;
        }
        let texts = col.as_string::<i32>();
        ids.extend((0..texts.len()).filter_map(|r| {
            (!texts.is_null(r))
                .then(|| id_of_ref(texts.value(r)))
                .flatten()
        }));
    }
}

/// The file ids a stored row's FILE cells refer to, added to `ids`.
pub(crate) fn row_refs(table: &CachedTable, row: &StoredRow, ids: &mut HashSet<String>) {
    for c in file_columns(table) {
        if let Value::Text(t) = row.cell(table.def.columns[c].column_id)
            && let Some(id) = id_of_ref(t)
        {
            ids.insert(id);
        }
    }
}

/// The listed names to delete: neither referenced nor pending.
pub(crate) fn unreferenced(
    listed: Vec<String>,
    pending: &HashSet<String>,
    refs: &HashSet<String>,
) -> Vec<String> {
    listed
        .into_iter()
        .filter(|n| !pending.contains(n) && !refs.contains(id_of_name(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_names_meet_on_the_id() {
        assert_eq!(id_of_name("123-my-photo.png"), "123");
        assert_eq!(id_of_name("7.bin"), "7");
        let r = r#"{"id":"123","sub":"f0001","name":"My Photo.PNG","size":3}"#;
        assert_eq!(id_of_ref(r).as_deref(), Some("123"));
        assert_eq!(id_of_ref(r#"{"id":"9","sub":"f0002"}"#), None);
        assert_eq!(id_of_ref("not json"), None);
    }

    #[test]
    fn pending_and_referenced_files_stay() {
        let pending = PendingFiles::default();
        let held = pending.hold("k", "2-b.txt");
        let refs: HashSet<String> = ["1".to_string()].into();
        let listed = || ["1-a.txt", "2-b.txt", "3-c.txt"].map(String::from).to_vec();
        assert_eq!(unreferenced(listed(), &pending.of("k"), &refs), ["3-c.txt"]);
        assert!(pending.of("other").is_empty());
        drop(held);
        assert_eq!(
            unreferenced(listed(), &pending.of("k"), &refs),
            ["2-b.txt", "3-c.txt"]
        );
    }
}
