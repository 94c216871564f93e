//! How the controller reaches a host: one small trait, two implementations.
//!
//! `ssh` drives real hosts; [`local`] runs the same
//! commands as subprocesses on this machine for the embedded default. Everything above
//! this module (bootstrap, distribute, rollout) is written once against
//! [`Transport`] and [`Connection`], like colmena's `Host`.
//!
//! A connection is opened once per host and reused for all of its commands. Every
//! failure carries the host and the [`Stage`] it happened in, so a report can say
//! "web-3: connect: ..." rather than "connection refused".

pub mod bootstrap;
mod chosen;
mod known_hosts;
pub mod local;
mod ssh;

pub use chosen::{Chosen, ChosenConnection};

use std::future::Future;
use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

/// What rookery was doing with a host when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connect,
    HostKey,
    Auth,
    Bootstrap,
    Upload,
    Fetch,
    Command,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::HostKey => "host key",
            Stage::Auth => "auth",
            Stage::Bootstrap => "bootstrap",
            Stage::Upload => "upload",
            Stage::Fetch => "fetch",
            Stage::Command => "command",
        })
    }
}

/// A failure on one host.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host}: {stage}: {message}")]
pub struct HostError {
    pub host: String,
    pub stage: Stage,
    pub message: String,
    /// A changed or revoked host key: the whole run stops, on every host.
    pub fatal: bool,
}

impl HostError {
    pub fn new(host: &str, stage: Stage, message: impl Into<String>) -> HostError {
        HostError {
            host: host.to_string(),
            stage,
            message: message.into(),
            fatal: false,
        }
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// The exit status; `None` when the command was killed by a signal.
    pub status: Option<u32>,
    /// The signal that killed it, if any.
    pub signal: Option<String>,
    /// The last lines the command wrote on stderr (at most [`STDERR_TAIL`]).
    pub stderr_tail: Vec<String>,
}

/// How many stderr lines a failure report keeps.
pub const STDERR_TAIL: usize = 8;

impl Finished {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// `exit status 3: <stderr tail>` for a report.
    pub fn describe(&self) -> String {
        let how = match (&self.status, &self.signal) {
            (Some(s), _) => format!("exit status {s}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "ended without an exit status".to_string(),
        };
        if self.stderr_tail.is_empty() {
            how
        } else {
            format!("{how}: {}", self.stderr_tail.join(" / "))
        }
    }
}

/// Keeps the last [`STDERR_TAIL`] lines of a stream.
#[derive(Debug, Default)]
pub struct Tail {
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else if self.partial.len() < 4096 {
                self.partial.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end()
            .to_string();
        self.partial.clear();
        if line.is_empty() {
            return;
        }
        if self.lines.len() == STDERR_TAIL {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.end_line();
        }
        self.lines.into()
    }
}

/// Splits a byte stream into lines for a callback.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    pub fn push(&mut self, bytes: &[u8], f: &mut (dyn FnMut(&str) + Send)) {
        for &b in bytes {
            if b == b'\n' {
                f(String::from_utf8_lossy(&self.partial).trim_end());
                self.partial.clear();
            } else {
                self.partial.push(b);
            }
        }
    }

    pub fn finish(self, f: &mut (dyn FnMut(&str) + Send)) {
        if !self.partial.is_empty() {
            f(String::from_utf8_lossy(&self.partial).trim_end());
        }
    }
}

/// Opens connections to the hosts of an inventory.
pub trait Transport: Send + Sync + 'static {
    type Connection: Connection;

    /// Connects to inventory host `host` (index), authenticated and trusted.
    fn connect(
        &self,
        host: usize,
    ) -> impl Future<Output = Result<Self::Connection, HostError>> + Send;

    /// Whether hosts need the rookery binary uploaded (they are other machines).
    fn needs_bootstrap(&self) -> bool;

    /// Where the rookery binary is, or is put, on inventory host `host`.
    fn agent_path(&self, host: usize) -> String;
}

/// One open connection to one host.
pub trait Connection: Send + Sync + 'static {
    /// Runs `command` (a POSIX shell command line) and calls `stdout` with each line it
    /// prints. The command's stdin stays open, and empty, until the call returns. On
    /// cancellation the command is sent SIGTERM and its stdin is closed; the call
    /// returns once it has ended (or after a grace period).
    fn exec(
        &self,
        command: &str,
        stdout: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> impl Future<Output = std::io::Result<Finished>> + Send {
        self.exec_with_input(command, None, stdout, cancel)
    }

    /// [`Connection::exec`], except that with `Some(input)` the command reads `input`
    /// on stdin and then end of file. This carries a small file along with the
    /// command that uses it: one round trip instead of an SFTP upload's three.
    fn exec_with_input(
        &self,
        command: &str,
        input: Option<&[u8]>,
        stdout: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> impl Future<Output = std::io::Result<Finished>> + Send;

    /// Writes `data` to `path` on the host with `mode`, atomically: a temporary file
    /// in the same directory, then a rename. Creates the directory.
    fn upload(
        &self,
        data: &[u8],
        path: &str,
        mode: u32,
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Reads a (small) file from the host.
    fn download(&self, path: &str) -> impl Future<Output = std::io::Result<Vec<u8>>> + Send;

    /// This machine's address as seen by the host, when the connection is direct.
    fn local_ip(&self) -> Option<IpAddr>;
}

/// Connects to `hosts`, at most `forks` at a time; one result per host, in order.
pub async fn connect_all<T: Transport>(
    transport: &T,
    hosts: &[usize],
    forks: usize,
) -> Vec<Result<T::Connection, HostError>> {
    use futures_util::StreamExt;
    let jobs = hosts.iter().map(|&h| transport.connect(h));
    futures_util::stream::iter(jobs)
        .buffered(forks.max(1))
        .collect()
        .await
}

/// Runs `hooks` in order over `conn` (a host's, or [`crate::transport::local::LocalConnection`]
/// for the controller's own hooks); the first that fails stops the rest, and the
/// error names it (`{what} hook `...`: ...`).
pub async fn run_hooks<C: Connection>(
    conn: &C,
    hooks: &[crate::config::template::Template],
    vars: &std::collections::BTreeMap<&str, String>,
    what: &str,
) -> Result<(), HookFailed> {
    let never = CancellationToken::new();
    for hook in hooks {
        let failed = |reason: String| HookFailed {
            what: what.to_string(),
            hook: hook.as_str().to_string(),
            reason,
        };
        let cmd = hook.render(vars);
        let f = conn
            .exec(&cmd, &mut |_| {}, &never)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !f.success() {
            return Err(failed(f.describe()));
        }
    }
    Ok(())
}

/// A hook that could not run or did not succeed; the ones after it did not run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} hook `{hook}`: {reason}")]
pub struct HookFailed {
    /// Which list: `before_restart`, `after_distribute`, ...
    pub what: String,
    /// The hook as the playbook writes it.
    pub hook: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..20 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"partial");
        let lines = t.finish();
        assert_eq!(lines.len(), STDERR_TAIL);
        assert_eq!(lines.last().unwrap(), "partial");
        assert_eq!(lines[0], "line 13");
    }

    #[test]
    fn finished_describes_status_signal_and_tail() {
        let f = Finished {
            status: Some(3),
            signal: None,
            stderr_tail: vec!["mkdir: denied".into()],
        };
        assert_eq!(f.describe(), "exit status 3: mkdir: denied");
        let k = Finished {
            status: None,
            signal: Some("KILL".into()),
            stderr_tail: vec![],
        };
        assert_eq!(k.describe(), "killed by signal KILL");
    }
}
