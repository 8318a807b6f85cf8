//! End-to-end tests: the real server (in-process on a free port, or the real binary) with a
//! temp data dir, real RocksDB, spoken to over HTTP. One test binary for the crate.

mod support;

mod alter;
mod auth;
mod backup;
mod browser;
mod cdp;
mod cluster;
mod cluster_cold;
mod cluster_topics;
mod cold;
mod console;
mod crash;
mod export;
mod files;
mod hardening;
mod http_api;
mod isolation;
mod kalam_client;
mod linearizable;
mod live;
mod observe;
mod oidc;
mod restart;
mod s3;
mod scan;
mod slt;
mod topics;
mod transactions;
mod views;
