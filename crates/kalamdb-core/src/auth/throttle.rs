//! Failed-login throttling per (account name, client IP).
//!
//! After `auth.max_failed_logins` consecutive failures for one name from one address, that
//! pair is refused (`ACCOUNT_LOCKED`) for `auth.lockout_seconds`, without checking the
//! password. Other addresses are not affected: an attacker cannot lock `root` out for
//! everyone. Names that do not exist are counted and locked exactly like real ones, so the
//! replies tell nothing about which accounts exist. IPv6 clients are keyed by their /64
//! network (one host can hold a whole /64). The state lives in memory (a restart forgets it).
//! Behind a reverse proxy every client shares the proxy's address, so a lock then covers all
//! of them for that name.

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Pairs tracked at most; beyond it, pairs that are neither locked nor recently failing are
/// forgotten first.
const MAX_ENTRIES: usize = 100_000;

/// Longest name kept as a key (longer names are cut).
const MAX_NAME: usize = 128;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed logins by (name, IP).
#[derive(Debug)]
pub(crate) struct LoginThrottle {
    entries: DashMap<(String, Option<IpAddr>), Failures>,
    max_failures: u32,
    lockout: Duration,
    /// When the table was last swept (at most once a second, however full it is).
    swept: parking_lot::Mutex<Instant>,
}

fn key(name: &str, ip: Option<IpAddr>) -> (String, Option<IpAddr>) {
    let ip = ip.map(|ip| match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        IpAddr::V6(v6) => IpAddr::V4(
            v6.to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ),
        v4 => v4,
    });
    (name.chars().take(MAX_NAME).collect(), ip)
}

impl LoginThrottle {
    pub(crate) fn new(max_failures: u32, lockout: Duration) -> Self {
        Self {
            entries: DashMap::new(),
            max_failures: max_failures.max(1),
            lockout,
            swept: parking_lot::Mutex::new(Instant::now()),
        }
    }

    /// Whether `name` from `ip` is locked out now.
    pub(crate) fn is_locked(&self, name: &str, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        self.entries
            .get(&key(name, ip))
            .and_then(|f| f.locked_until)
            .is_some_and(|until| until > now)
    }

    /// Records a failed login; true when it locked the pair.
    pub(crate) fn failed(&self, name: &str, ip: Option<IpAddr>) -> bool {
        if self.entries.len() >= MAX_ENTRIES {
            self.forget_idle();
        }
        let now = Instant::now();
        let mut entry = self.entries.entry(key(name, ip)).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        // A lock that ran out starts the count again.
        if entry.locked_until.is_some_and(|until| until <= now) {
            entry.count = 0;
            entry.locked_until = None;
        }
        entry.count += 1;
        entry.last = now;
        if entry.count >= self.max_failures {
            entry.locked_until = Some(now + self.lockout);
            entry.count = 0;
            return true;
        }
        false
    }

    /// Records a successful login: the pair starts over.
    pub(crate) fn succeeded(&self, name: &str, ip: Option<IpAddr>) {
        self.entries.remove(&key(name, ip));
    }

    fn forget_idle(&self) {
        let now = Instant::now();
        {
            let mut swept = self.swept.lock();
            if now.duration_since(*swept) < Duration::from_secs(1) {
                return;
            }
            *swept = now;
        }
        self.entries.retain(|_, f| {
            f.locked_until.is_some_and(|until| until > now)
                || now.duration_since(f.last) < self.lockout
        });
        if self.entries.len() >= MAX_ENTRIES {
            self.entries
                .retain(|_, f| f.locked_until.is_some_and(|until| until > now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_one_name_from_one_address() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let a: Option<IpAddr> = Some("127.0.0.2".parse().unwrap());
        let b: Option<IpAddr> = Some("127.0.0.3".parse().unwrap());
        assert!(!t.failed("root", a));
        assert!(!t.failed("root", a));
        assert!(t.failed("root", a));
        assert!(t.is_locked("root", a));
        assert!(!t.is_locked("root", b), "another address is not locked");
        assert!(!t.is_locked("alice", a), "another name is not locked");
        t.succeeded("root", b);
        assert!(t.is_locked("root", a));
    }

    #[test]
    fn ipv6_clients_count_by_network() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let a: Option<IpAddr> = Some("2001:db8::1".parse().unwrap());
        let b: Option<IpAddr> = Some("2001:db8::ffff:2".parse().unwrap());
        let other: Option<IpAddr> = Some("2001:db8:0:1::1".parse().unwrap());
        t.failed("root", a);
        assert!(t.failed("root", b), "same /64");
        assert!(t.is_locked("root", a));
        assert!(!t.is_locked("root", other));
    }

    #[test]
    fn locks_run_out() {
        let t = LoginThrottle::new(1, Duration::from_millis(0));
        assert!(t.failed("x", None));
        assert!(!t.is_locked("x", None));
    }
}
