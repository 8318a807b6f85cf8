//! `[cluster]`: the topology of a replicated deployment (`docs/cluster.md` §2). Absent, the
//! server runs alone and pays nothing for cluster code. This module only describes and checks
//! the configuration; the replication itself is built on openraft.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id in the cluster: ≥ 1, unique, never reused.
    pub node_id: u64,
    /// The internal RPC address peers reach this node on (`host:port`).
    pub rpc_addr: String,
    /// The node's client URL, shown in `system.cluster`.
    pub api_addr: String,
    /// Data groups for USER and STREAM tables (rows shard by user id).
    #[serde(default = "default_user_shards")]
    pub user_shards: u32,
    /// Data groups for SHARED tables (tables shard by table id).
    #[serde(default = "default_shared_shards")]
    pub shared_shards: u32,
    /// Leader heartbeat period.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    #[serde(default = "default_election_ms")]
    pub election_timeout_ms: [u64; 2],
    /// Log entries between state-machine snapshots (and the log kept for lagging followers).
    #[serde(default = "default_snapshot_threshold")]
    pub snapshot_threshold: u64,
    /// Every member at bootstrap, this node included.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// This node joins a running cluster: it initializes no group and waits until a member
    /// adds it (`CLUSTER ADD NODE`); `peers` then needs to list only this node.
    #[serde(default)]
    pub join: bool,
    /// mTLS on the RPC port.
    #[serde(default)]
    pub tls: Option<ClusterTls>,
}

/// `[[cluster.peers]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id.
    pub node_id: u64,
    /// Its RPC address.
    pub rpc_addr: String,
    /// Its client URL.
    pub api_addr: String,
}

/// `[cluster.tls]`: PEM files; both sides of every RPC connection present a certificate
/// signed by `ca`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// The CA certificate peers' certificates must chain to.
    pub ca: String,
    /// This node's certificate.
    pub cert: String,
    /// This node's private key.
    pub key: String,
}

fn default_user_shards() -> u32 {
    8
}
fn default_shared_shards() -> u32 {
    1
}
fn default_heartbeat_ms() -> u64 {
    100
}
fn default_election_ms() -> [u64; 2] {
    [600, 1200]
}
fn default_snapshot_threshold() -> u64 {
    50_000
}

/// Most data groups of either kind (a node hosts every group in the first version).
pub const MAX_SHARDS: u32 = 1024;

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl ClusterConfig {
    /// Checks the topology: ids, addresses, timing and TLS files' presence.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("cluster.node_id", "must be ≥ 1"));
        }
        parse_addr("cluster.rpc_addr", &self.rpc_addr)?;
        check_url("cluster.api_addr", &self.api_addr)?;
        for (key, n) in [
            ("cluster.user_shards", self.user_shards),
            ("cluster.shared_shards", self.shared_shards),
        ] {
            if !(1..=MAX_SHARDS).contains(&n) {
                return Err(invalid(key, format!("{n} is outside 1..={MAX_SHARDS}")));
            }
        }
        let [low, high] = self.election_timeout_ms;
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid("cluster.heartbeat_interval_ms", "must be > 0"));
        }
        if low < 3 * self.heartbeat_interval_ms || high <= low {
            return Err(invalid(
                "cluster.election_timeout_ms",
                format!(
                    "[{low}, {high}] must be a range whose low end is at least 3 heartbeats \
                     ({} ms)",
                    3 * self.heartbeat_interval_ms
                ),
            ));
        }
        if self.snapshot_threshold == 0 {
            return Err(invalid("cluster.snapshot_threshold", "must be > 0"));
        }
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for p in &self.peers {
            if p.node_id == 0 || !ids.insert(p.node_id) {
                return Err(invalid(
                    "cluster.peers",
                    format!("node id {} is 0 or listed twice", p.node_id),
                ));
            }
            let addr = parse_addr("cluster.peers.rpc_addr", &p.rpc_addr)?;
            if !addrs.insert(addr) {
                return Err(invalid(
                    "cluster.peers",
                    format!("rpc_addr {} is listed twice", p.rpc_addr),
                ));
            }
            check_url("cluster.peers.api_addr", &p.api_addr)?;
        }
        match self.peers.iter().find(|p| p.node_id == self.node_id) {
            Some(me) if me.rpc_addr == self.rpc_addr => {}
            Some(me) => {
                return Err(invalid(
                    "cluster.peers",
                    format!(
                        "this node ({}) is listed with rpc_addr {}, not {}",
                        self.node_id, me.rpc_addr, self.rpc_addr
                    ),
                ));
            }
            None if self.peers.is_empty() => {
                return Err(invalid(
                    "cluster.peers",
                    "list every member, this node included",
                ));
            }
            None => {
                return Err(invalid(
                    "cluster.peers",
                    format!("this node ({}) must be one of the peers", self.node_id),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("cluster.tls.ca", &tls.ca),
                ("cluster.tls.cert", &tls.cert),
                ("cluster.tls.key", &tls.key),
            ] {
                if !std::path::Path::new(path).is_file() {
                    return Err(invalid(key, format!("{path} is not a readable file")));
                }
            }
        }
        Ok(())
    }
}

fn parse_addr(key: &'static str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse()
        .map_err(|_| invalid(key, format!("'{addr}' is not an ip:port address")))
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(invalid(key, format!("'{url}' is not an http(s):// URL")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ClusterConfig {
        crate::config::Config::from_toml(
            r#"
            [cluster]
            node_id = 2
            rpc_addr = "127.0.0.1:9189"
            api_addr = "http://127.0.0.1:8081"
            [[cluster.peers]]
            node_id = 1
            rpc_addr = "127.0.0.1:9188"
            api_addr = "http://127.0.0.1:8080"
            [[cluster.peers]]
            node_id = 2
            rpc_addr = "127.0.0.1:9189"
            api_addr = "http://127.0.0.1:8081"
            [[cluster.peers]]
            node_id = 3
            rpc_addr = "127.0.0.1:9190"
            api_addr = "http://127.0.0.1:8082"
            "#,
        )
        .unwrap()
        .cluster
        .unwrap()
    }

    #[test]
    fn a_three_node_topology_parses_with_defaults() {
        let c = three();
        assert_eq!((c.user_shards, c.shared_shards), (8, 1));
        assert_eq!(c.election_timeout_ms, [600, 1200]);
        c.validate().unwrap();
        assert!(crate::config::Config::default().cluster.is_none());
    }

    #[test]
    fn bad_topologies_name_the_key() {
        let key = |c: ClusterConfig| match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let mut c = three();
        c.node_id = 0;
        assert_eq!(key(c), "cluster.node_id");
        let mut c = three();
        c.node_id = 4;
        assert_eq!(key(c), "cluster.peers");
        let mut c = three();
        c.rpc_addr = "127.0.0.1:9999".into();
        assert_eq!(key(c), "cluster.peers");
        let mut c = three();
        c.peers[2].node_id = 1;
        assert_eq!(key(c), "cluster.peers");
        let mut c = three();
        c.peers[2].rpc_addr = "127.0.0.1:9188".into();
        assert_eq!(key(c), "cluster.peers");
        let mut c = three();
        c.rpc_addr = "localhost".into();
        assert_eq!(key(c), "cluster.rpc_addr");
        let mut c = three();
        c.peers.clear();
        assert_eq!(key(c), "cluster.peers");
        let mut c = three();
        c.user_shards = 0;
        assert_eq!(key(c), "cluster.user_shards");
        let mut c = three();
        c.election_timeout_ms = [200, 2000];
        assert_eq!(key(c), "cluster.election_timeout_ms");
        let mut c = three();
        c.api_addr = "127.0.0.1:8081".into();
        assert_eq!(key(c), "cluster.api_addr");
        let mut c = three();
        c.tls = Some(ClusterTls {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        });
        assert_eq!(key(c), "cluster.tls.ca");
    }
}
