//! Key layouts of partitions and the record of which partitions are scoped.
//!
//! A [`KeyLayout::Scoped`] partition promises that every key starts with a *scope prefix*: the
//! bytes up to and including the first NUL (KalamDB's per-user partitions of USER and STREAM
//! tables, keyed `user_id ‖ 0x00 ‖ …`). The RocksDB backend then gives it a memtable hashed by
//! that prefix (one small skiplist per scope instead of one big one, so inserts from many users
//! stop landing at random positions of a single skiplist) and prefix bloom filters in its
//! files. Scans of one scope use the prefix; scans of the whole partition ask for total order.
//!
//! Column-family options must be known when the database is opened, before any data can be
//! read, so the names of scoped partitions are kept beside the database in a small text file
//! (one name per line), replaced atomically. A name missing from it only costs speed: the
//! partition opens with the flat layout, which reads the same data correctly.

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
}

/// The scope prefix of `key`: up to and including its first NUL (the whole key without one).
pub(crate) fn scope_prefix(key: &[u8]) -> &[u8] {
    match key.iter().position(|b| *b == 0) {
        Some(i) => &key[..=i],
        None => key,
    }
}

/// The persisted set of scoped partition names.
#[derive(Debug)]
pub(crate) struct ScopedNames {
    file: PathBuf,
    names: BTreeSet<String>,
}

impl ScopedNames {
    const FILE: &'static str = "KALAMDB-SCOPED-PARTITIONS";

    /// Loads the set kept in the database directory `dir` (empty when absent).
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let file = dir.join(Self::FILE);
        let names = match std::fs::read_to_string(&file) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self { file, names })
    }

    pub(crate) fn layout(&self, name: &str) -> KeyLayout {
        if self.names.contains(name) {
            KeyLayout::Scoped
        } else {
            KeyLayout::Flat
        }
    }

    /// Records `name` with `layout`; writes the file only when the set changes.
    pub(crate) fn set(&mut self, name: &str, layout: KeyLayout) -> Result<()> {
        let changed = match layout {
            KeyLayout::Scoped => self.names.insert(name.to_string()),
            KeyLayout::Flat => self.names.remove(name),
        };
        if changed { self.save() } else { Ok(()) }
    }

    fn save(&self) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            for name in &self.names {
                writeln!(f, "{name}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}
