//! Commands and files over an open SSH connection: `exec` channels with stdout read
//! line by line and the end of stderr kept, cancellation by SIGTERM then closing the
//! channel, and files through SFTP put in place with one `rename(2)`.

use std::net::IpAddr;
use std::time::Duration;

use russh::{ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::template::shell_quote;
use crate::transport::ssh::SshConnection;
use crate::transport::{Connection, Finished, Lines, Tail};

/// How long a cancelled command gets between SIGTERM and closing its channel.
const GRACE: Duration = Duration::from_secs(5);

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Connection for SshConnection {
    async fn exec_with_input(
        &self,
        command: &str,
        input: Option<&[u8]>,
        stdout: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> std::io::Result<Finished> {
        let mut ch = self.handle.channel_open_session().await.map_err(io)?;
        tracing::debug!(target: "rookery::transport::ssh", host = %self.host, "channel open");
        ch.exec(true, command).await.map_err(io)?;
        if let Some(data) = input {
            // Small (a metainfo), and read at once by the command: this does not wait
            // on a window that only draining `ch.wait()` would open.
            ch.data(data).await.map_err(io)?;
            ch.eof().await.map_err(io)?;
            tracing::debug!(target: "rookery::transport::ssh", host = %self.host, bytes = data.len(), "input sent");
        }
        let mut lines = Lines::default();
        let mut tail = Tail::default();
        let mut fin = Finished::default();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                msg = ch.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => lines.push(&data, stdout),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => tail.push(&data),
                    Some(ChannelMsg::ExitStatus { exit_status }) => fin.status = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        fin.signal = Some(sig_name(&signal_name));
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                _ = cancel.cancelled(), if deadline.is_none() => {
                    let _ = ch.signal(Sig::TERM).await;
                    let _ = ch.eof().await;
                    deadline = Some(tokio::time::Instant::now() + GRACE);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    // sshd closes the command's pipes with the channel: it gets
                    // EPIPE on its next write.
                    let _ = ch.close().await;
                    fin.signal.get_or_insert_with(|| "channel closed".into());
                    break;
                }
            }
        }
        lines.finish(stdout);
        fin.stderr_tail = tail.finish();
        if fin.status.is_none() && fin.signal.is_none() && self.handle.is_closed() {
            return Err(io(format!("{}: the SSH connection was lost", self.host)));
        }
        Ok(fin)
    }

    async fn upload(&self, data: &[u8], path: &str, mode: u32) -> std::io::Result<()> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path),
        };
        let tmp = if dir.is_empty() {
            format!(".{name}.rookery-tmp-{}", std::process::id())
        } else {
            format!("{dir}/.{name}.rookery-tmp-{}", std::process::id())
        };
        if !dir.is_empty() {
            self.run_checked(&format!("mkdir -p -- {}", shell_quote(dir)))
                .await?;
        }
        let ch = self.handle.channel_open_session().await.map_err(io)?;
        ch.request_subsystem(true, "sftp").await.map_err(io)?;
        let sftp = russh_sftp::client::SftpSession::new(ch.into_stream())
            .await
            .map_err(|e| io(format!("starting SFTP: {e}")))?;
        let mut f = sftp
            .create(tmp.clone())
            .await
            .map_err(|e| io(format!("creating {tmp}: {e}")))?;
        f.write_all(data).await?;
        f.shutdown().await?;
        drop(f);
        let attrs = russh_sftp::protocol::FileAttributes {
            permissions: Some(mode),
            ..Default::default()
        };
        sftp.set_metadata(tmp.clone(), attrs)
            .await
            .map_err(|e| io(format!("chmod {tmp}: {e}")))?;
        let _ = sftp.close().await;
        // SFTP v3 rename refuses to replace a file; mv is rename(2), atomic.
        self.run_checked(&format!(
            "mv -f -- {} {}",
            shell_quote(&tmp),
            shell_quote(path)
        ))
        .await
    }

    async fn download(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let ch = self.handle.channel_open_session().await.map_err(io)?;
        ch.request_subsystem(true, "sftp").await.map_err(io)?;
        let sftp = russh_sftp::client::SftpSession::new(ch.into_stream())
            .await
            .map_err(|e| io(format!("starting SFTP: {e}")))?;
        let data = sftp
            .read(path.to_string())
            .await
            .map_err(|e| io(format!("reading {path}: {e}")))?;
        let _ = sftp.close().await;
        Ok(data)
    }

    fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }
}

impl SshConnection {
    async fn run_checked(&self, command: &str) -> std::io::Result<()> {
        let f = self
            .exec(command, &mut |_| {}, &CancellationToken::new())
            .await?;
        if f.success() {
            Ok(())
        } else {
            Err(io(format!("`{command}`: {}", f.describe())))
        }
    }
}

fn sig_name(s: &Sig) -> String {
    match s {
        Sig::Custom(c) => c.clone(),
        other => format!("{other:?}"),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
