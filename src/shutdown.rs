//! The one cancellation tree: the first Ctrl-C or SIGTERM cancels the root token so
//! every job stops cleanly; a second one exits at once with status 130.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::error::Exit;

/// Spawns the signal watcher on the current runtime; returns the root token.
pub fn install() -> CancellationToken {
    let root = CancellationToken::new();
    let token = root.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for round in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                token.cancel();
            } else {
                std::process::exit(Exit::Interrupted as i32);
            }
        }
    });
    root
}

/// Cancels `token` when stdin reaches end of file: a process the controller started
/// over SSH stops when the run ends or the connection drops, even where sshd does not
/// pass signals on.
pub fn cancel_on_stdin_eof(token: CancellationToken) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        token.cancel();
    });
}

/// The diagnostics `-v` asks for, when `ROOKERY_LOG` does not say.
static VERBOSE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records `-v` (1: rookery's steps; 2: their details; 3 or more: the BitTorrent
/// engine's too), for [`init_logging`].
pub fn set_verbosity(level: u8) {
    let filter = match level {
        0 => return,
        1 => "rookery=info",
        2 => "rookery=debug",
        _ => "rookery=trace,librqbit=debug",
    };
    let _ = VERBOSE.set(filter);
}

/// Sends diagnostics to stderr when `ROOKERY_LOG` is set (an env-filter such as
/// `librqbit=debug` or `rookery=info`) or `-v` was given; silent otherwise.
pub fn init_logging() {
    match std::env::var("ROOKERY_LOG") {
        Ok(filter) => init_filter(&filter),
        Err(_) => {
            if let Some(filter) = VERBOSE.get() {
                init_filter(filter);
            }
        }
    }
}

/// For processes whose stderr is a log file (background agents): `ROOKERY_LOG` if
/// set, else `default`.
pub fn init_logging_or(default: &str) {
    init_filter(&std::env::var("ROOKERY_LOG").unwrap_or_else(|_| default.to_string()));
}

fn init_filter(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// A multi-threaded runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A single-threaded runtime for a process that runs one BitTorrent engine (`agent
/// fetch`, `agent seed`). librqbit writes and hashes pieces inline on such a runtime;
/// on a multi-threaded one every block write hands the worker's core to another
/// thread (`block_in_place`), and the futex traffic cost more CPU than the transfer
/// itself (measured: 2.2 CPU-seconds to receive 512 MiB on loopback, see
/// docs/distribution.md).
pub fn engine_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    init_logging();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
