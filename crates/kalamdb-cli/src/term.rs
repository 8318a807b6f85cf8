//! The terminal the CLI prints to: whether there is one, and its size.

use std::io::IsTerminal;

/// Whether standard output is a terminal (tables redraw in place, progress bars show).
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether standard input is a terminal (an interactive shell, password prompts).
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Columns and rows of the terminal on standard output; `COLUMNS`/`LINES`, else 120 × 40,
/// when it is not one.
pub fn size() -> (u16, u16) {
    let from_env = |name: &str, default: u16| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    winsize().unwrap_or_else(|| (from_env("COLUMNS", 120), from_env("LINES", 40)))
}

#[cfg(unix)]
fn winsize() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass; the fd is stdout's.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row.max(10)))
}

#[cfg(not(unix))]
fn winsize() -> Option<(u16, u16)> {
    None
}
