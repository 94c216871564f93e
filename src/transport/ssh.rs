//! The SSH transport (russh): how rookery reaches real hosts.
//!
//! Settings come from three places, the most specific first: the inventory's `ssh`
//! settings for the host, then the operator's `~/.ssh/config` (Host patterns,
//! HostName, User, Port, IdentityFile, ProxyJump, UserKnownHostsFile; parsed by
//! russh-config and queried with the host's address, as `ssh ADDRESS` would), then
//! OpenSSH's defaults. Authentication tries the inventory key, then the keys of
//! ssh-agent (`SSH_AUTH_SOCK`), then the identity files; passphrase-protected files
//! are used through the agent only, since nobody is there to type a passphrase on
//! host 400.
//!
//! Host keys are checked against known_hosts ([`crate::transport::known_hosts`]) before any
//! credential is sent; an unknown host is refused unless accept-new is on, and a
//! changed key stops the whole run. Jump hosts (`ssh.jump`, `ProxyJump`, comma lists
//! for several hops) are reached through `direct-tcpip` channels, each hop checked
//! like any host.
//!
//! Crypto is russh with `ring` and the pure-Rust `rsa` feature, not aws-lc: the build
//! is a minute shorter on small machines and every key type OpenSSH makes by default
//! (ed25519, ECDSA P-256/384, RSA with SHA-2) still works. DSA is not supported.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::config::inventory::Inventory;
use crate::config::template::shell_quote;
use crate::transport::known_hosts::{self, KnownHosts, Verdict};
use crate::transport::{Connection, Finished, HostError, Lines, Stage, Tail, Transport};

/// How long a cancelled command gets between SIGTERM and closing its channel.
const GRACE: Duration = Duration::from_secs(5);

/// What the operator chose for SSH, beyond the inventory's per-host settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// known_hosts files (replaces the ssh config's and the default ones).
    pub known_hosts: Vec<PathBuf>,
    /// The OpenSSH client config to read; `None`: `~/.ssh/config` when it exists.
    pub config: Option<PathBuf>,
    /// StrictHostKeyChecking=accept-new: record unknown hosts, still refuse changed keys.
    pub accept_new: bool,
    pub connect_timeout: Duration,
}

/// Where and as whom to connect, after the settings cascade.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name (or the jump spec) for messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// The inventory's key, tried first.
    pub key: Option<PathBuf>,
    /// Identity files from the ssh config, or OpenSSH's default files.
    pub identities: Vec<PathBuf>,
    /// Hops to go through, first hop first.
    pub jumps: Vec<Target>,
    pub known: KnownHosts,
}

/// The SSH transport for one inventory.
pub struct Ssh {
    targets: Vec<Target>,
    /// Where the rookery binary goes on each host.
    agents: Vec<String>,
    accept_new: bool,
    connect_timeout: Duration,
}

/// One authenticated connection, with the hops it goes through kept open.
pub struct SshConnection {
    host: String,
    handle: client::Handle<Checker>,
    _hops: Vec<client::Handle<Checker>>,
    local_ip: Option<IpAddr>,
}

impl Ssh {
    /// Resolves every host's target; fails if the ssh config cannot be read.
    pub fn new(inv: &Inventory, opts: &Options) -> anyhow::Result<Ssh> {
        let config_path = match &opts.config {
            Some(p) => Some(p.clone()),
            None => std::env::home_dir()
                .map(|h| h.join(".ssh/config"))
                .filter(|p| p.exists()),
        };
        let config_text = match &config_path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("reading ssh config {}: {e}", p.display()))?,
            None => String::new(),
        };
        let base = Path::new(&inv.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let resolver = Resolver {
            inv,
            config_text: &config_text,
            config_path: config_path.as_deref(),
            known_hosts: &opts.known_hosts,
            base: &base,
        };
        let targets = inv
            .hosts
            .iter()
            .map(|h| {
                resolver.target(
                    &h.name,
                    &Address::of(h),
                    h.ssh.user.as_deref(),
                    h.ssh.port,
                    h.ssh.key.as_deref(),
                    h.ssh.jump.as_deref(),
                    0,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let agents = (0..inv.hosts.len()).map(|h| agent_path(inv, h)).collect();
        Ok(Ssh {
            targets,
            agents,
            accept_new: opts.accept_new,
            connect_timeout: opts.connect_timeout,
        })
    }
}

/// Where the inventory says a host is, and whether it said so (an `address`) or
/// only named the host (its address defaults to its name).
struct Address {
    text: String,
    explicit: bool,
}

impl Address {
    fn of(h: &crate::config::inventory::Host) -> Address {
        Address {
            text: h.address.clone(),
            explicit: h.address != h.name,
        }
    }
}

struct Resolver<'a> {
    inv: &'a Inventory,
    config_text: &'a str,
    config_path: Option<&'a Path>,
    known_hosts: &'a [PathBuf],
    base: &'a Path,
}

impl Resolver<'_> {
    #[allow(clippy::too_many_arguments)]
    fn target(
        &self,
        name: &str,
        address: &Address,
        user: Option<&str>,
        port: Option<u16>,
        key: Option<&str>,
        jump: Option<&str>,
        depth: usize,
    ) -> anyhow::Result<Target> {
        anyhow::ensure!(depth < 8, "{name}: jump hosts nest more than 8 deep");
        let (address, explicit) = (address.text.as_str(), address.explicit);
        let cfg = if self.config_text.is_empty() {
            russh_config::Config::default(address)
        } else {
            russh_config::parse(self.config_text, address).map_err(|e| {
                anyhow::anyhow!(
                    "reading ssh config {}: {e}",
                    self.config_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )
            })?
        };
        let hc = &cfg.host_config;
        let user = user
            .map(str::to_string)
            .or_else(|| hc.user.clone())
            .unwrap_or_else(current_user);
        let port = port.or(hc.port).unwrap_or(22);
        // The config's HostName stands in for a name only, as with `ssh NAME`: an
        // address written in the inventory is where the host is.
        let address = match &hc.hostname {
            Some(h) if !explicit => h.clone(),
            _ => address.to_string(),
        };
        let identities = match &hc.identity_file {
            Some(files) => files.clone(),
            None => std::env::home_dir()
                .map(|h| {
                    ["id_ed25519", "id_ecdsa", "id_rsa"]
                        .iter()
                        .map(|f| h.join(".ssh").join(f))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let known = if !self.known_hosts.is_empty() {
            self.known_hosts.to_vec()
        } else if let Some(f) = &hc.user_known_hosts_file {
            vec![f.clone()]
        } else {
            known_hosts::default_files()
        };
        let jump = jump
            .map(str::to_string)
            .or_else(|| hc.proxy_jump.clone())
            .filter(|j| j != "none");
        let mut jumps = Vec::new();
        if let Some(spec) = jump {
            for hop in spec.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                jumps.push(self.hop(hop, depth + 1)?);
            }
        }
        Ok(Target {
            name: name.to_string(),
            address,
            port,
            user,
            key: key.map(|k| expand(self.base, k)),
            identities,
            jumps,
            known: KnownHosts::new(known),
        })
    }

    /// A jump spec `[user@]host[:port]`; `host` may name an inventory host.
    fn hop(&self, spec: &str, depth: usize) -> anyhow::Result<Target> {
        let (user, rest) = match spec.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, spec),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("jump host `{spec}`: bad port `{p}`"))?;
                (h.trim_start_matches('[').trim_end_matches(']'), Some(port))
            }
            _ => (rest, None),
        };
        if let Some(id) = self.inv.host_id(host) {
            let h = &self.inv.hosts[id];
            let mut t = self.target(
                spec,
                &Address::of(h),
                user.or(h.ssh.user.as_deref()),
                port.or(h.ssh.port),
                h.ssh.key.as_deref(),
                None,
                depth,
            )?;
            // A hop's own jumps come from its inventory settings only when it has them.
            if let Some(j) = &h.ssh.jump {
                for hop in j.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                    t.jumps.push(self.hop(hop, depth + 1)?);
                }
            }
            Ok(t)
        } else {
            let address = Address {
                text: host.to_string(),
                explicit: false,
            };
            self.target(spec, &address, user, port, None, Some("none"), depth)
        }
    }
}

fn expand(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::home_dir()
    {
        return home.join(rest);
    }
    crate::config::decode::resolve_path(base, p)
}

fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

/// russh's callback for the server's key: the known_hosts verdict, with the reason
/// kept for the error message.
struct Checker {
    host: String,
    address: String,
    port: u16,
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
        let fp = key.fingerprint(Default::default());
        let name = known_hosts::lookup_name(&self.address, self.port);
        let mut verdict = self.known.check(&self.address, self.port, key);
        if verdict == Verdict::Unknown && self.accept_new {
            // Checked again under the file's lock: another connection may have
            // recorded this host meanwhile.
            verdict = match self.known.learn(&self.address, self.port, key) {
                Ok(v) => v,
                Err(e) => {
                    self.refuse(format!("could not record the new host key: {e}"), false);
                    return Ok(false);
                }
            };
        }
        match verdict {
            Verdict::Trusted { .. } => Ok(true),
            Verdict::Changed { file, line } => {
                self.refuse(
                    format!(
                        "HOST KEY CHANGED for {name}: the server presented {} {fp}, but {}:{line} records another {} key; this may be an attack or a reinstalled host. Nothing was run on any host. If the change is expected, remove line {line} (ssh-keygen -R '{name}' -f {}) and run again",
                        key.algorithm(),
                        file.display(),
                        key.algorithm(),
                        file.display()
                    ),
                    true,
                );
                Ok(false)
            }
            Verdict::Revoked { file, line } => {
                self.refuse(
                    format!(
                        "the server presented {} {fp}, which {}:{line} marks @revoked; nothing was run on any host",
                        key.algorithm(),
                        file.display()
                    ),
                    true,
                );
                Ok(false)
            }
            Verdict::Unknown => {
                let files: Vec<String> = self
                    .known
                    .files()
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                self.refuse(
                    format!(
                        "{name} is not in known_hosts ({}); it presented {} {fp}. Check the fingerprint, then add it (ssh-keyscan -p {} {} >> FILE) or run again with --accept-new-host-keys",
                        files.join(", "),
                        key.algorithm(),
                        self.port,
                        self.address
                    ),
                    false,
                );
                Ok(false)
            }
        }
    }
}

impl Checker {
    fn refuse(&self, message: impl Into<String>, fatal: bool) {
        let mut e = HostError::new(&self.host, Stage::HostKey, message);
        e.fatal = fatal;
        *self.problem.lock().expect("not poisoned") = Some(e);
    }
}

impl Transport for Ssh {
    type Connection = SshConnection;

    async fn connect(&self, host: usize) -> Result<SshConnection, HostError> {
        let target = &self.targets[host];
        let timeout = self.connect_timeout;
        let fut = async {
            let mut hops: Vec<client::Handle<Checker>> = Vec::new();
            for hop in &target.jumps {
                let (h, _) = self.open(&target.name, hop, hops.last()).await?;
                hops.push(h);
            }
            let (handle, ip) = self.open(&target.name, target, hops.last()).await?;
            // Behind a jump host, the address we reach the bastion from says nothing
            // about how the host can reach us: only a direct connection tells.
            let local_ip = if hops.is_empty() { ip } else { None };
            Ok(SshConnection {
                host: target.name.clone(),
                handle,
                _hops: hops,
                local_ip,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(HostError::new(
                &target.name,
                Stage::Connect,
                format!(
                    "{}@{}:{} did not complete the SSH handshake within {}",
                    target.user,
                    target.address,
                    target.port,
                    crate::config::units::format_duration(timeout)
                ),
            )),
        }
    }

    fn needs_bootstrap(&self) -> bool {
        true
    }

    fn agent_path(&self, host: usize) -> String {
        self.agents[host].clone()
    }
}

/// Where the rookery binary lives on host `h`: under its `root`, at
/// `transport.ssh.agent_path`.
fn agent_path(inv: &Inventory, h: usize) -> String {
    let crate::config::inventory::Transport::Ssh(s) = &inv.transport else {
        return String::new();
    };
    match &inv.hosts[h].root {
        Some(root) => root
            .join(s.agent_path.trim_start_matches('/'))
            .display()
            .to_string(),
        None => s.agent_path.clone(),
    }
}

impl Ssh {
    /// Connects to one hop (directly, or through the previous hop) and logs in.
    async fn open(
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
        let problem = Arc::new(Mutex::new(None));
        let checker = Checker {
            host: host.to_string(),
            address: t.address.clone(),
            port: t.port,
            known: t.known.clone(),
            accept_new: self.accept_new,
            problem: problem.clone(),
        };
        let mut preferred = russh::Preferred::DEFAULT.clone();
        let known_algs = t.known.algorithms(&t.address, t.port);
        if !known_algs.is_empty() {
            let mut algs = known_algs;
            for a in russh::Preferred::DEFAULT.key.iter() {
                if !algs.contains(a) {
                    algs.push(a.clone());
                }
            }
            preferred.key = algs.into();
        }
        let config = Arc::new(client::Config {
            preferred,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            nodelay: true,
            ..Default::default()
        });
        let (result, local_ip) = match via {
            None => {
                let tcp = tokio::net::TcpStream::connect((t.address.as_str(), t.port))
                    .await
                    .map_err(|e| {
                        HostError::new(
                            host,
                            Stage::Connect,
                            format!("{}:{}{hop_note}: {e}", t.address, t.port),
                        )
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
                        HostError::new(
                            host,
                            Stage::Connect,
                            format!(
                                "the jump host could not open a connection to {}:{}{hop_note}: {e}",
                                t.address, t.port
                            ),
                        )
                    })?;
                (
                    client::connect_stream(config, ch.into_stream(), checker).await,
                    None,
                )
            }
        };
        let mut handle = match result {
            Ok(h) => h,
            Err(e) => {
                if let Some(p) = problem.lock().expect("not poisoned").take() {
                    return Err(p);
                }
                return Err(HostError::new(
                    host,
                    Stage::Connect,
                    format!("SSH handshake with {}:{}{hop_note}: {e}", t.address, t.port),
                ));
            }
        };
        authenticate(&mut handle, t)
            .await
            .map_err(|m| HostError::new(host, Stage::Auth, format!("{m}{hop_note}")))?;
        Ok((handle, local_ip))
    }
}

/// Tries the inventory key, the agent's keys, then the identity files.
async fn authenticate(handle: &mut client::Handle<Checker>, t: &Target) -> Result<(), String> {
    let mut tried: Vec<String> = Vec::new();
    if let Some(k) = &t.key {
        match try_file(handle, &t.user, k).await {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push(format!("{} (refused)", k.display())),
            Err(e) => tried.push(format!("{} ({e})", k.display())),
        }
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(ids) => {
                    let n = ids.len();
                    for id in ids {
                        let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                            continue;
                        };
                        let hash = rsa_hash(handle, &key).await;
                        if let Ok(r) = handle
                            .authenticate_publickey_with(&t.user, key, hash, &mut agent)
                            .await
                            && r.success()
                        {
                            return Ok(());
                        }
                    }
                    tried.push(format!("ssh-agent ({n} keys refused)"));
                }
                Err(e) => tried.push(format!("ssh-agent ({e})")),
            },
            Err(e) => tried.push(format!("ssh-agent ({e})")),
        }
    }
    for k in &t.identities {
        if Some(k) == t.key.as_ref() || !k.exists() {
            continue;
        }
        match try_file(handle, &t.user, k).await {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push(format!("{} (refused)", k.display())),
            Err(e) => tried.push(format!("{} ({e})", k.display())),
        }
    }
    if tried.is_empty() {
        tried.push("no key: set `ssh.key` in the inventory, IdentityFile in ~/.ssh/config, or load one into ssh-agent".into());
    }
    Err(format!(
        "{}@{}:{} refused every key; tried {}",
        t.user,
        t.address,
        t.port,
        tried.join(", ")
    ))
}

async fn try_file(
    handle: &mut client::Handle<Checker>,
    user: &str,
    path: &Path,
) -> Result<bool, String> {
    let key = match russh::keys::load_secret_key(path, None) {
        Ok(k) => k,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            return Err("passphrase-protected: load it into ssh-agent".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let hash = rsa_hash(handle, key.public_key()).await;
    let r = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.success())
}

async fn rsa_hash(
    handle: &client::Handle<Checker>,
    key: &PublicKey,
) -> Option<russh::keys::HashAlg> {
    if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    }
}

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
        ch.exec(true, command).await.map_err(io)?;
        if let Some(data) = input {
            // Small (a metainfo), and read at once by the command: this does not wait
            // on a window that only draining `ch.wait()` would open.
            ch.data(data).await.map_err(io)?;
            ch.eof().await.map_err(io)?;
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
