//! The inventory: which hosts exist, where they sit (datacenter, rack), how to reach
//! them, which services they run, and which coordination store the cluster uses.
//!
//! Settings cascade `defaults` -> datacenter -> rack -> host: a deeper level overrides
//! `ssh` fields and `root`, and adds to `labels` and `services`. Loading checks every
//! name, reference and value and reports all problems at once (see `docs/inventory.md`).

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

/// Settings that cascade from `defaults` down to each host.
#[derive(Debug, Clone, Default)]
struct Settings {
    ssh: Ssh,
    /// The dotted path of the `ssh.key` in force, with the key.
    key_setting: Option<String>,
    root: Option<String>,
    labels: BTreeMap<String, String>,
    services: Vec<String>,
    link: Option<Rate>,
}

impl Settings {
    fn under(&self, child: Settings) -> Settings {
        let mut labels = self.labels.clone();
        labels.extend(child.labels);
        let mut services = self.services.clone();
        for s in child.services {
            if !services.contains(&s) {
                services.push(s);
            }
        }
        Settings {
            key_setting: match child.ssh.key {
                Some(_) => child.key_setting,
                None => self.key_setting.clone(),
            },
            ssh: Ssh {
                user: child.ssh.user.or_else(|| self.ssh.user.clone()),
                port: child.ssh.port.or(self.ssh.port),
                key: child.ssh.key.or_else(|| self.ssh.key.clone()),
                jump: child.ssh.jump.or_else(|| self.ssh.jump.clone()),
            },
            root: child.root.or_else(|| self.root.clone()),
            labels,
            services,
            link: child.link.or(self.link),
        }
    }
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
pub fn check_name(name: &str) -> Result<(), String> {
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
    fn group(&self, name: &str) -> Option<Result<Vec<usize>, String>> {
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

fn decode(d: &mut Decoder, root: &Node, file: &str, base: &Path) -> Inventory {
    let top = d.map(root, "", TOP_KEYS);
    if matches!(root.value, Value::Null) {
        d.error(
            Pos { line: 1, col: 1 },
            "the inventory is empty: it needs at least `datacenters`",
        );
    }

    let cluster = match top
        .get("cluster")
        .and_then(|n| d.string(n, "cluster").map(|s| (s, n.pos)))
    {
        Some((name, pos)) => {
            if let Err(why) = check_name(&name) {
                d.error(pos, format!("cluster name `{name}` {why}"));
            }
            name
        }
        None => {
            let stem = Path::new(file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "default".into());
            if let Err(why) = check_name(&stem) {
                d.file_error(format!(
                    "cluster name `{stem}` (taken from the file name) {why}; set `cluster:`"
                ));
            }
            stem
        }
    };

    let transport = decode_transport(d, top.get("transport"), base);
    let coordination = decode_coordination(d, top.get("coordination"), base, &cluster);
    if let (Transport::Ssh(_), Coordination::Local { .. }) = (&transport, &coordination) {
        let pos = top
            .get("coordination")
            .or(top.get("transport"))
            .map(|n| n.pos)
            .unwrap_or(top.pos);
        d.error(
            pos,
            "`coordination: local` needs `transport: local`: hosts reached over SSH cannot register in a store on this machine; use `coordination: {zookeeper: ...}`",
        );
    }

    let defaults = match top.get("defaults") {
        Some(n) => {
            let m = d.map(n, "defaults", SETTING_KEYS);
            decode_settings(d, &m, "defaults")
        }
        None => Settings::default(),
    };

    let mut inv = Inventory {
        file: file.to_string(),
        cluster,
        transport,
        coordination,
        origin: Origin::Controller,
        datacenters: Vec::new(),
        racks: Vec::new(),
        hosts: Vec::new(),
        groups: Vec::new(),
    };

    let cascades = match top.get("datacenters") {
        Some(n) => decode_datacenters(d, n, &defaults, &mut inv),
        None => {
            if !matches!(root.value, Value::Null) {
                d.file_error("missing key `datacenters`");
            }
            Vec::new()
        }
    };

    // Groups are resolved on the settings of the datacenter/rack/host cascade; their
    // own settings then apply between the rack and the host level.
    let group_settings = match top.get("groups") {
        Some(n) => decode_groups(d, n, &mut inv),
        None => Vec::new(),
    };
    for (h, (inherited, own)) in cascades.into_iter().enumerate() {
        let mut s = inherited;
        for (g, gs) in inv.groups.iter().zip(&group_settings) {
            if g.hosts.binary_search(&h).is_ok() {
                s = s.under(gs.clone());
            }
        }
        let s = s.under(own);
        let host = &mut inv.hosts[h];
        host.ssh = s.ssh;
        host.ssh_key_setting = s.key_setting;
        host.root = s.root.map(PathBuf::from);
        host.labels = s.labels;
        host.services = s.services;
        host.link = s.link;
    }

    check_unique_addresses(d, &inv);

    if let Transport::Local { root } = &inv.transport {
        for h in &mut inv.hosts {
            if h.root.is_none() {
                h.root = Some(root.join(&h.name));
            }
        }
    }

    if let Some(n) = top.get("origin") {
        inv.origin = decode_origin(d, n, &inv);
    }
    inv
}

fn decode_transport(d: &mut Decoder, node: Option<&Node>, base: &Path) -> Transport {
    let default_root = || resolve_path(base, ".rookery/hosts");
    let Some(node) = node else {
        return Transport::Local {
            root: default_root(),
        };
    };
    match &node.value {
        Value::Scalar { text, .. } => match text.as_str() {
            "ssh" => Transport::Ssh(SshSettings::default()),
            "local" => Transport::Local {
                root: default_root(),
            },
            other => {
                d.error(
                    node.pos,
                    format!("`transport` must be `ssh` or `local`, found `{other}`"),
                );
                Transport::Local {
                    root: default_root(),
                }
            }
        },
        _ => {
            let m = d.map(node, "transport", &["ssh", "local"]);
            if let Some(sn) = m.get("ssh") {
                Transport::Ssh(decode_ssh_settings(d, sn, base))
            } else if let Some(l) = m.get("local") {
                let lm = d.map(l, "transport.local", &["root"]);
                let root = lm
                    .get("root")
                    .and_then(|r| d.string(r, "transport.local.root"))
                    .map(|r| resolve_path(base, &r));
                Transport::Local {
                    root: root.unwrap_or_else(default_root),
                }
            } else {
                d.error(node.pos, "`transport` must be `ssh` or `local`");
                Transport::Ssh(SshSettings::default())
            }
        }
    }
}

/// `~/...` stays for the SSH layer to expand at use; other paths are taken relative
/// to the inventory file.
fn home_or_resolve(base: &Path, p: &str) -> PathBuf {
    if p.starts_with("~/") {
        PathBuf::from(p)
    } else {
        resolve_path(base, p)
    }
}

fn decode_ssh_settings(d: &mut Decoder, node: &Node, base: &Path) -> SshSettings {
    let mut s = SshSettings::default();
    let m = d.map(
        node,
        "transport.ssh",
        &[
            "known_hosts",
            "config",
            "connect_timeout",
            "command_timeout",
            "agent_path",
        ],
    );
    if let Some(k) = m.get("known_hosts") {
        s.known_hosts = match &k.value {
            Value::Seq(_) => d
                .strings(k, "transport.ssh.known_hosts")
                .into_iter()
                .map(|(p, _)| home_or_resolve(base, &p))
                .collect(),
            _ => d
                .string(k, "transport.ssh.known_hosts")
                .map(|p| vec![home_or_resolve(base, &p)])
                .unwrap_or_default(),
        };
    }
    if let Some(c) = m.get("config") {
        s.config = d
            .string(c, "transport.ssh.config")
            .map(|p| home_or_resolve(base, &p));
    }
    if let Some(t) = m.get("connect_timeout")
        && let Some(t) = d.duration(t, "transport.ssh.connect_timeout")
    {
        s.connect_timeout = t;
    }
    if let Some(t) = m.get("command_timeout")
        && let Some(t) = d.duration(t, "transport.ssh.command_timeout")
    {
        s.command_timeout = t;
    }
    if let Some(a) = m.get("agent_path")
        && let Some(a) = d.string(a, "transport.ssh.agent_path")
    {
        s.agent_path = a;
    }
    s
}

fn decode_coordination(
    d: &mut Decoder,
    node: Option<&Node>,
    base: &Path,
    cluster: &str,
) -> Coordination {
    let default_dir = || resolve_path(base, ".rookery/coordination");
    let Some(node) = node else {
        return Coordination::Local { dir: default_dir() };
    };
    if let Value::Scalar { text, .. } = &node.value {
        if text != "local" {
            d.error(
                node.pos,
                format!("`coordination` must be `local` or a `zookeeper:` mapping, found `{text}`"),
            );
        }
        return Coordination::Local { dir: default_dir() };
    }
    let m = d.map(node, "coordination", &["local", "zookeeper"]);
    if let Some(z) = m.get_even_null("zookeeper") {
        let zm = d.map(
            z,
            "coordination.zookeeper",
            &["connect", "root", "session_timeout"],
        );
        let connect = match zm.get("connect") {
            Some(c) => {
                let s = d
                    .string(c, "coordination.zookeeper.connect")
                    .unwrap_or_default();
                if s.trim().is_empty() {
                    d.error(
                        c.pos,
                        "`coordination.zookeeper.connect` is empty (e.g. `zk1:2181,zk2:2181`)",
                    );
                }
                s
            }
            None => {
                d.error(
                    z.pos,
                    "missing key `connect` in `coordination.zookeeper` (e.g. `zk1:2181,zk2:2181`)",
                );
                String::new()
            }
        };
        let root = zm
            .get("root")
            .and_then(|r| {
                let s = d.string(r, "coordination.zookeeper.root")?;
                if !s.starts_with('/') || s.ends_with('/') || s.contains("//") {
                    d.error(r.pos, format!("`coordination.zookeeper.root` must be an absolute znode path like `/rookery/{cluster}`, found `{s}`"));
                }
                Some(s)
            })
            .unwrap_or_else(|| format!("/rookery/{cluster}"));
        let session_timeout = zm
            .get("session_timeout")
            .and_then(|t| d.duration(t, "coordination.zookeeper.session_timeout"))
            .unwrap_or(Duration::from_secs(10));
        Coordination::ZooKeeper {
            connect,
            root,
            session_timeout,
        }
    } else if let Some(l) = m.get("local") {
        let lm = d.map(l, "coordination.local", &["dir"]);
        let dir = lm
            .get("dir")
            .and_then(|r| d.string(r, "coordination.local.dir"))
            .map(|r| resolve_path(base, &r));
        Coordination::Local {
            dir: dir.unwrap_or_else(default_dir),
        }
    } else {
        Coordination::Local { dir: default_dir() }
    }
}

fn decode_settings(d: &mut Decoder, m: &Map<'_>, path: &str) -> Settings {
    let mut s = Settings::default();
    if let Some(n) = m.get("ssh") {
        let p = join(path, "ssh");
        let sm = d.map(n, &p, SSH_KEYS);
        s.ssh.user = sm.get("user").and_then(|v| d.string(v, &join(&p, "user")));
        let key_path = join(&p, "key");
        s.ssh.key = sm.get("key").and_then(|v| d.string(v, &key_path));
        s.key_setting = s.ssh.key.as_ref().map(|_| key_path);
        s.ssh.jump = sm.get("jump").and_then(|v| d.string(v, &join(&p, "jump")));
        if let Some(v) = sm.get("port") {
            let kp = join(&p, "port");
            s.ssh.port = d.u32(v, &kp).and_then(|port| match u16::try_from(port) {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    d.error(
                        v.pos,
                        format!("`{kp}` must be between 1 and 65535, found `{port}`"),
                    );
                    None
                }
            });
        }
    }
    s.root = m.get("root").and_then(|v| d.string(v, &join(path, "root")));
    s.link = m.get("link").and_then(|v| d.rate(v, &join(path, "link")));
    if let Some(n) = m.get("labels") {
        let p = join(path, "labels");
        for (k, _, v) in d.named_entries(n, &p) {
            if let Some(val) = d.string(v, &join(&p, k)) {
                s.labels.insert(k.to_string(), val);
            }
        }
    }
    if let Some(n) = m.get("services") {
        for (name, pos) in d.strings(n, &join(path, "services")) {
            match check_name(&name) {
                Ok(()) => s.services.push(name),
                Err(why) => d.error(pos, format!("service name `{name}` {why}")),
            }
        }
    }
    s
}

/// Reads datacenters, racks and hosts; returns, per host, the settings it inherits
/// (defaults, datacenter, rack) and its own.
fn decode_datacenters(
    d: &mut Decoder,
    node: &Node,
    defaults: &Settings,
    inv: &mut Inventory,
) -> Vec<(Settings, Settings)> {
    let mut seen_hosts: HashMap<String, Pos> = HashMap::new();
    let mut cascades = Vec::new();
    for (dc_name, dc_pos, dc_node) in d.named_entries(node, "datacenters") {
        if let Err(why) = check_name(dc_name) {
            d.error(dc_pos, format!("datacenter name `{dc_name}` {why}"));
        }
        let dc_path = format!("datacenters.{dc_name}");
        let mut keys = SETTING_KEYS.to_vec();
        keys.extend(["racks", "interconnect"]);
        let dm = d.map(dc_node, &dc_path, &keys);
        let dc_settings = defaults.under(decode_settings(d, &dm, &dc_path));
        let dc_id = inv.datacenters.len();
        let interconnect = dm
            .get("interconnect")
            .and_then(|v| d.rate(v, &join(&dc_path, "interconnect")));
        inv.datacenters.push(Datacenter {
            name: dc_name.to_string(),
            racks: Vec::new(),
            interconnect,
        });
        let Some(racks) = dm.get("racks") else {
            d.error(dc_pos, format!("datacenter `{dc_name}` has no `racks`"));
            continue;
        };
        for (rack_name, rack_pos, rack_node) in d.named_entries(racks, &join(&dc_path, "racks")) {
            if let Err(why) = check_name(rack_name) {
                d.error(rack_pos, format!("rack name `{rack_name}` {why}"));
            }
            let rack_path = format!("{dc_path}.racks.{rack_name}");
            let mut keys = SETTING_KEYS.to_vec();
            keys.extend(["hosts", "uplink"]);
            let rm = d.map(rack_node, &rack_path, &keys);
            let rack_settings = dc_settings.under(decode_settings(d, &rm, &rack_path));
            let rack_id = inv.racks.len();
            let uplink = rm
                .get("uplink")
                .and_then(|v| d.rate(v, &join(&rack_path, "uplink")));
            inv.racks.push(Rack {
                name: rack_name.to_string(),
                full_name: format!("{dc_name}/{rack_name}"),
                dc: dc_id,
                hosts: Vec::new(),
                uplink,
            });
            inv.datacenters[dc_id].racks.push(rack_id);
            let Some(hosts) = rm.get("hosts") else {
                d.error(
                    rack_pos,
                    format!("rack `{dc_name}/{rack_name}` has no `hosts`"),
                );
                continue;
            };
            for (host_name, host_pos, host_node) in
                d.named_entries(hosts, &join(&rack_path, "hosts"))
            {
                let host_path = format!("{rack_path}.hosts.{host_name}");
                if let Err(why) = check_name(host_name) {
                    d.error(host_pos, format!("host name `{host_name}` {why}"));
                }
                if let Some(first) = seen_hosts.get(host_name) {
                    d.error(
                        host_pos,
                        format!(
                            "duplicate host `{host_name}` (first defined on line {})",
                            first.line
                        ),
                    );
                    continue;
                }
                seen_hosts.insert(host_name.to_string(), host_pos);
                let (address, own) = match &host_node.value {
                    // `web-1: 10.0.0.1` is short for `web-1: {address: 10.0.0.1}`.
                    Value::Scalar { text, .. } => (Some(text.clone()), Settings::default()),
                    _ => {
                        let mut keys = SETTING_KEYS.to_vec();
                        keys.push("address");
                        let hm = d.map(host_node, &host_path, &keys);
                        let address = hm
                            .get("address")
                            .and_then(|a| d.string(a, &join(&host_path, "address")));
                        (address, decode_settings(d, &hm, &host_path))
                    }
                };
                // Labels are needed to resolve groups; the final settings are set once
                // groups are known.
                let labels = rack_settings.under(own.clone()).labels;
                cascades.push((rack_settings.clone(), own));
                let host_id = inv.hosts.len();
                inv.hosts.push(Host {
                    name: host_name.to_string(),
                    dc: dc_id,
                    rack: rack_id,
                    address: address.unwrap_or_else(|| host_name.to_string()),
                    ssh: Ssh::default(),
                    ssh_key_setting: None,
                    root: None,
                    labels,
                    services: Vec::new(),
                    link: None,
                    pos: host_pos,
                });
                inv.racks[rack_id].hosts.push(host_id);
            }
        }
    }
    if inv.hosts.is_empty() && !inv.datacenters.is_empty() {
        d.error(node.pos, "the inventory defines no host");
    }
    cascades
}

/// Two hosts at one address and SSH port would be one machine deployed twice.
fn check_unique_addresses(d: &mut Decoder, inv: &Inventory) {
    if !matches!(inv.transport, Transport::Ssh(_)) {
        return;
    }
    let mut seen: HashMap<(&str, u16), &Host> = HashMap::new();
    for h in &inv.hosts {
        let port = h.ssh.port.unwrap_or(22);
        if let Some(first) = seen.get(&(h.address.as_str(), port)) {
            d.error(
                h.pos,
                format!(
                    "host `{}` has the same address as `{}`: {}:{port}",
                    h.name, first.name, h.address
                ),
            );
        } else {
            seen.insert((h.address.as_str(), port), h);
        }
    }
}

/// Groups may name other groups; they are resolved in dependency order and a cycle
/// among groups is reported. Returns each group's own settings.
fn decode_groups(d: &mut Decoder, node: &Node, inv: &mut Inventory) -> Vec<Settings> {
    struct Raw {
        name: String,
        pos: Pos,
        patterns: Vec<(Pattern, Pos)>,
        settings: Settings,
    }
    let mut raws = Vec::new();
    for (name, pos, gnode) in d.named_entries(node, "groups") {
        let path = format!("groups.{name}");
        if let Err(why) = check_name(name) {
            d.error(pos, format!("group name `{name}` {why}"));
        }
        if inv.hosts.iter().any(|h| h.name == name)
            || inv.datacenters.iter().any(|dc| dc.name == name)
        {
            d.error(
                pos,
                format!("group `{name}` has the name of a host or datacenter; pick another name"),
            );
        }
        let (hosts_node, settings) = match &gnode.value {
            Value::Seq(_) | Value::Scalar { .. } => (Some(gnode), Settings::default()),
            _ => {
                let mut keys = SETTING_KEYS.to_vec();
                keys.push("hosts");
                let gm = d.map(gnode, &path, &keys);
                (gm.get("hosts"), decode_settings(d, &gm, &path))
            }
        };
        let mut patterns = Vec::new();
        match hosts_node {
            Some(hn) => {
                for (text, ppos) in d.strings(hn, &join(&path, "hosts")) {
                    match Pattern::parse(&text) {
                        Ok(p) => patterns.push((p, ppos)),
                        Err(e) => d.error(ppos, format!("group `{name}`: {e}")),
                    }
                }
            }
            None => d.error(pos, format!("group `{name}` has no `hosts`")),
        }
        raws.push(Raw {
            name: name.to_string(),
            pos,
            patterns,
            settings,
        });
    }

    // Resolve with a universe that sees the groups resolved so far; repeat until no
    // progress, then whatever is left refers to itself through other groups.
    let mut resolved: Vec<Option<Vec<usize>>> = vec![None; raws.len()];
    let mut failed = vec![false; raws.len()];
    loop {
        let mut progress = false;
        for i in 0..raws.len() {
            if resolved[i].is_some() || failed[i] {
                continue;
            }
            let view = GroupView {
                inv,
                names: raws.iter().map(|r| r.name.as_str()).collect(),
                resolved: &resolved,
            };
            let ready = raws[i].patterns.iter().all(|(p, _)| {
                p.group_refs(&view)
                    .iter()
                    .all(|g| match view.names.iter().position(|n| n == g) {
                        Some(j) => view.resolved[j].is_some() || failed[j],
                        None => true,
                    })
            });
            if !ready {
                continue;
            }
            let mut members = Vec::new();
            let mut problems = Vec::new();
            for (p, ppos) in &raws[i].patterns {
                match p.select(&view) {
                    Ok(hs) => members.extend(hs),
                    Err(e) => problems.push((*ppos, format!("group `{}`: {e}", raws[i].name))),
                }
            }
            members.sort_unstable();
            members.dedup();
            for (pos, msg) in problems {
                d.error(pos, msg);
                failed[i] = true;
            }
            resolved[i] = Some(members);
            progress = true;
        }
        if !progress {
            break;
        }
    }
    for (i, raw) in raws.iter().enumerate() {
        if resolved[i].is_none() && !failed[i] {
            d.error(
                raw.pos,
                format!("group `{}` includes itself through other groups", raw.name),
            );
        }
    }
    let mut settings = Vec::with_capacity(raws.len());
    for (raw, hosts) in raws.into_iter().zip(resolved) {
        inv.groups.push(Group {
            name: raw.name,
            hosts: hosts.unwrap_or_default(),
            services: raw.settings.services.clone(),
        });
        settings.push(raw.settings);
    }
    settings
}

/// The inventory as seen while groups are still being resolved.
struct GroupView<'a> {
    inv: &'a Inventory,
    names: Vec<&'a str>,
    resolved: &'a [Option<Vec<usize>>],
}

impl Universe for GroupView<'_> {
    fn host_names(&self) -> Box<dyn Iterator<Item = (usize, &str)> + '_> {
        self.inv.host_names()
    }
    fn racks(&self) -> Box<dyn Iterator<Item = (&str, &str, &[usize])> + '_> {
        self.inv.racks()
    }
    fn datacenters(&self) -> Box<dyn Iterator<Item = (&str, Vec<usize>)> + '_> {
        self.inv.datacenters()
    }
    fn group(&self, name: &str) -> Option<Result<Vec<usize>, String>> {
        let i = self.names.iter().position(|n| *n == name)?;
        Some(
            self.resolved[i]
                .clone()
                .ok_or_else(|| format!("group `{name}` is invalid")),
        )
    }
    fn group_names(&self) -> Vec<&str> {
        self.names.clone()
    }
    fn label(&self, host: usize, key: &str) -> Option<&str> {
        self.inv.label(host, key)
    }
    fn host_count(&self) -> usize {
        self.inv.hosts.len()
    }
}

fn decode_origin(d: &mut Decoder, node: &Node, inv: &Inventory) -> Origin {
    let Some(name) = d.string(node, "origin") else {
        return Origin::Controller;
    };
    if name == "controller" {
        return Origin::Controller;
    }
    match inv.host_id(&name) {
        Some(h) => Origin::Host(h),
        None => {
            let hint = crate::config::diagnostic::suggestion(
                &name,
                inv.hosts.iter().map(|h| h.name.as_str()),
            );
            d.error(node.pos, format!("`origin` names unknown host `{name}`{hint}; use `controller` or a host of the inventory"));
            Origin::Controller
        }
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
}
