//! The local transport: every "host" is a directory on this machine and its commands
//! are subprocesses (`sh -c`), for the embedded default and for tests.
//!
//! It runs exactly the command lines the SSH transport sends, through the same
//! trait, so the embedded demo exercises the real code path; only the wire differs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::os::write_atomically;
use crate::transport::{Connection, Finished, HostError, Lines, Tail, Transport};

/// How long a cancelled command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Local "hosts": each one's agent is this very binary.
#[derive(Debug, Clone)]
pub struct Local {
    agent: String,
}

impl Local {
    /// The local transport, whose hosts run the binary that is running now.
    pub fn this_binary() -> anyhow::Result<Local> {
        let exe = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("finding the rookery binary: {e}"))?;
        Ok(Local {
            agent: exe.display().to_string(),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct LocalConnection;

impl Transport for Local {
    type Connection = LocalConnection;

    async fn connect(&self, _host: usize) -> Result<LocalConnection, HostError> {
        Ok(LocalConnection)
    }

    fn needs_bootstrap(&self) -> bool {
        false
    }

    fn agent_path(&self, _host: usize) -> String {
        self.agent.clone()
    }
}

impl Connection for LocalConnection {
    async fn exec_with_input(
        &self,
        command: &str,
        input: Option<&[u8]>,
        stdout: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> std::io::Result<Finished> {
        let mut child = shell_command(command).spawn()?;
        // Held open like an SSH channel's stdin, and closed on cancel; or written
        // with `input` and closed.
        let mut stdin = child.stdin.take();
        let writer = input.map(|data| write_input(stdin.take(), data));
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let mut lines = Lines::default();
        let mut tail = Tail::default();
        let (mut obuf, mut ebuf) = ([0u8; 8192], [0u8; 8192]);
        let (mut out_open, mut err_open) = (true, true);
        let mut terminated = false;
        while out_open || err_open {
            tokio::select! {
                n = out.read(&mut obuf), if out_open => match n? {
                    0 => out_open = false,
                    n => lines.push(&obuf[..n], stdout),
                },
                n = err.read(&mut ebuf), if err_open => match n? {
                    0 => err_open = false,
                    n => tail.push(&ebuf[..n]),
                },
                _ = cancel.cancelled(), if !terminated => {
                    terminated = true;
                    stdin = None;
                    terminate(&child);
                }
            }
        }
        lines.finish(stdout);
        drop(stdin);
        if let Some(w) = writer {
            w.abort();
        }
        let status = wait_for(&mut child, terminated).await?;
        use std::os::unix::process::ExitStatusExt;
        Ok(Finished {
            status: status.code().map(|c| c as u32),
            signal: status.signal().map(signal_name),
            stderr_tail: tail.finish(),
        })
    }

    async fn upload(&self, data: &[u8], path: &str, mode: u32) -> std::io::Result<()> {
        let path = Path::new(path).to_path_buf();
        let data = data.to_vec();
        tokio::task::spawn_blocking(move || write_atomically(&path, &data, mode))
            .await
            .map_err(std::io::Error::other)?
    }

    async fn download(&self, path: &str) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(path).await
    }

    fn local_ip(&self) -> Option<IpAddr> {
        Some(Ipv4Addr::LOCALHOST.into())
    }
}

/// `sh -c command` with every stream piped, in a process group of its own.
fn shell_command(command: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, like a command on a remote host: a Ctrl-C at the
        // terminal reaches the controller, which decides what stops (a switch in
        // flight finishes), not every command it started.
        .process_group(0);
    // A no-op hook makes std fork and exec instead of using posix_spawn. glibc's
    // posix_spawn child resets handlers to the default, joins the new group, then
    // unblocks signals: a Ctrl-C sent to the terminal's group in between stays
    // pending and kills the child (seen once: a switch of the batch in flight
    // "killed by signal INT"). After a plain fork the child still has the
    // controller's handler until it has left the group, so such a signal is
    // harmless.
    // SAFETY: the hook does nothing, so it is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    cmd
}

/// Writes `data` to the command's stdin and closes it, in a task of its own so that
/// a command that writes before it reads cannot block on us.
fn write_input(
    pipe: Option<tokio::process::ChildStdin>,
    data: &[u8],
) -> tokio::task::JoinHandle<()> {
    let data = data.to_vec();
    tokio::spawn(async move {
        if let Some(mut pipe) = pipe {
            // A command that does not read its input gets EPIPE here: fine.
            let _ = pipe.write_all(&data).await;
        }
    })
}

/// The command's exit status; once `terminated`, it gets [`GRACE`] to exit before
/// it is killed.
async fn wait_for(
    child: &mut tokio::process::Child,
    terminated: bool,
) -> std::io::Result<std::process::ExitStatus> {
    if !terminated {
        return child.wait().await;
    }
    match tokio::time::timeout(GRACE, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            child.kill().await?;
            child.wait().await
        }
    }
}

fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// `TERM` for 15, as OpenSSH names signals in exit-signal messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGKILL => "KILL",
        libc::SIGSEGV => "SEGV",
        libc::SIGPIPE => "PIPE",
        libc::SIGTERM => "TERM",
        libc::SIGABRT => "ABRT",
        _ => return sig.to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_streams_lines_and_keeps_the_stderr_tail() {
        let c = LocalConnection;
        let mut seen = Vec::new();
        let f = c
            .exec(
                "echo one; echo two; echo oops >&2; exit 3",
                &mut |l| seen.push(l.to_string()),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(seen, ["one", "two"]);
        assert_eq!(f.status, Some(3));
        assert_eq!(f.stderr_tail, ["oops"]);
    }

    #[tokio::test]
    async fn exec_with_input_feeds_stdin_then_end_of_file() {
        let c = LocalConnection;
        let mut seen = Vec::new();
        // 1 MiB: more than a pipe holds, so the writer and the reader overlap.
        let input: Vec<u8> = (0..1 << 20).map(|i| b"ab\n"[i % 3]).collect();
        let f = c
            .exec_with_input(
                "wc -c; echo done",
                Some(&input),
                &mut |l| seen.push(l.trim().to_string()),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert!(f.success(), "{}", f.describe());
        assert_eq!(seen, [(1 << 20).to_string().as_str(), "done"]);
        // A command that never reads its input still ends normally.
        let f = c
            .exec_with_input(
                "exit 0",
                Some(&input),
                &mut |_| {},
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert!(f.success());
    }

    #[tokio::test]
    async fn cancel_terminates_the_command() {
        let c = LocalConnection;
        let cancel = CancellationToken::new();
        let cc = cancel.clone();
        let f = c
            .exec(
                "echo started; exec sleep 600",
                &mut move |l| {
                    if l == "started" {
                        cc.cancel();
                    }
                },
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(f.signal.as_deref(), Some("TERM"));
        assert!(!f.success());
    }

    #[tokio::test]
    async fn upload_is_atomic_with_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/tool");
        let c = LocalConnection;
        c.upload(b"#!/bin/sh\n", p.to_str().unwrap(), 0o755)
            .await
            .unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
