//! Lifecycle of the KalamDB server: open the engine, bind, serve, shut down gracefully.
//!
//! [`start`] is what the binary runs and what in-process tests call: it returns a
//! [`RunningServer`] with the bound address and a handle to stop it. Shutdown stops accepting,
//! lets in-flight requests finish (bounded by `server.shutdown_timeout_secs`), then flushes the
//! store. Connection limits and timeouts are in `listener.rs`.

mod cluster;
mod listener;
pub mod settings;

pub use settings::Settings;

use kalamdb_api::{ApiState, router};
use kalamdb_core::AppContext;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine could not open.
    #[error("cannot open the database: {0}")]
    Open(#[from] kalamdb_catalog::KalamError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// host:port.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster member could not start (`[cluster]`).
    #[error("cannot start the cluster member: {0}")]
    Cluster(String),
}

/// How long [`RunningServer::shutdown`] waits for the last holders of the engine.
pub const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The engine (for in-process inspection).
    pub app: Arc<AppContext>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, waits for in-flight requests, flushes the store, and returns once the
    /// hot store is closed (its data directory can be opened again), or after
    /// [`RELEASE_WAIT`] with a warning.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        // Connection tasks aborted at the end of the grace period, a query thread finishing
        // its request, a scan's reader thread, a background tick: each may hold the engine or
        // its store a moment longer. The store closes when the last of them lets go.
        let store = Arc::downgrade(self.app.backend());
        drop(self);
        let until = std::time::Instant::now() + RELEASE_WAIT;
        while store.strong_count() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if store.strong_count() > 0 {
            tracing::warn!("the hot store is still open after shutdown");
        }
    }

    /// Waits until the server stops by itself (signal).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Opens the engine, binds `server.host:server.port` and serves until [`RunningServer::shutdown`]
/// or, with `handle_signals`, SIGINT/SIGTERM.
pub async fn start(settings: Settings, handle_signals: bool) -> Result<RunningServer, ServerError> {
    let shown = settings.to_table();
    let Settings {
        engine: config,
        websocket,
        security,
    } = settings;
    let mut config = config;
    if let Some(cluster) = &config.cluster {
        // `_seq` generators are told apart by the node id: members must not share one.
        config.server.node_id = format!("node-{}", cluster.node_id);
    }
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let grace = Duration::from_secs(config.server.shutdown_timeout_secs);
    let file_limit = listener::raise_file_limit();
    let max_connections = config
        .server
        .max_connections
        .min(listener::connections_allowed_by(file_limit));
    let limits = listener::Limits {
        max_connections,
        // One address never holds more than half the slots, whatever the file limit allows.
        max_per_ip: config
            .server
            .max_connections_per_ip
            .min(max_connections / 2)
            .max(1),
        header_timeout: Duration::from_secs(config.server.request_header_timeout_secs),
        write_timeout: Duration::from_secs(config.server.response_write_timeout_secs),
    };
    tracing::info!(
        file_limit,
        max_connections = limits.max_connections,
        max_per_ip = limits.max_per_ip,
        "connection limits"
    );
    let (app, member) = match config.cluster.clone() {
        None => (kalamdb_core::engine::open(config).await?, None),
        Some(cluster) => {
            let member = cluster::start(&config, &cluster)
                .await
                .map_err(ServerError::Cluster)?;
            let app = member.open_engine(config).await?;
            (app, Some(member))
        }
    };
    if let Ok(shown) = shown {
        app.show_settings(shown);
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let service =
        router(ApiState::new(Arc::clone(&app), websocket, bound).with_cors(security.cors));
    let (tx, rx) = oneshot::channel::<()>();
    let engine = Arc::clone(&app);
    let task = tokio::spawn(async move {
        let (drained_tx, drained_rx) = oneshot::channel::<()>();
        let stop = async move {
            tokio::select! {
                _ = rx => {}
                _ = signal(handle_signals) => tracing::info!("signal received, shutting down"),
            }
            let _ = drained_tx.send(());
        };
        let serve = listener::serve(listener, service, limits, stop);
        let deadline = async move {
            let _ = drained_rx.await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            () = serve => {}
            _ = deadline => tracing::warn!("shutdown grace period over; dropping open connections"),
        }
        engine.shutdown();
        if let Some(member) = member {
            member.shutdown().await;
        }
        tracing::info!("server stopped");
    });
    Ok(RunningServer {
        addr: bound,
        app,
        stop: Some(tx),
        task,
    })
}

async fn signal(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
