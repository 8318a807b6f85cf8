//! Key layouts of partitions and the record of which partitions are scoped.
//!
//! A [`KeyLayout::Scoped`] partition promises that every key starts with a *scope prefix*: the
//! bytes up to and including the first NUL (KalamDB's per-user partitions of USER and STREAM
//! tables, keyed `user_id ‖ 0x00 ‖ …`). The RocksDB backend then gives it a memtable hashed by
//! that prefix (one small skiplist per scope instead of one big one, so inserts from many users
//! stop landing at random positions of a single skiplist) and prefix bloom filters in its
//! files. Scans of one scope use the prefix; scans of the whole partition ask for total order.
//!
//! A [`KeyLayout::Log`] partition is flat, with uncompressed files.
//!
//! Column-family options must be known when the database is opened, before any data can be
//! read, so the names of scoped and log partitions are kept beside the database in a small
//! text file (one name per line, a log's after `log` and a tab), replaced atomically. A name
//! missing from it only costs speed: the partition opens with the flat layout, which reads the
//! same data correctly.

use crate::Result;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a partition's keys are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyLayout {
    /// No structure the store relies on.
    Flat,
    /// Every key starts with a scope prefix ending in the first NUL byte.
    Scoped,
    /// A log: keys written in order and deleted soon after (a Raft group's entries). Flat,
    /// but its files are not compressed: most of what is written is deleted before it would
    /// be read again, and compressing it cost a cluster member more than its inserts.
    Log,
}

/// The scope prefix of `key`: up to and including its first NUL (the whole key without one).
pub(crate) fn scope_prefix(key: &[u8]) -> &[u8] {
    match key.iter().position(|b| *b == 0) {
        Some(i) => &key[..=i],
        None => key,
    }
}

/// The persisted layouts of the partitions that are not flat.
#[derive(Debug)]
pub(crate) struct ScopedNames {
    file: PathBuf,
    names: BTreeSet<String>,
    logs: BTreeSet<String>,
}

/// What starts a log partition's line in the file (no partition name holds a tab).
const LOG_LINE: &str = "log\t";

impl ScopedNames {
    const FILE: &'static str = "KALAMDB-SCOPED-PARTITIONS";

    /// Loads the set kept in the database directory `dir` (empty when absent).
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let file = dir.join(Self::FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let mut names = BTreeSet::new();
        let mut logs = BTreeSet::new();
        for line in text.lines() {
            match line.strip_prefix(LOG_LINE) {
                Some(log) => logs.insert(log.to_string()),
                None => names.insert(line.to_string()),
            };
        }
        Ok(Self { file, names, logs })
    }

    pub(crate) fn layout(&self, name: &str) -> KeyLayout {
        if self.names.contains(name) {
            KeyLayout::Scoped
        } else if self.logs.contains(name) {
            KeyLayout::Log
        } else {
            KeyLayout::Flat
        }
    }

    /// Records `name` with `layout`; writes the file only when the set changes.
    pub(crate) fn set(&mut self, name: &str, layout: KeyLayout) -> Result<()> {
        let (into, other) = match layout {
            KeyLayout::Scoped => (Some(&mut self.names), &mut self.logs),
            KeyLayout::Log => (Some(&mut self.logs), &mut self.names),
            KeyLayout::Flat => {
                let removed = self.names.remove(name) | self.logs.remove(name);
                return if removed { self.save() } else { Ok(()) };
            }
        };
        let changed = other.remove(name) | into.is_some_and(|set| set.insert(name.to_string()));
        if changed { self.save() } else { Ok(()) }
    }

    fn save(&self) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for name in &self.names {
                writeln!(f, "{name}")?;
            }
            for name in &self.logs {
                writeln!(f, "{LOG_LINE}{name}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}
