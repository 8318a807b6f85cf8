//! `kalam`, the terminal client of KalamDB: a client of the wire protocol only (it shares
//! `kalamdb-commons`' wire types with the server, never the engine).
//!
//! - [`app`]: the command line's flow (find the server, log in, pick a mode);
//! - [`client`]: HTTP (login, refresh, SQL); [`live`]: WebSocket live queries;
//! - [`runner`]: statements split like the server and run one by one;
//! - [`shell`] and [`complete`]: the interactive shell and its completion;
//! - [`render`]: tables, JSON and CSV; [`term`]: the terminal;
//! - [`transfer`]: imports and exports; [`config`]: `~/.kalam`; [`error`]: what users see.

pub mod app;
pub mod args;
pub mod client;
pub mod complete;
pub mod config;
pub mod error;
pub mod live;
pub mod render;
pub mod runner;
pub mod shell;
pub mod term;
pub mod transfer;
