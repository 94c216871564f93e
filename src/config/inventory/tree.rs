//! The datacenter, rack and host tree, and groups of hosts named by patterns.

use super::*;

/// Reads datacenters, racks and hosts; returns, per host, the settings it inherits
/// (defaults, datacenter, rack) and its own.
pub(super) fn decode_datacenters(
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

/// Groups may name other groups; they are resolved in dependency order and a cycle
/// among groups is reported. Returns each group's own settings.
pub(super) fn decode_groups(d: &mut Decoder, node: &Node, inv: &mut Inventory) -> Vec<Settings> {
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
