//! The `kalam` binary; see the `kalamdb_cli` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = kalamdb_cli::args::Args::parse();
    std::process::ExitCode::from(kalamdb_cli::app::run(args))
}
