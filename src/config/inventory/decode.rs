//! Reading an inventory document: the top level, transport, SSH and coordination
//! settings, the settings a datacenter, rack or group passes down, and the origin.

use super::*;

/// Settings that cascade from `defaults` down to each host.
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    pub(super) ssh: Ssh,
    /// The dotted path of the `ssh.key` in force, with the key.
    pub(super) key_setting: Option<String>,
    pub(super) root: Option<String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) services: Vec<String>,
    pub(super) link: Option<Rate>,
}

impl Settings {
    pub(super) fn under(&self, child: Settings) -> Settings {
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

/// Reads an inventory document: the cluster, transport and coordination, the tree
/// of hosts and the groups, each host's settings, and the origin.
pub(super) fn decode(d: &mut Decoder, root: &Node, file: &str, base: &Path) -> Inventory {
    let top = d.map(root, "", TOP_KEYS);
    if matches!(root.value, Value::Null) {
        d.error(
            Pos { line: 1, col: 1 },
            "the inventory is empty: it needs at least `datacenters`",
        );
    }

    let cluster = decode_cluster(d, &top, file);
    let transport = decode_transport(d, top.get("transport"), base);
    let coordination = decode_coordination(d, top.get("coordination"), base, &cluster);
    check_coordination_reachable(d, &top, &transport, &coordination);

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
    settle_host_settings(&mut inv, cascades, &group_settings);

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

/// The cluster's name: `cluster:`, else the file's stem (checked either way).
fn decode_cluster(d: &mut Decoder, top: &Map, file: &str) -> String {
    match top
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
    }
}

/// Hosts reached over SSH cannot register in a store on this machine: `coordination:
/// local` with `transport: ssh` is an error.
fn check_coordination_reachable(
    d: &mut Decoder,
    top: &Map,
    transport: &Transport,
    coordination: &Coordination,
) {
    if let (Transport::Ssh(_), Coordination::Local { .. }) = (transport, coordination) {
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
}

/// Sets each host's final settings: what it inherits (defaults, datacenter, rack),
/// then its groups' in inventory order, then its own.
fn settle_host_settings(
    inv: &mut Inventory,
    cascades: Vec<(Settings, Settings)>,
    group_settings: &[Settings],
) {
    for (h, (inherited, own)) in cascades.into_iter().enumerate() {
        let mut s = inherited;
        for (g, gs) in inv.groups.iter().zip(group_settings) {
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
}

pub(super) fn decode_transport(d: &mut Decoder, node: Option<&Node>, base: &Path) -> Transport {
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
pub(super) fn home_or_resolve(base: &Path, p: &str) -> PathBuf {
    if p.starts_with("~/") {
        PathBuf::from(p)
    } else {
        resolve_path(base, p)
    }
}

pub(super) fn decode_ssh_settings(d: &mut Decoder, node: &Node, base: &Path) -> SshSettings {
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

pub(super) fn decode_coordination(
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

pub(super) fn decode_settings(d: &mut Decoder, m: &Map<'_>, path: &str) -> Settings {
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

/// Two hosts at one address and SSH port would be one machine deployed twice.
pub(super) fn check_unique_addresses(d: &mut Decoder, inv: &Inventory) {
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

pub(super) fn decode_origin(d: &mut Decoder, node: &Node, inv: &Inventory) -> Origin {
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
