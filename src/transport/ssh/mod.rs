//! The SSH transport (russh): how rookery reaches real hosts.
//!
//! Settings come from three places, the most specific first: the inventory's `ssh`
//! settings for the host, then the operator's `~/.ssh/config` (read as `ssh` reads it,
//! queried with the host's address as `ssh ADDRESS` would: Host patterns, HostName,
//! User, Port, IdentityFile, ProxyJump, UserKnownHostsFile, HostKeyAlias), then
//! OpenSSH's defaults. Authentication tries the inventory key, then the keys of
//! ssh-agent (`SSH_AUTH_SOCK`), then the identity files.
//!
//! Host keys are checked against known_hosts ([`crate::transport::known_hosts`]) before any
//! credential is sent; an unknown host is refused unless accept-new is on, and a
//! changed key stops the whole run. Jump hosts (`ssh.jump`, `ProxyJump`, comma lists
//! for several hops) are reached through `direct-tcpip` channels, each hop checked
//! like any host.
//!
//! - `config`: the ssh config file, parsed and queried;
//! - `target`: the settings cascade, one [`Target`] per host;
//! - `handshake`: one hop: TCP or a channel, the host key, then `auth` (the login);
//! - `session`: commands and SFTP over an open connection.
//!
//! Crypto is russh with `ring` and the pure-Rust `rsa` feature, not aws-lc: the build
//! is a minute shorter on small machines and every key type OpenSSH makes by default
//! (ed25519, ECDSA P-256/384, RSA with SHA-2) still works. DSA is not supported.

mod auth;
mod config;
mod handshake;
mod session;
mod target;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use russh::client;

use crate::config::inventory::Inventory;
use crate::transport::{HostError, Stage, Transport};

pub use target::Target;

use handshake::Checker;
use target::Resolver;

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
        let resolver = Resolver::new(inv, opts)?;
        let targets = (0..inv.hosts.len())
            .map(|h| resolver.host(h))
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

impl Transport for Ssh {
    type Connection = SshConnection;

    async fn connect(&self, host: usize) -> Result<SshConnection, HostError> {
        let target = &self.targets[host];
        // A key file the inventory names must be there: say so before connecting.
        for t in target.jumps.iter().chain([target]) {
            auth::check_key_file(t).map_err(|m| {
                let note = if t.name == target.name {
                    String::new()
                } else {
                    format!(" (jump host {})", t.name)
                };
                HostError::new(&target.name, Stage::Auth, format!("{m}{note}"))
            })?;
        }
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
