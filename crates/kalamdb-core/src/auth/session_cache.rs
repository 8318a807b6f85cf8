//! Cache of verified access tokens.
//!
//! A token seen before skips signature verification, claim parsing and the user lookup. An
//! entry is trusted only while no user record has changed since it was made (the catalog's
//! users epoch), and never past the token's expiry, so a role change, DROP USER or password
//! change takes effect on the next request exactly as without the cache.

use super::Identity;
use dashmap::DashMap;

/// Entries kept at most; beyond this the cache starts over (tokens are cheap to re-verify).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Entry {
    identity: Identity,
    /// Token expiry, Unix seconds.
    exp: i64,
    /// Users epoch read before the user record was.
    epoch: u64,
}

/// Verified access tokens by token text.
#[derive(Debug, Default)]
pub(crate) struct SessionCache {
    entries: DashMap<Box<str>, Entry>,
}

impl SessionCache {
    /// The identity of `token` if it was verified at `epoch` and has not expired at `now_secs`.
    pub(crate) fn get(&self, token: &str, epoch: u64, now_secs: i64) -> Option<Identity> {
        let entry = self.entries.get(token)?;
        (entry.epoch == epoch && now_secs < entry.exp).then(|| entry.identity.clone())
    }

    /// Remembers a token verified with the user record read after `epoch` was.
    pub(crate) fn put(&self, token: &str, identity: Identity, exp: i64, epoch: u64) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(
            token.into(),
            Entry {
                identity,
                exp,
                epoch,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_commons::{Role, UserId};

    #[test]
    fn entries_end_with_the_epoch_or_the_expiry() {
        let cache = SessionCache::default();
        let alice = Identity {
            user_id: UserId::new("alice"),
            role: Role::User,
        };
        cache.put("tok", alice.clone(), 100, 7);
        assert_eq!(cache.get("tok", 7, 99), Some(alice));
        assert_eq!(cache.get("tok", 8, 99), None, "a user changed since");
        assert_eq!(cache.get("tok", 7, 100), None, "expired");
        assert_eq!(cache.get("other", 7, 99), None);
    }
}
