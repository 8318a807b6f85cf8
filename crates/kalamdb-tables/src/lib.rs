//! Storage of KalamDB's application tables (USER, SHARED, STREAM): how their rows are kept,
//! read and written, below SQL and above the raw stores.
//!
//! ```text
//!  kalamdb-core (SQL) / kalamdb-live ──> TableStore ──┬─ ScopeWriter: lock, check, batch, commit gate, publish
//!                                                     ├─ scan: TableScanExec = hot range ⋈ segment runs, by key
//!                                                     ├─ get: latest versions of keys, both tiers
//!                                                     └─ flush / compact / drop
//!        hot tier: kalamdb-store partitions (rows)      cold tier: Parquet segments (kalamdb-filestore)
//! ```
//!
//! - [`store::TableStore`]: the facade; start here. [`writer::ScopeWriter`]: the write protocol.
//! - [`rows`]: hot-store keys and the row encoding; [`cold`]: segments, manifests and caches;
//!   [`flush`]: moving rows from the hot tier into segments, merging segments; [`files`]: FILE
//!   columns' uploaded files and the sweep of unreferenced ones.
//! - [`scan`]: the streaming, bounded-memory scan DataFusion executes; [`pruning`]: segment
//!   pruning by statistics.
//! - [`txn`]: transactions' snapshots, staging and atomic commits; [`snapshots`]: the
//!   snapshots and reads they use.
//! - [`write_locks`]: per-scope writer locks and the commit gate; [`changes`]: the listener
//!   committed changes go to (the live-query manager); [`replicated`]: the changes of writes
//!   another cluster node committed, as this node applies them.
//! - [`flush_scheduler`]: counters behind automatic flushes; [`background`]: the low-priority
//!   thread for flush and compaction CPU work; [`faults`]: failure and pause points for tests;
//!   [`file_gate`]: backups (here or another member's) against changes of segment files.
//!
//! Nothing here takes the server's context, parses SQL or knows HTTP.

pub mod background;
pub mod changes;
pub mod cold;
pub mod faults;
pub mod file_gate;
pub mod files;
pub mod flush;
pub mod flush_scheduler;
pub mod pruning;
pub mod replicated;
pub mod rows;
pub mod scan;
pub mod snapshots;
pub mod store;
pub mod txn;
pub mod write_locks;
pub mod writer;

pub use store::{TableStore, TableStoreOptions};
pub use writer::ScopeWriter;
