//! The transport the inventory names, as one type: either implementation of
//! [`Transport`] behind an enum, chosen once from the validated inventory, so the
//! commands above are written once and never match on the inventory's transport.

use std::net::IpAddr;

use tokio_util::sync::CancellationToken;

use crate::config::inventory::{self, Inventory};
use crate::transport::local::{Local, LocalConnection};
use crate::transport::ssh::{Options, Ssh, SshConnection};
use crate::transport::{Connection, Finished, HostError, Transport};

/// The inventory's transport.
pub enum Chosen {
    Local(Local),
    Ssh(Ssh),
}

/// A connection of the inventory's transport.
pub enum ChosenConnection {
    Local(LocalConnection),
    Ssh(SshConnection),
}

impl Chosen {
    /// Builds the transport `inv` names. `accept_new_host_keys` is the operator's
    /// `--accept-new-host-keys`: unknown hosts are trusted on first use and recorded.
    pub fn of(inv: &Inventory, accept_new_host_keys: bool) -> anyhow::Result<Chosen> {
        Ok(match &inv.transport {
            inventory::Transport::Local { .. } => Chosen::Local(Local::this_binary()?),
            inventory::Transport::Ssh(s) => Chosen::Ssh(Ssh::new(
                inv,
                &Options {
                    known_hosts: s.known_hosts.clone(),
                    config: s.config.clone(),
                    accept_new: accept_new_host_keys,
                    connect_timeout: s.connect_timeout,
                },
            )?),
        })
    }
}

impl Transport for Chosen {
    type Connection = ChosenConnection;

    async fn connect(&self, host: usize) -> Result<ChosenConnection, HostError> {
        Ok(match self {
            Chosen::Local(t) => ChosenConnection::Local(t.connect(host).await?),
            Chosen::Ssh(t) => ChosenConnection::Ssh(t.connect(host).await?),
        })
    }

    fn needs_bootstrap(&self) -> bool {
        match self {
            Chosen::Local(t) => t.needs_bootstrap(),
            Chosen::Ssh(t) => t.needs_bootstrap(),
        }
    }

    fn agent_path(&self, host: usize) -> String {
        match self {
            Chosen::Local(t) => t.agent_path(host),
            Chosen::Ssh(t) => t.agent_path(host),
        }
    }
}

impl Connection for ChosenConnection {
    async fn exec_with_input(
        &self,
        command: &str,
        input: Option<&[u8]>,
        stdout: &mut (dyn FnMut(&str) + Send),
        cancel: &CancellationToken,
    ) -> std::io::Result<Finished> {
        match self {
            ChosenConnection::Local(c) => c.exec_with_input(command, input, stdout, cancel).await,
            ChosenConnection::Ssh(c) => c.exec_with_input(command, input, stdout, cancel).await,
        }
    }

    async fn upload(&self, data: &[u8], path: &str, mode: u32) -> std::io::Result<()> {
        match self {
            ChosenConnection::Local(c) => c.upload(data, path, mode).await,
            ChosenConnection::Ssh(c) => c.upload(data, path, mode).await,
        }
    }

    async fn download(&self, path: &str) -> std::io::Result<Vec<u8>> {
        match self {
            ChosenConnection::Local(c) => c.download(path).await,
            ChosenConnection::Ssh(c) => c.download(path).await,
        }
    }

    fn local_ip(&self) -> Option<IpAddr> {
        match self {
            ChosenConnection::Local(c) => c.local_ip(),
            ChosenConnection::Ssh(c) => c.local_ip(),
        }
    }
}
