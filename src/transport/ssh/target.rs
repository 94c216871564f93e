//! Where and as whom to connect to each host: the settings cascade.
//!
//! The most specific setting wins: the inventory's `ssh` settings for the host, then
//! the ssh config ([`super::config`]) queried with the host's address as `ssh ADDRESS`
//! would, then OpenSSH's defaults. The config's HostName replaces an address that is a
//! name (`web-a`), as with `ssh web-a`; an IP address is where the inventory says the
//! host is and stays as written. The Host patterns are matched against the address as
//! given; the connection, the jump hosts' `direct-tcpip` and the known_hosts lookups
//! use the HostName (or HostKeyAlias for known_hosts), as OpenSSH does.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::inventory::{Host, Inventory};
use crate::transport::known_hosts::{self, KnownHosts};
use crate::transport::ssh::Options;
use crate::transport::ssh::config::{HostConfig, SshConfig};

/// Where and as whom to connect, after the settings cascade.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name (or the jump spec) for messages.
    pub name: String,
    /// Where to connect: the ssh config's HostName for a name, else the address.
    pub address: String,
    pub port: u16,
    pub user: String,
    /// The inventory's key, tried first.
    pub key: Option<PathBuf>,
    /// How messages name the inventory's key: as written, and the setting it came
    /// from (`~/.ssh/deploy (inventory `defaults.ssh.key`)`).
    pub key_label: Option<String>,
    /// Identity files from the ssh config, or OpenSSH's default files.
    pub identities: Vec<PathBuf>,
    /// Hops to go through, first hop first.
    pub jumps: Vec<Target>,
    pub known: KnownHosts,
    /// The ssh config's HostKeyAlias: the name known_hosts records the host under.
    pub host_key_alias: Option<String>,
}

impl Target {
    /// The name and port to look the host up under in known_hosts: the HostKeyAlias
    /// as it is (OpenSSH adds no port to it), else the address and port.
    pub fn known_as(&self) -> (&str, u16) {
        match &self.host_key_alias {
            Some(alias) => (alias, 22),
            None => (&self.address, self.port),
        }
    }
}

/// The inventory's SSH settings for one host or jump spec: the first layer.
#[derive(Debug, Clone, Copy, Default)]
struct Wanted<'a> {
    user: Option<&'a str>,
    port: Option<u16>,
    key: Option<&'a str>,
    /// Where `key` was set in the inventory.
    key_setting: Option<&'a str>,
    /// `ssh.jump`; `Some("none")` ignores the config's ProxyJump.
    jump: Option<&'a str>,
}

impl<'a> Wanted<'a> {
    fn of(h: &'a Host) -> Wanted<'a> {
        Wanted {
            user: h.ssh.user.as_deref(),
            port: h.ssh.port,
            key: h.ssh.key.as_deref(),
            key_setting: h.ssh_key_setting.as_deref(),
            jump: h.ssh.jump.as_deref(),
        }
    }
}

/// Resolves the targets of one inventory against one ssh config.
pub(super) struct Resolver<'a> {
    inv: &'a Inventory,
    config: SshConfig,
    known_hosts: &'a [PathBuf],
    /// The inventory's folder: relative key paths start there.
    base: PathBuf,
}

impl<'a> Resolver<'a> {
    /// Reads the ssh config (`opts.config`, else `~/.ssh/config` when it exists).
    pub(super) fn new(inv: &'a Inventory, opts: &'a Options) -> anyhow::Result<Resolver<'a>> {
        let path = match &opts.config {
            Some(p) => Some(p.clone()),
            None => std::env::home_dir()
                .map(|h| h.join(".ssh/config"))
                .filter(|p| p.exists()),
        };
        let config = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading ssh config {}: {e}", p.display()))?;
                SshConfig::parse(&text, &p.display().to_string())
                    .map_err(|e| anyhow::anyhow!("reading ssh config {e}"))?
            }
            None => SshConfig::default(),
        };
        let base = Path::new(&inv.file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Resolver {
            inv,
            config,
            known_hosts: &opts.known_hosts,
            base,
        })
    }

    /// The target of inventory host `h`.
    pub(super) fn host(&self, h: usize) -> anyhow::Result<Target> {
        let host = &self.inv.hosts[h];
        self.target(&host.name, &host.address, Wanted::of(host), 0)
    }

    fn target(
        &self,
        name: &str,
        given: &str,
        wanted: Wanted<'_>,
        depth: usize,
    ) -> anyhow::Result<Target> {
        anyhow::ensure!(depth < 8, "{name}: jump hosts nest more than 8 deep");
        let hc = self.config.query(given);
        let jump = wanted
            .jump
            .map(str::to_string)
            .or_else(|| hc.proxy_jump.clone())
            .filter(|j| j != "none");
        let mut jumps = Vec::new();
        if let Some(spec) = jump {
            for hop in spec.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                jumps.push(self.hop(hop, depth + 1)?);
            }
        }
        let key = wanted.key.map(|k| expand(&self.base, k));
        let key_label = match (wanted.key, &key) {
            (Some(written), Some(path)) => Some(key_label(written, path, wanted.key_setting)),
            _ => None,
        };
        Ok(Target {
            name: name.to_string(),
            address: connect_address(given, hc.hostname.as_deref()),
            port: wanted.port.or(hc.port).unwrap_or(22),
            user: wanted
                .user
                .map(str::to_string)
                .or_else(|| hc.user.clone())
                .unwrap_or_else(current_user),
            key,
            key_label,
            identities: identities(&hc),
            jumps,
            known: KnownHosts::new(self.known_files(&hc)),
            host_key_alias: hc.host_key_alias,
        })
    }

    fn known_files(&self, hc: &HostConfig) -> Vec<PathBuf> {
        if !self.known_hosts.is_empty() {
            self.known_hosts.to_vec()
        } else if let Some(files) = &hc.user_known_hosts_files {
            files.clone()
        } else {
            known_hosts::default_files()
        }
    }

    /// A jump spec `[user@]host[:port]`; `host` may name an inventory host.
    fn hop(&self, spec: &str, depth: usize) -> anyhow::Result<Target> {
        let (user, host, port) = parse_hop(spec)?;
        let Some(id) = self.inv.host_id(host) else {
            let wanted = Wanted {
                user,
                port,
                jump: Some("none"),
                ..Wanted::default()
            };
            return self.target(spec, host, wanted, depth);
        };
        let h = &self.inv.hosts[id];
        let own = Wanted::of(h);
        let wanted = Wanted {
            user: user.or(own.user),
            port: port.or(own.port),
            jump: None,
            ..own
        };
        let mut t = self.target(spec, &h.address, wanted, depth)?;
        // A hop's own jumps come from its inventory settings only when it has them.
        if let Some(j) = &h.ssh.jump {
            for hop in j.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                t.jumps.push(self.hop(hop, depth + 1)?);
            }
        }
        Ok(t)
    }
}

/// `[user@]host[:port]`, with `[v6]:port` for IPv6 addresses.
fn parse_hop(spec: &str) -> anyhow::Result<(Option<&str>, &str, Option<u16>)> {
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, spec),
    };
    match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| anyhow::anyhow!("jump host `{spec}`: bad port `{p}`"))?;
            let host = h.trim_start_matches('[').trim_end_matches(']');
            Ok((user, host, Some(port)))
        }
        _ => Ok((user, rest, None)),
    }
}

/// Where to connect for the address `given`: the config's HostName when `given` is
/// a name, `given` itself when it is an IP address. Names are lowercased, as `ssh`
/// lowercases them (for known_hosts, whose hashed lines are of lowercase names).
fn connect_address(given: &str, hostname: Option<&str>) -> String {
    let is_ip = |s: &str| s.parse::<IpAddr>().is_ok();
    let address = match hostname {
        Some(h) if !is_ip(given) => h,
        _ => given,
    };
    if is_ip(address) {
        address.to_string()
    } else {
        address.to_ascii_lowercase()
    }
}

/// The config's IdentityFiles, else OpenSSH's default files.
fn identities(hc: &HostConfig) -> Vec<PathBuf> {
    if !hc.identity_files.is_empty() {
        return hc.identity_files.clone();
    }
    std::env::home_dir()
        .map(|h| {
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| h.join(".ssh").join(f))
                .collect()
        })
        .unwrap_or_default()
}

/// `written (inventory `setting`)`, with the resolved path when a relative one was
/// taken from the inventory's folder.
fn key_label(written: &str, path: &Path, setting: Option<&str>) -> String {
    let mut notes = Vec::new();
    if !written.starts_with("~/") && Path::new(written) != path {
        notes.push(path.display().to_string());
    }
    if let Some(s) = setting {
        notes.push(format!("inventory `{s}`"));
    }
    if notes.is_empty() {
        written.to_string()
    } else {
        format!("{written} ({})", notes.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(hosts: &str) -> Inventory {
        let text = "cluster: t\ntransport: ssh\ncoordination: {zookeeper: {connect: \"127.0.0.1:2181\"}}\ndefaults: {ssh: {user: deploy, key: keys/id}}\ndatacenters: {dc: {racks: {r: {hosts: {HOSTS}}}}}\n"
            .replace("HOSTS", hosts);
        Inventory::parse("/etc/rookery/inv.yml", &text, Path::new("/etc/rookery"))
            .into_result()
            .unwrap()
    }

    fn resolve(inv: &Inventory, config: &str) -> Vec<Target> {
        let opts = Options {
            known_hosts: vec![PathBuf::from("/kh")],
            config: None,
            accept_new: false,
            connect_timeout: std::time::Duration::from_secs(1),
        };
        let r = Resolver {
            inv,
            config: SshConfig::parse(config, "cfg").unwrap(),
            known_hosts: &opts.known_hosts,
            base: PathBuf::from("/etc/rookery"),
        };
        (0..inv.hosts.len()).map(|h| r.host(h).unwrap()).collect()
    }

    #[test]
    fn a_name_takes_the_configs_hostname_and_an_ip_address_stays() {
        let inv = inventory("a: {address: Web-A}, b: {address: 10.0.0.2}, web-c: ~");
        let config = "Host Web-A\n  HostName DB.example.com\n  User cfg\n  Port 2200\nHost 10.0.0.2 web-*\n  HostName %h.example.com\n  HostKeyAlias c-key\n";
        let t = resolve(&inv, config);
        // Matched as given (case-sensitive), connected to lowercased, like ssh.
        assert_eq!(t[0].address, "db.example.com");
        assert_eq!((t[0].user.as_str(), t[0].port), ("deploy", 2200));
        assert_eq!(t[0].known_as(), ("db.example.com", 2200));
        // An IP address is where the inventory says the host is.
        assert_eq!(t[1].address, "10.0.0.2");
        // A host without an address is looked up by its name; %h is that name.
        assert_eq!(t[2].address, "web-c.example.com");
        assert_eq!(t[2].known_as(), ("c-key", 22));
    }

    #[test]
    fn a_jump_through_an_inventory_host_uses_its_hostname_and_key() {
        let inv = inventory(
            "bastion: {address: bastion}, a: {address: 10.0.0.2, ssh: {jump: \"ops@bastion:2022\"}}",
        );
        let t = resolve(&inv, "Host bastion\n  HostName 10.9.9.9\n");
        let hop = &t[1].jumps[0];
        assert_eq!(hop.name, "ops@bastion:2022");
        assert_eq!(
            (hop.address.as_str(), hop.port, hop.user.as_str()),
            ("10.9.9.9", 2022, "ops")
        );
        assert_eq!(hop.key, Some(PathBuf::from("/etc/rookery/keys/id")));
    }

    #[test]
    fn the_key_label_names_the_setting_it_came_from() {
        let inv = inventory("a: ~, b: {ssh: {key: ~/.ssh/b}}");
        let t = resolve(&inv, "");
        assert_eq!(
            t[0].key_label.as_deref(),
            Some("keys/id (/etc/rookery/keys/id, inventory `defaults.ssh.key`)")
        );
        assert_eq!(
            t[1].key_label.as_deref(),
            Some("~/.ssh/b (inventory `datacenters.dc.racks.r.hosts.b.ssh.key`)")
        );
    }

    #[test]
    fn hop_specs_take_a_user_and_a_port() {
        assert_eq!(parse_hop("h").unwrap(), (None, "h", None));
        assert_eq!(parse_hop("u@h:22").unwrap(), (Some("u"), "h", Some(22)));
        assert_eq!(parse_hop("[::1]:2222").unwrap(), (None, "::1", Some(2222)));
        assert_eq!(parse_hop("::1").unwrap(), (None, "::1", None));
        assert!(parse_hop("h:x").is_err());
    }
}
