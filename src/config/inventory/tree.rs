//! The datacenter, rack and host tree, and groups of hosts named by patterns.

use super::*;

/// One entry of a mapping keyed by user-chosen names: the name, where it is, and
/// its value.
type Entry<'n> = (&'n str, Pos, &'n Node);

/// What reading the tree gathers across datacenters.
#[derive(Default)]
struct Gathered {
    /// Where each host was first defined: host names are unique.
    seen: HashMap<String, Pos>,
    /// Per host, the settings it inherits (defaults, datacenter, rack) and its own.
    cascades: Vec<(Settings, Settings)>,
}

/// Where a rack or host is read: its parent's id, dotted path and settings.
struct Parent<'a> {
    id: usize,
    path: &'a str,
    settings: &'a Settings,
}

/// Reads datacenters, racks and hosts; returns, per host, the settings it inherits
/// (defaults, datacenter, rack) and its own.
pub(super) fn decode_datacenters(
    d: &mut Decoder,
    node: &Node,
    defaults: &Settings,
    inv: &mut Inventory,
) -> Vec<(Settings, Settings)> {
    let mut gathered = Gathered::default();
    for entry in d.named_entries(node, "datacenters") {
        decode_datacenter(d, entry, defaults, inv, &mut gathered);
    }
    if inv.hosts.is_empty() && !inv.datacenters.is_empty() {
        d.error(node.pos, "the inventory defines no host");
    }
    gathered.cascades
}

/// One datacenter: its settings and interconnect, then its racks.
fn decode_datacenter(
    d: &mut Decoder,
    (dc_name, dc_pos, dc_node): Entry,
    defaults: &Settings,
    inv: &mut Inventory,
    gathered: &mut Gathered,
) {
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
        return;
    };
    let dc = Parent {
        id: dc_id,
        path: &dc_path,
        settings: &dc_settings,
    };
    for entry in d.named_entries(racks, &join(&dc_path, "racks")) {
        decode_rack(d, entry, &dc, inv, gathered);
    }
}

/// One rack of datacenter `dc`: its settings and uplink, then its hosts.
fn decode_rack(
    d: &mut Decoder,
    (rack_name, rack_pos, rack_node): Entry,
    dc: &Parent,
    inv: &mut Inventory,
    gathered: &mut Gathered,
) {
    let dc_name = inv.datacenters[dc.id].name.clone();
    if let Err(why) = check_name(rack_name) {
        d.error(rack_pos, format!("rack name `{rack_name}` {why}"));
    }
    let rack_path = format!("{}.racks.{rack_name}", dc.path);
    let mut keys = SETTING_KEYS.to_vec();
    keys.extend(["hosts", "uplink"]);
    let rm = d.map(rack_node, &rack_path, &keys);
    let rack_settings = dc.settings.under(decode_settings(d, &rm, &rack_path));
    let rack_id = inv.racks.len();
    let uplink = rm
        .get("uplink")
        .and_then(|v| d.rate(v, &join(&rack_path, "uplink")));
    inv.racks.push(Rack {
        name: rack_name.to_string(),
        full_name: format!("{dc_name}/{rack_name}"),
        dc: dc.id,
        hosts: Vec::new(),
        uplink,
    });
    inv.datacenters[dc.id].racks.push(rack_id);
    let Some(hosts) = rm.get("hosts") else {
        d.error(
            rack_pos,
            format!("rack `{dc_name}/{rack_name}` has no `hosts`"),
        );
        return;
    };
    let rack = Parent {
        id: rack_id,
        path: &rack_path,
        settings: &rack_settings,
    };
    for entry in d.named_entries(hosts, &join(&rack_path, "hosts")) {
        decode_host(d, entry, &rack, inv, gathered);
    }
}

/// One host of `rack`: its address and own settings (a duplicate name is reported
/// and dropped).
fn decode_host(
    d: &mut Decoder,
    (host_name, host_pos, host_node): Entry,
    rack: &Parent,
    inv: &mut Inventory,
    gathered: &mut Gathered,
) {
    let host_path = format!("{}.hosts.{host_name}", rack.path);
    if let Err(why) = check_name(host_name) {
        d.error(host_pos, format!("host name `{host_name}` {why}"));
    }
    if let Some(first) = gathered.seen.get(host_name) {
        d.error(
            host_pos,
            format!(
                "duplicate host `{host_name}` (first defined on line {})",
                first.line
            ),
        );
        return;
    }
    gathered.seen.insert(host_name.to_string(), host_pos);
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
    let labels = rack.settings.under(own.clone()).labels;
    gathered.cascades.push((rack.settings.clone(), own));
    let host_id = inv.hosts.len();
    inv.hosts.push(Host {
        name: host_name.to_string(),
        dc: inv.racks[rack.id].dc,
        rack: rack.id,
        address: address.unwrap_or_else(|| host_name.to_string()),
        ssh: Ssh::default(),
        ssh_key_setting: None,
        root: None,
        labels,
        services: Vec::new(),
        link: None,
        pos: host_pos,
    });
    inv.racks[rack.id].hosts.push(host_id);
}

/// A group as written: its name, where, its host patterns and its own settings.
struct RawGroup {
    name: String,
    pos: Pos,
    patterns: Vec<(Pattern, Pos)>,
    settings: Settings,
}

/// Groups may name other groups; they are resolved in dependency order and a cycle
/// among groups is reported. Returns each group's own settings.
pub(super) fn decode_groups(d: &mut Decoder, node: &Node, inv: &mut Inventory) -> Vec<Settings> {
    let mut raws = Vec::new();
    for entry in d.named_entries(node, "groups") {
        raws.push(read_group(d, entry, inv));
    }
    let resolved = resolve_groups(d, &raws, inv);
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

/// One group as written: a list of patterns, or a mapping of `hosts` and settings.
fn read_group(d: &mut Decoder, (name, pos, gnode): Entry, inv: &Inventory) -> RawGroup {
    let path = format!("groups.{name}");
    if let Err(why) = check_name(name) {
        d.error(pos, format!("group name `{name}` {why}"));
    }
    if inv.hosts.iter().any(|h| h.name == name) || inv.datacenters.iter().any(|dc| dc.name == name)
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
    RawGroup {
        name: name.to_string(),
        pos,
        patterns,
        settings,
    }
}

/// Each group's hosts (`None`: a cycle, reported). Resolved with a universe that
/// sees the groups resolved so far; repeated until no progress, then whatever is
/// left refers to itself through other groups.
fn resolve_groups(d: &mut Decoder, raws: &[RawGroup], inv: &Inventory) -> Vec<Option<Vec<usize>>> {
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
            if !ready(&raws[i], &view, &failed) {
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
    resolved
}

/// Whether every group `raw` names is resolved (or failed) in `view`.
fn ready(raw: &RawGroup, view: &GroupView, failed: &[bool]) -> bool {
    raw.patterns.iter().all(|(p, _)| {
        p.group_refs(view)
            .iter()
            .all(|g| match view.names.iter().position(|n| n == g) {
                Some(j) => view.resolved[j].is_some() || failed[j],
                None => true,
            })
    })
}

/// The inventory as seen while groups are still being resolved.
pub(super) struct GroupView<'a> {
    pub(super) inv: &'a Inventory,
    pub(super) names: Vec<&'a str>,
    pub(super) resolved: &'a [Option<Vec<usize>>],
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
    fn group(&self, name: &str) -> Option<Result<Vec<usize>, Invalid>> {
        let i = self.names.iter().position(|n| *n == name)?;
        Some(
            self.resolved[i]
                .clone()
                .ok_or_else(|| Invalid(format!("group `{name}` is invalid"))),
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
