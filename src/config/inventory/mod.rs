//! The inventory: which hosts exist, where they sit (datacenter, rack), how to reach
//! them, which services they run, and which coordination store the cluster uses.
//!
//! Settings cascade `defaults` -> datacenter -> rack -> host: a deeper level overrides
//! `ssh` fields and `root`, and adds to `labels` and `services`. Loading checks every
//! name, reference and value and reports all problems at once (see `docs/inventory.md`).

mod decode;
mod tree;

use crate::config::diagnostic::Invalid;
use decode::*;
use tree::*;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::decode::{Decoder, Map, Partial, join, resolve_path};
use crate::config::diagnostic::{Diagnostics, Pos};
use crate::config::selector::{Pattern, Universe};
use crate::config::units::Rate;
use crate::config::yaml::{self, Node, Value};

/// A validated inventory. Hosts, racks and datacenters are addressed by their index.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub file: String,
    pub cluster: String,
    pub transport: Transport,
    pub coordination: Coordination,
    pub origin: Origin,
    pub datacenters: Vec<Datacenter>,
    pub racks: Vec<Rack>,
    pub hosts: Vec<Host>,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Every host is reached over SSH.
    Ssh(SshSettings),
    /// Every host is a directory under `root` on this machine (the embedded default).
    Local { root: PathBuf },
}

impl Transport {
    /// How long a bootstrap (the binary's check and upload) may take per host: the
    /// SSH settings' `command_timeout`; unbounded for local hosts.
    pub fn command_timeout(&self) -> Option<std::time::Duration> {
        match self {
            Transport::Ssh(s) => Some(s.command_timeout),
            Transport::Local { .. } => None,
        }
    }
}

/// `transport: {ssh: {...}}`: settings for every SSH connection of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSettings {
    /// known_hosts files; empty: the ssh config's `UserKnownHostsFile`, else OpenSSH's.
    pub known_hosts: Vec<PathBuf>,
    /// OpenSSH client config to read; `None`: `~/.ssh/config`.
    pub config: Option<PathBuf>,
    #[serde(with = "crate::config::units::serde_duration")]
    pub connect_timeout: Duration,
    /// Bound on one host's bootstrap and uploads (the fetch has its own stall timeout).
    #[serde(with = "crate::config::units::serde_duration")]
    pub command_timeout: Duration,
    /// Where the rookery binary lives on a host (under the host's `root`); relative
    /// paths are relative to the login directory.
    pub agent_path: String,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            known_hosts: Vec::new(),
            config: None,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(300),
            agent_path: ".rookery/bin/rookery".to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordination {
    /// A directory of lock-held files on this machine.
    Local { dir: PathBuf },
    ZooKeeper {
        connect: String,
        root: String,
        #[serde(with = "crate::config::units::serde_duration")]
        session_timeout: Duration,
    },
}

/// Where the artifact starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The machine running rookery.
    Controller,
    /// A build host of the inventory.
    Host(usize),
}

#[derive(Debug, Clone)]
pub struct Datacenter {
    pub name: String,
    pub racks: Vec<usize>,
    /// Capacity of the datacenter's link to the others, each way (for estimates).
    pub interconnect: Option<Rate>,
}

#[derive(Debug, Clone)]
pub struct Rack {
    pub name: String,
    /// `dc/rack`, unique in the inventory.
    pub full_name: String,
    pub dc: usize,
    pub hosts: Vec<usize>,
    /// Capacity of the rack's uplink, each way (for estimates).
    pub uplink: Option<Rate>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<String>,
    pub jump: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub dc: usize,
    pub rack: usize,
    /// Network address; defaults to the host name.
    pub address: String,
    pub ssh: Ssh,
    /// Where `ssh.key` was set (`defaults.ssh.key`, `groups.web.ssh.key`, ...), so
    /// that a message about the key file names the line to fix.
    pub ssh_key_setting: Option<String>,
    /// Prefix for every path on the host (own directory per host on a shared machine).
    pub root: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    /// Services the inventory places on this host (directly, or via rack, DC, group).
    pub services: Vec<String>,
    /// The host's network link, each way (for estimates).
    pub link: Option<Rate>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub hosts: Vec<usize>,
    pub services: Vec<String>,
}

const TOP_KEYS: &[&str] = &[
    "cluster",
    "transport",
    "coordination",
    "origin",
    "defaults",
    "datacenters",
    "groups",
];
const SETTING_KEYS: &[&str] = &["ssh", "root", "labels", "services", "link"];
const SSH_KEYS: &[&str] = &["user", "port", "key", "jump"];

/// Checks a name used for a host, rack, DC, group, service or cluster. Names become
/// directory and znode names, so they are kept to a safe alphabet.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("may only contain letters, digits, `.`, `_` and `-`, and must start with a letter or digit".into())
    }
}

impl Inventory {
    /// Reads and validates an inventory file.
    pub fn load(path: &Path) -> Result<Inventory, Diagnostics> {
        Inventory::load_partial(path).into_result()
    }

    /// Reads an inventory file as far as it goes, problems and all.
    pub fn load_partial(path: &Path) -> Partial<Inventory> {
        let file = path.display().to_string();
        match yaml::read(path, &file, "inventory") {
            Ok(text) => {
                let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                Inventory::parse(&file, &text, &base)
            }
            Err(d) => Partial::failed(d),
        }
    }

    /// Parses inventory text; relative paths are taken from `base`.
    pub fn from_str(file: &str, text: &str, base: &Path) -> Result<Inventory, Diagnostics> {
        Inventory::parse(file, text, base).into_result()
    }

    /// Parses inventory text as far as it goes, problems and all.
    pub fn parse(file: &str, text: &str, base: &Path) -> Partial<Inventory> {
        let root = match yaml::parse(file, text) {
            Ok(root) => root,
            Err(d) => return Partial::failed(d),
        };
        let mut d = Decoder::new(file);
        let inv = decode(&mut d, &root, file, base);
        let damaged = d.damage() > 0;
        Partial {
            value: Some(inv),
            problems: d.finish(),
            damaged,
            damaged_services: Vec::new(),
        }
    }

    pub fn host_id(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    pub fn group_id(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    pub fn rack_of(&self, host: usize) -> &Rack {
        &self.racks[self.hosts[host].rack]
    }

    pub fn dc_of(&self, host: usize) -> &Datacenter {
        &self.datacenters[self.hosts[host].dc]
    }

    /// A short description of the origin for plans and reports.
    pub fn origin_name(&self) -> String {
        match self.origin {
            Origin::Controller => "controller (this machine)".into(),
            Origin::Host(h) => self.hosts[h].name.clone(),
        }
    }
}

impl Universe for Inventory {
    fn host_names(&self) -> Box<dyn Iterator<Item = (usize, &str)> + '_> {
        Box::new(
            self.hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (i, h.name.as_str())),
        )
    }
    fn racks(&self) -> Box<dyn Iterator<Item = (&str, &str, &[usize])> + '_> {
        Box::new(
            self.racks
                .iter()
                .map(|r| (r.name.as_str(), r.full_name.as_str(), r.hosts.as_slice())),
        )
    }
    fn datacenters(&self) -> Box<dyn Iterator<Item = (&str, Vec<usize>)> + '_> {
        Box::new(self.datacenters.iter().map(|dc| {
            let hosts = dc
                .racks
                .iter()
                .flat_map(|&r| self.racks[r].hosts.iter().copied())
                .collect();
            (dc.name.as_str(), hosts)
        }))
    }
    fn group(&self, name: &str) -> Option<Result<Vec<usize>, Invalid>> {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| Ok(g.hosts.clone()))
    }
    fn group_names(&self) -> Vec<&str> {
        self.groups.iter().map(|g| g.name.as_str()).collect()
    }
    fn label(&self, host: usize, key: &str) -> Option<&str> {
        self.hosts[host].labels.get(key).map(String::as_str)
    }
    fn host_count(&self) -> usize {
        self.hosts.len()
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, Vec<String>> {
        Inventory::from_str("inv.yml", text, Path::new("/base"))
            .map_err(|ds| ds.iter().map(|d| d.to_string()).collect())
    }

    const SMALL: &str = "
cluster: prod
transport: ssh
coordination: {zookeeper: {connect: 'zk1:2181'}}
defaults:
  ssh: {user: deploy, port: 2222}
  labels: {env: prod}
datacenters:
  east:
    racks:
      r1:
        services: [api]
        hosts:
          web-1: 10.0.0.1
          web-2: {address: 10.0.0.2, ssh: {port: 22}, labels: {tier: edge}}
      r2:
        hosts:
          db-1: {address: 10.0.1.1, services: [store]}
groups:
  edge: [label:tier=edge]
  all-east: {hosts: [dc:east], services: [agent]}
  both: [group:edge, db-1]
origin: db-1
";

    #[test]
    fn settings_cascade_and_groups_resolve() {
        let inv = load(SMALL).unwrap();
        assert_eq!(inv.cluster, "prod");
        assert_eq!(inv.hosts.len(), 3);
        let web1 = &inv.hosts[0];
        assert_eq!(web1.address, "10.0.0.1");
        assert_eq!(web1.ssh.user.as_deref(), Some("deploy"));
        assert_eq!(web1.ssh.port, Some(2222));
        assert_eq!(inv.hosts[1].ssh.port, Some(22));
        assert_eq!(
            inv.hosts[1].labels.get("env").map(String::as_str),
            Some("prod")
        );
        assert_eq!(web1.services, ["api", "agent"]);
        assert_eq!(inv.hosts[2].services, ["agent", "store"]);
        assert_eq!(inv.groups[0].hosts, [1]);
        assert_eq!(inv.groups[2].hosts, [1, 2]);
        assert_eq!(inv.origin, Origin::Host(2));
        assert_eq!(inv.rack_of(2).full_name, "east/r2");
        match &inv.coordination {
            Coordination::ZooKeeper {
                root,
                session_timeout,
                ..
            } => {
                assert_eq!(root, "/rookery/prod");
                assert_eq!(*session_timeout, Duration::from_secs(10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn group_settings_sit_between_rack_and_host() {
        let text = "
transport: ssh
coordination: {zookeeper: {connect: zk}}
defaults: {ssh: {user: ops}}
datacenters:
  east:
    racks:
      r1:
        ssh: {port: 2200}
        hosts:
          a: {labels: {tier: web}}
          b: {labels: {tier: web}, ssh: {user: root}}
          c: ~
groups:
  web: {hosts: [label:tier=web], ssh: {user: deploy, key: ~/.ssh/web}, labels: {lb: yes}, services: [api]}
";
        let inv = load(text).unwrap();
        let [a, b, c] = [&inv.hosts[0], &inv.hosts[1], &inv.hosts[2]];
        assert_eq!(
            a.ssh,
            Ssh {
                user: Some("deploy".into()),
                port: Some(2200),
                key: Some("~/.ssh/web".into()),
                jump: None
            }
        );
        assert_eq!(
            b.ssh.user.as_deref(),
            Some("root"),
            "the host's own setting wins"
        );
        assert_eq!(c.ssh.user.as_deref(), Some("ops"));
        assert_eq!(a.labels.get("lb").map(String::as_str), Some("yes"));
        assert_eq!(a.services, ["api"]);
        assert!(c.services.is_empty());
    }

    #[test]
    fn local_transport_gives_each_host_a_directory() {
        let inv = load("datacenters: {dc1: {racks: {r1: {hosts: {a: ~, b: ~}}}}}").unwrap();
        assert_eq!(
            inv.transport,
            Transport::Local {
                root: PathBuf::from("/base/.rookery/hosts")
            }
        );
        assert_eq!(
            inv.hosts[1].root.as_deref(),
            Some(Path::new("/base/.rookery/hosts/b"))
        );
        assert_eq!(inv.cluster, "inv");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "
transport: ssh
coordination: {zookeeper: {connect: zk, root: rookery}}
datacenters:
  east:
    racks:
      r1:
        hosts:
          a: {adress: 10.0.0.1}
          b: {address: 10.0.0.2, ssh: {port: 70000}}
          c: 10.0.0.2
      r2:
        hosts:
          a: 10.0.0.9
groups:
  loop1: [group:loop2]
  loop2: [group:loop1]
  typo: [dc:west]
origin: buildd
";
        assert_eq!(
            load(text).unwrap_err(),
            [
                "inv.yml:3:47: `coordination.zookeeper.root` must be an absolute znode path like `/rookery/inv`, found `rookery`",
                "inv.yml:9:15: unknown key `adress` in `datacenters.east.racks.r1.hosts.a` (did you mean `address`?)",
                "inv.yml:10:46: `datacenters.east.racks.r1.hosts.b.ssh.port` must be between 1 and 65535, found `70000`",
                "inv.yml:11:11: host `c` has the same address as `b`: 10.0.0.2:22",
                "inv.yml:14:11: duplicate host `a` (first defined on line 9)",
                "inv.yml:16:3: group `loop1` includes itself through other groups",
                "inv.yml:17:3: group `loop2` includes itself through other groups",
                "inv.yml:18:10: group `typo`: `dc:west` matches no host",
                "inv.yml:19:9: `origin` names unknown host `buildd`; use `controller` or a host of the inventory",
            ]
        );
    }

    #[test]
    fn ssh_hosts_need_a_network_store() {
        let err =
            load("transport: ssh\ndatacenters: {dc1: {racks: {r1: {hosts: {a: ~}}}}}").unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].contains("`coordination: local` needs `transport: local`"),
            "{err:?}"
        );
    }
    /// Messages about a key file name the setting the key came from.
    #[test]
    fn the_key_setting_in_force_is_kept_with_the_key() {
        let text = "
transport: ssh
coordination: {zookeeper: {connect: zk}}
defaults: {ssh: {key: ~/.ssh/all}}
datacenters:
  east:
    racks:
      r1:
        hosts:
          a: {labels: {tier: web}}
          b: {ssh: {key: ~/.ssh/b}}
          c: {ssh: {user: u}}
groups:
  web: {hosts: [label:tier=web], ssh: {key: ~/.ssh/web}}
";
        let inv = load(text).unwrap();
        let setting = |h: usize| inv.hosts[h].ssh_key_setting.as_deref();
        assert_eq!(setting(0), Some("groups.web.ssh.key"));
        assert_eq!(
            setting(1),
            Some("datacenters.east.racks.r1.hosts.b.ssh.key")
        );
        assert_eq!(setting(2), Some("defaults.ssh.key"));
    }
}
