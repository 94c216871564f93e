//! Opening one hop: TCP (or a `direct-tcpip` channel through the previous hop), the
//! SSH handshake with the server's key checked against known_hosts before any
//! credential is sent, then the login ([`super::auth`]).
//!
//! An unknown host is refused unless accept-new is on; a changed or revoked key is
//! fatal: it stops the whole run. The host is looked up in known_hosts under its
//! HostName (or HostKeyAlias) and port, as OpenSSH does.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};

use crate::transport::known_hosts::{self, KnownHosts, Verdict};
use crate::transport::ssh::Ssh;
use crate::transport::ssh::auth::authenticate;
use crate::transport::ssh::target::Target;
use crate::transport::{HostError, Stage};

/// russh's callback for the server's key: the known_hosts verdict, with the reason
/// kept for the error message.
pub(super) struct Checker {
    host: String,
    /// Where the connection goes, for `ssh-keyscan` in the message.
    address: String,
    port: u16,
    /// The name and port known_hosts records the host under.
    known_name: String,
    known_port: u16,
    known: KnownHosts,
    accept_new: bool,
    problem: Arc<Mutex<Option<HostError>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                self.refuse("the server presented a host certificate; rookery checks plain host keys against known_hosts only", false);
                return Ok(false);
            }
        };
        let (name, port) = (self.known_name.clone(), self.known_port);
        let mut verdict = self.known.check(&name, port, key);
        if verdict == Verdict::Unknown && self.accept_new {
            // Checked again under the file's lock: another connection may have
            // recorded this host meanwhile.
            verdict = match self.known.learn(&name, port, key) {
                Ok(v) => v,
                Err(e) => {
                    self.refuse(format!("could not record the new host key: {e}"), false);
                    return Ok(false);
                }
            };
        }
        if let Verdict::Trusted { .. } = verdict {
            return Ok(true);
        }
        let (message, fatal) = self.refusal(verdict, key);
        self.refuse(message, fatal);
        Ok(false)
    }
}

impl Checker {
    /// Why a key that is not trusted is refused, and whether that stops the run.
    fn refusal(&self, verdict: Verdict, key: &PublicKey) -> (String, bool) {
        let fp = key.fingerprint(Default::default());
        let alg = key.algorithm();
        let name = known_hosts::lookup_name(&self.known_name, self.known_port);
        match verdict {
            Verdict::Trusted { .. } => (String::new(), false),
            Verdict::Changed { file, line } => (
                format!(
                    "HOST KEY CHANGED for {name}: the server presented {alg} {fp}, but {}:{line} records another {alg} key; this may be an attack or a reinstalled host. Nothing was run on any host. If the change is expected, remove line {line} (ssh-keygen -R '{name}' -f {}) and run again",
                    file.display(),
                    file.display()
                ),
                true,
            ),
            Verdict::Revoked { file, line } => (
                format!(
                    "the server presented {alg} {fp}, which {}:{line} marks @revoked; nothing was run on any host",
                    file.display()
                ),
                true,
            ),
            Verdict::Unknown => {
                let files: Vec<String> = self
                    .known
                    .files()
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                (
                    format!(
                        "{name} is not in known_hosts ({}); it presented {alg} {fp}. Check the fingerprint, then add it (ssh-keyscan -p {} {} >> FILE) or run again with --accept-new-host-keys",
                        files.join(", "),
                        self.port,
                        self.address
                    ),
                    false,
                )
            }
        }
    }

    fn refuse(&self, message: impl Into<String>, fatal: bool) {
        let mut e = HostError::new(&self.host, Stage::HostKey, message);
        e.fatal = fatal;
        *self.problem.lock().expect("not poisoned") = Some(e);
    }
}

/// The client settings for one hop: the key types known_hosts records for it first.
fn client_config(t: &Target) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::DEFAULT.clone();
    let (name, port) = t.known_as();
    let mut algs = t.known.algorithms(name, port);
    if !algs.is_empty() {
        for a in russh::Preferred::DEFAULT.key.iter() {
            if !algs.contains(a) {
                algs.push(a.clone());
            }
        }
        preferred.key = algs.into();
    }
    Arc::new(client::Config {
        preferred,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    })
}

impl Ssh {
    /// Connects to one hop (directly, or through the previous hop) and logs in.
    pub(super) async fn open(
        &self,
        host: &str,
        t: &Target,
        via: Option<&client::Handle<Checker>>,
    ) -> Result<(client::Handle<Checker>, Option<IpAddr>), HostError> {
        let hop_note = if t.name == host {
            String::new()
        } else {
            format!(" (jump host {})", t.name)
        };
        let connect_error = |m: String| HostError::new(host, Stage::Connect, m);
        let problem = Arc::new(Mutex::new(None));
        let (known_name, known_port) = t.known_as();
        let checker = Checker {
            host: host.to_string(),
            address: t.address.clone(),
            port: t.port,
            known_name: known_name.to_string(),
            known_port,
            known: t.known.clone(),
            accept_new: self.accept_new,
            problem: problem.clone(),
        };
        let config = client_config(t);
        let (result, local_ip) = match via {
            None => {
                let tcp = tokio::net::TcpStream::connect((t.address.as_str(), t.port))
                    .await
                    .map_err(|e| {
                        connect_error(format!("{}:{}{hop_note}: {e}", t.address, t.port))
                    })?;
                let _ = tcp.set_nodelay(true);
                let ip = tcp.local_addr().ok().map(|a| a.ip());
                (client::connect_stream(config, tcp, checker).await, ip)
            }
            Some(j) => {
                let ch = j
                    .channel_open_direct_tcpip(t.address.clone(), t.port as u32, "127.0.0.1", 0)
                    .await
                    .map_err(|e| {
                        connect_error(format!(
                            "the jump host could not open a connection to {}:{}{hop_note}: {e}",
                            t.address, t.port
                        ))
                    })?;
                let stream = ch.into_stream();
                (client::connect_stream(config, stream, checker).await, None)
            }
        };
        let mut handle = match result {
            Ok(h) => h,
            Err(e) => {
                if let Some(p) = problem.lock().expect("not poisoned").take() {
                    return Err(p);
                }
                return Err(connect_error(format!(
                    "SSH handshake with {}:{}{hop_note}: {e}",
                    t.address, t.port
                )));
            }
        };
        authenticate(&mut handle, t)
            .await
            .map_err(|m| HostError::new(host, Stage::Auth, format!("{m}{hop_note}")))?;
        Ok((handle, local_ip))
    }
}
