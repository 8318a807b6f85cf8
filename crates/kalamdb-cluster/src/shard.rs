//! The shard map (docs/cluster.md §3): which Raft group holds what. Group 0 is the meta group;
//! groups `1..=user_shards` hold USER and STREAM rows by user id; the next `shared_shards`
//! groups hold SHARED tables by table id. A pure function of the two counts, fixed at
//! bootstrap, with a hash that does not change across versions or platforms (xxh3-64).

use twox_hash::XxHash3_64;

/// The meta group's id.
pub const META: u64 = 0;

/// Where rows and tables live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    user_shards: u32,
    shared_shards: u32,
}

/// The kind of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Namespaces, tables, users, storages, jobs, the shard map.
    Meta,
    /// USER and STREAM rows of some users.
    User,
    /// Some SHARED tables.
    Shared,
}

impl ShardMap {
    /// A map of `user_shards` and `shared_shards` data groups (each at least 1).
    pub fn new(user_shards: u32, shared_shards: u32) -> Self {
        Self {
            user_shards: user_shards.max(1),
            shared_shards: shared_shards.max(1),
        }
    }

    /// The map as its `[cluster]` settings spell it: `user_shards = 8, shared_shards = 1`.
    pub fn settings(&self) -> String {
        format!(
            "user_shards = {}, shared_shards = {}",
            self.user_shards, self.shared_shards
        )
    }

    fn slot(id: &str, n: u32) -> u64 {
        XxHash3_64::oneshot(id.as_bytes()) % u64::from(n)
    }

    /// The group of a user's USER and STREAM rows.
    pub fn user_group(&self, user_id: &str) -> u64 {
        1 + Self::slot(user_id, self.user_shards)
    }

    /// The group of a SHARED table (`namespace.table`).
    pub fn shared_group(&self, table_id: &str) -> u64 {
        1 + u64::from(self.user_shards) + Self::slot(table_id, self.shared_shards)
    }

    /// Every group id, meta first.
    pub fn groups(&self) -> impl Iterator<Item = u64> {
        0..=u64::from(self.user_shards) + u64::from(self.shared_shards)
    }

    /// What a group holds; `None` for an id outside the map.
    pub fn kind(&self, group: u64) -> Option<GroupKind> {
        let users = u64::from(self.user_shards);
        match group {
            META => Some(GroupKind::Meta),
            g if g <= users => Some(GroupKind::User),
            g if g <= users + u64::from(self.shared_shards) => Some(GroupKind::Shared),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_numbered_meta_users_shared() {
        let map = ShardMap::new(8, 2);
        assert_eq!(
            map.groups().collect::<Vec<_>>(),
            (0..=10).collect::<Vec<_>>()
        );
        assert_eq!(map.kind(0), Some(GroupKind::Meta));
        assert_eq!(map.kind(8), Some(GroupKind::User));
        assert_eq!(map.kind(9), Some(GroupKind::Shared));
        assert_eq!(map.kind(11), None);
        for u in ["alice", "bob", "u-1"] {
            assert!((1..=8).contains(&map.user_group(u)));
        }
        assert!((9..=10).contains(&map.shared_group("app.t")));
    }

    #[test]
    fn the_map_is_stable_and_spreads_users() {
        let map = ShardMap::new(8, 1);
        // Pinned: a change of hash would move every user's rows to another group.
        assert_eq!(
            XxHash3_64::oneshot(b""),
            0x2D06_8005_38D3_94C2,
            "xxh3-64 of nothing"
        );
        assert_eq!(
            ["alice", "bob", "carol"].map(|u| map.user_group(u)),
            [1, 6, 5]
        );
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[(map.user_group(&format!("user-{i}")) - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
