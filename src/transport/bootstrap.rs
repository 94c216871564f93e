//! Bootstrap: hosts need nothing but sshd. Before rookery runs `rookery agent ...` on
//! a host, it makes sure the host has this very binary.
//!
//! The check is by checksum (`sha256sum` on the host against the SHA-256 of the
//! running binary), so a host with a stale or half-written copy gets the new one, and
//! a host that has it is not sent 20 MB again. The upload goes to a temporary file
//! next to the target (SFTP), then one rename puts it in place, so an agent starting
//! at that moment runs the old binary or the new one, never a torn one. After an
//! upload, `rookery --version` runs on the host: a binary for the wrong architecture
//! or a `noexec` mount fails here, at the bootstrap stage, not later in the fetch.
//!
//! The check can also run as a [`guard`] at the head of the command that needs the
//! binary (distribute's fetch), so that the usual case, a host that has this build,
//! costs no round trip of its own.

use std::sync::Arc;

use serde::Serialize;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::config::template::shell_quote;
use crate::transport::{Connection, HostError, Stage};

/// The binary to install, read once per run.
#[derive(Debug, Clone)]
pub struct Binary {
    pub data: Arc<Vec<u8>>,
    pub sha256: String,
}

impl Binary {
    /// The running rookery binary.
    pub fn current() -> anyhow::Result<Binary> {
        use anyhow::Context;
        let exe = std::env::current_exe().context("finding the rookery binary")?;
        let data = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
        Ok(Binary::new(data))
    }

    pub fn new(data: Vec<u8>) -> Binary {
        let sha256 = hex(&sha2::Sha256::digest(&data));
        Binary {
            data: Arc::new(data),
            sha256,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the bootstrap did on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The host already had this binary.
    Present,
    /// The binary was missing or different and was uploaded.
    Uploaded,
}

/// A shell command printing the SHA-256 of the file at `quoted` (shell-quoted), or
/// nothing when it is missing. The digest is cached beside it in `<path>.sha256`
/// with the file's size, inode and change time (`stat -c '%s %i %z'`, nanoseconds),
/// and recomputed when any of these differ: a write, a rename over it or a chmod
/// changes the change time, which no user can set. Hashing the 23 MB binary on every
/// host took 0.3 to 0.5 s of each deploy's start on a loaded machine; the cached
/// answer is one `stat`.
fn quick_sum_command(quoted: &str) -> String {
    format!(
        "p={quoted}; c=\"$p.sha256\"; \
         st=$(stat -c '%s %i %z' -- \"$p\" 2>/dev/null) || exit 0; \
         if [ -f \"$c\" ] && [ \"$(sed -n 2p \"$c\")\" = \"$st\" ]; then sed -n 1p \"$c\"; exit 0; fi; \
         sum=$(sha256sum -- \"$p\" | cut -d ' ' -f 1); \
         printf '%s\\n%s\\n' \"$sum\" \"$st\" > \"$c\" 2>/dev/null; \
         echo \"$sum\""
    )
}

/// The event a [`guard`] prints, as `{"event":"needs_binary"}`, when it stops.
pub const NEEDS_BINARY: &str = "needs_binary";

/// A shell snippet for the start of a command that runs the binary at `path`: when
/// that file is missing or is not `bin`, it prints a [`NEEDS_BINARY`] event and ends
/// the command (status 0); the caller then [`install`]s and runs it again. A deploy
/// whose hosts already have this build (all but the first after an upgrade) so makes
/// one round trip per host instead of a check, then the command.
pub fn guard(path: &str, bin: &Binary) -> String {
    format!(
        "s=$({}); if [ \"$s\" != {} ]; then echo '{{\"event\":\"{NEEDS_BINARY}\"}}'; exit 0; fi",
        quick_sum_command(&shell_quote(path)),
        shell_quote(&bin.sha256)
    )
}

/// Ensures `path` on the host holds `bin`; uploads it when it does not.
pub async fn ensure<C: Connection>(
    conn: &C,
    host: &str,
    path: &str,
    bin: &Binary,
    cancel: &CancellationToken,
) -> Result<Outcome, HostError> {
    let err = |m: String| HostError::new(host, Stage::Bootstrap, m);
    let quoted = shell_quote(path);
    let mut sum = String::new();
    let check = conn
        .exec(
            &quick_sum_command(&quoted),
            &mut |line| {
                if sum.is_empty() {
                    sum = line.split_whitespace().next().unwrap_or("").to_string();
                }
            },
            cancel,
        )
        .await
        .map_err(|e| err(format!("checking {path}: {e}")))?;
    if !check.success() {
        return Err(err(format!("checking {path}: {}", check.describe())));
    }
    if sum == bin.sha256 {
        return Ok(Outcome::Present);
    }
    install(conn, host, path, bin, cancel).await
}

/// Uploads `bin` to `path` on the host (atomically) and checks that it runs there.
/// `work` (an [`ensure`] or an [`install`]), given up after `limit` (the inventory's
/// `transport.ssh.command_timeout`) with an error that names the host and the setting.
pub async fn within<T>(
    limit: Option<std::time::Duration>,
    host: &str,
    work: impl std::future::Future<Output = Result<T, HostError>>,
) -> Result<T, HostError> {
    let Some(limit) = limit else {
        return work.await;
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(HostError::new(
            host,
            Stage::Bootstrap,
            format!(
                "putting the rookery binary in place took longer than {} (transport.ssh.command_timeout)",
                crate::config::units::format_duration(limit)
            ),
        ))
    })
}

pub async fn install<C: Connection>(
    conn: &C,
    host: &str,
    path: &str,
    bin: &Binary,
    cancel: &CancellationToken,
) -> Result<Outcome, HostError> {
    let err = |m: String| HostError::new(host, Stage::Bootstrap, m);
    let quoted = shell_quote(path);
    conn.upload(&bin.data, path, 0o755)
        .await
        .map_err(|e| err(format!("uploading the rookery binary to {path}: {e}")))?;
    let run = conn
        .exec(&format!("{quoted} --version"), &mut |_| {}, cancel)
        .await
        .map_err(|e| err(format!("running {path}: {e}")))?;
    if !run.success() {
        return Err(err(format!(
            "the uploaded binary does not run on this host (wrong architecture or a noexec mount?): {}",
            run.describe()
        )));
    }
    Ok(Outcome::Uploaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::local::LocalConnection;

    #[tokio::test]
    async fn uploads_once_then_finds_it_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin/rookery");
        let path = path.to_str().unwrap();
        let bin = Binary::new(b"#!/bin/sh\necho rookery 0\n".to_vec());
        let cancel = CancellationToken::new();
        let check = |bin: &Binary| {
            let bin = bin.clone();
            let cancel = cancel.clone();
            async move {
                ensure(&LocalConnection, "h", path, &bin, &cancel)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(check(&bin).await, Outcome::Uploaded);
        assert_eq!(check(&bin).await, Outcome::Present);
        // A different build replaces it.
        let newer = Binary::new(b"#!/bin/sh\necho rookery 1\n".to_vec());
        assert_eq!(check(&newer).await, Outcome::Uploaded);
        assert_eq!(std::fs::read(path).unwrap(), *newer.data);
        // Checked again: now the digest is cached beside it.
        assert_eq!(check(&newer).await, Outcome::Present);
        let cache = std::fs::read_to_string(format!("{path}.sha256")).unwrap();
        assert_eq!(cache.lines().next(), Some(newer.sha256.as_str()));
        // A change in place, of the same size, is still seen (the change time moves),
        // and the right build goes back.
        std::fs::write(path, b"#!/bin/sh\necho rookery 2\n").unwrap();
        assert_eq!(check(&newer).await, Outcome::Uploaded);
        assert_eq!(std::fs::read(path).unwrap(), *newer.data);
        assert_eq!(check(&newer).await, Outcome::Present);
    }

    #[tokio::test]
    async fn the_guard_stops_a_command_until_the_binary_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rookery");
        let path = path.to_str().unwrap();
        let bin = Binary::new(b"#!/bin/sh\necho ran \"$@\"\n".to_vec());
        let cancel = CancellationToken::new();
        let run = || async {
            let mut out = Vec::new();
            let command = format!("{}; {} hello", guard(path, &bin), shell_quote(path));
            let f = LocalConnection
                .exec(&command, &mut |l| out.push(l.to_string()), &cancel)
                .await
                .unwrap();
            assert!(f.success(), "{}", f.describe());
            out
        };
        assert_eq!(run().await, [r#"{"event":"needs_binary"}"#]);
        assert_eq!(
            install(&LocalConnection, "h", path, &bin, &cancel)
                .await
                .unwrap(),
            Outcome::Uploaded
        );
        assert_eq!(run().await, ["ran hello"]);
        // Another build: stopped again.
        std::fs::write(path, b"#!/bin/sh\necho old\n").unwrap();
        assert_eq!(run().await, [r#"{"event":"needs_binary"}"#]);
    }

    #[tokio::test]
    async fn a_binary_that_does_not_run_fails_the_bootstrap_stage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rookery");
        let bin = Binary::new(b"\x7fELF not really".to_vec());
        let e = ensure(
            &LocalConnection,
            "web-3",
            path.to_str().unwrap(),
            &bin,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.stage, Stage::Bootstrap);
        assert!(
            e.to_string()
                .starts_with("web-3: bootstrap: the uploaded binary does not run"),
            "{e}"
        );
    }
}
