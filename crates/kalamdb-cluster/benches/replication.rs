//! Cost of a replicated write: three nodes in this process (each its own RocksDB in a temp
//! folder, RPC over loopback HTTP, sharing this machine's cores as three processes would), one
//! data group; a 100-byte put proposed to the group's leader and applied on it after a majority
//! appended it. `one client`: latency of one write at a time; `10 in flight`: ten concurrent
//! writes per iteration (openraft batches them into fewer appends), throughput in writes/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kalamdb_cluster::shard::ShardMap;
use kalamdb_cluster::state_machine::Partitions;
use kalamdb_cluster::{ClusterNode, Command, Topology};
use kalamdb_store::{KeyLayout, RocksBackend, StorageBackend, StoreOptions, WriteBatch};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const GROUP: u64 = 1;

fn put(i: u64) -> Command {
    let mut batch = WriteBatch::new();
    batch.put("g1.t", i.to_be_bytes().to_vec(), vec![b'x'; 100]);
    Command::write(batch)
}

fn replicated_writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let (nodes, leader) = rt.block_on(async {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let members: BTreeMap<u64, kalamdb_cluster::Member> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let addr = l.local_addr().unwrap().to_string();
                (i as u64 + 1, kalamdb_cluster::Member::new(addr, ""))
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let backend: Arc<dyn StorageBackend> = Arc::new(
                RocksBackend::open(
                    &root.path().join(format!("n{id}")),
                    &StoreOptions::default(),
                )
                .unwrap(),
            );
            let topology = Topology {
                join: false,
                node_id: id,
                members: members.clone(),
                map: ShardMap::new(1, 1),
                raft: openraft::Config {
                    heartbeat_interval: 100,
                    election_timeout_min: 500,
                    election_timeout_max: 1000,
                    ..Default::default()
                },
                key: None,
                tls: None,
            };
            let owns = |g: u64| -> Arc<dyn kalamdb_cluster::state_machine::Ownership> {
                Arc::new(Partitions(move |p: &str| p.starts_with(&format!("g{g}."))))
            };
            nodes.push(
                ClusterNode::start(topology, backend, owns, listener)
                    .await
                    .unwrap(),
            );
        }
        let leader = loop {
            let found = nodes.iter().position(|n| {
                n.status()
                    .iter()
                    .any(|s| s.group == GROUP && s.state == "leader")
            });
            if let Some(at) = found {
                break at;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let create = Command::CreatePartition {
            name: "g1.t".into(),
            layout: KeyLayout::Flat,
        };
        nodes[leader].write(GROUP, create).await.unwrap();
        (nodes, leader)
    });
    let node = &nodes[leader];
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("replicated write, 3 nodes");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    group.bench_function("one client", |b| {
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            rt.block_on(node.write(GROUP, put(i))).unwrap()
        })
    });
    group.throughput(Throughput::Elements(10));
    group.bench_function("10 in flight", |b| {
        b.iter(|| {
            rt.block_on(async {
                let writes = (0..10).map(|_| {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    node.write(GROUP, put(i))
                });
                for w in futures::future::join_all(writes).await {
                    w.unwrap();
                }
            })
        })
    });
    group.finish();
    rt.block_on(async {
        for n in nodes {
            n.shutdown().await;
        }
    });
}

criterion_group!(benches, replicated_writes);
criterion_main!(benches);
