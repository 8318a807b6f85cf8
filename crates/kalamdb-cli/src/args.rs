//! The command line of `kalam` (upstream's flag names where it has them).

use clap::Parser;
use std::path::PathBuf;

/// `kalam`: a terminal client for KalamDB. Without -c, -f, --subscribe or --import it opens an
/// interactive shell (or runs the SQL piped on stdin).
#[derive(Debug, Parser)]
#[command(name = "kalam", version, about)]
pub struct Args {
    /// Server URL (default: `url` in ~/.kalam/config.toml, else http://127.0.0.1:8080).
    #[arg(short = 'u', long, env = "KALAM_URL")]
    pub url: Option<String>,
    /// Server host (with --port, instead of --url).
    #[arg(short = 'H', long)]
    pub host: Option<String>,
    /// Server port.
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// User to log in as.
    #[arg(long, alias = "username")]
    pub user: Option<String>,
    /// Password (prompted without echo when --user is given without it).
    #[arg(long)]
    pub password: Option<String>,
    /// An access token to use instead of logging in.
    #[arg(long)]
    pub token: Option<String>,
    /// Name of the saved credentials to use (default: the server's host:port).
    #[arg(long)]
    pub instance: Option<String>,
    /// Save the login's tokens to ~/.kalam/credentials.toml (mode 0600).
    #[arg(long)]
    pub save_credentials: bool,
    /// List the saved credentials (without secrets) and exit.
    #[arg(long)]
    pub show_credentials: bool,
    /// Delete the saved credentials of the instance and exit.
    #[arg(long)]
    pub delete_credentials: bool,
    /// Run these statements and exit.
    #[arg(short = 'c', long, allow_hyphen_values = true)]
    pub command: Option<String>,
    /// Run the statements of this file and exit.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Keep going after a failed statement (-f, stdin).
    #[arg(long)]
    pub continue_on_error: bool,
    /// Output format: table, json or csv.
    #[arg(long)]
    pub format: Option<String>,
    /// Same as --format json.
    #[arg(long, conflicts_with_all = ["format", "csv"])]
    pub json: bool,
    /// Same as --format csv.
    #[arg(long, conflicts_with = "format")]
    pub csv: bool,
    /// Default namespace for unqualified table names.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Print how long each statement took.
    #[arg(long)]
    pub timing: bool,
    /// Subscribe to a live query and print its rows and changes until Ctrl-C.
    #[arg(long, value_name = "SQL")]
    pub subscribe: Option<String>,
    /// Import a CSV, JSON Lines or Parquet file into a table: --import ns.table FILE.
    #[arg(long, num_args = 2, value_names = ["TABLE", "FILE"])]
    pub import: Option<Vec<String>>,
}
