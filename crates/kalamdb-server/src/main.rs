//! `kalamdb-server`: loads the configuration and runs the server until SIGINT/SIGTERM.

use clap::Parser;
use kalamdb_server::Settings;
use std::path::PathBuf;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc instead of the system allocator: a cluster member allocates and frees a log
/// entry's buffers on several threads (encode, decode, apply), where glibc's malloc spent a
/// sixth of the Raft threads' time consolidating chunks (docs/benchmarks.md, session 9).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// KalamDB server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file; a missing file means built-in defaults. Every option can also be set
    /// with KALAMDB_<SECTION>_<KEY> environment variables.
    #[arg(long, default_value = "./server.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Restores a backup (`BACKUP DATABASE TO '…'`) into a new data folder, offline: start the
    /// server on that folder afterwards.
    Restore {
        /// The backup: a folder, or s3://bucket/prefix (credentials, region and endpoint from
        /// the AWS_* environment variables, e.g. AWS_ENDPOINT_URL).
        #[arg(long)]
        from: String,
        /// The data folder to create (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// Leave the S3 storages' buckets as they are instead of writing the backup's objects
        /// back into them (which must then be empty). Only for restoring in place of the
        /// original server: the restored catalog then reads what the buckets hold now.
        #[arg(long)]
        keep_s3_storages: bool,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::Restore {
        from,
        data_dir,
        keep_s3_storages,
    }) = &args.command
    {
        let restored = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| kalamdb_catalog::error::KalamError::Internal(e.to_string()))
            .and_then(|rt| {
                rt.block_on(kalamdb_core::backup::restore(
                    from,
                    data_dir,
                    *keep_s3_storages,
                    &mut |step| println!("restoring {step}"),
                ))
            });
        return match restored {
            Ok(r) => {
                println!(
                    "restored {} file(s), {} bytes into {}",
                    r.files,
                    r.bytes,
                    data_dir.display()
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kalamdb-server restore: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let settings = match Settings::load(&args.config, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kalamdb-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // openraft narrates every election and state change at info: warnings and up unless the
    // filter names it.
    let level = &settings.engine.logging.level;
    let level = if level.contains("openraft") {
        level.clone()
    } else {
        format!("{level},openraft=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Log lines go to stderr (text or JSON) and, the recent ones, to system.server_logs.
    // Lines logged while a request is served carry its `request_id` (the `request` span).
    let json = settings.engine.logging.format == "json";
    let text_output =
        (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json_output = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_output)
        .with(json_output)
        .with(kalamdb_core::server_logs::layer())
        .init();
    // Connection handling runs here; queries run on the engine's own runtime. Deep stacks
    // leave room for the recursion over statements the expression limits admit.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(16 * 1024 * 1024)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kalamdb-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let node = settings.engine.server.node_id.clone();
        match kalamdb_server::start(settings, true).await {
            Ok(server) => {
                // Tests and scripts read this line to find the port.
                println!(
                    "kalamdb-server listening on http://{} (node {node})",
                    server.addr
                );
                tracing::info!(addr = %server.addr, node = %node, "listening");
                server.wait().await;
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kalamdb-server: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}
