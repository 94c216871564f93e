//! Everyone who may join a deploy's swarm, in the order distribution reads them:
//! origins first, then hosts by datacenter, rack and name. The chain, the mesh and the
//! striped trees are all built over a [`Roster`].

use crate::config::diagnostic::Invalid;
use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

/// One machine that may join: a host of the inventory or the origin.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub name: String,
    pub dc: String,
    pub rack: String,
    /// The inventory address when it is an IP; hosts named by DNS are identified by
    /// the `host=` parameter and reached at the address they announce from.
    pub ip: Option<IpAddr>,
    pub origin: bool,
}

/// Everyone who may join, in pipeline order.
#[derive(Debug, Clone)]
pub struct Roster {
    pub(super) members: Vec<Member>,
    /// Member ids in chain order: origins, then hosts by datacenter, rack, name.
    pub(super) order: Vec<usize>,
    /// Position of each member in `order`.
    pub(super) position: Vec<usize>,
    pub(super) by_name: HashMap<String, usize>,
    /// Each member's rack (an index into `rack_hosts`).
    pub(super) rack_of: Vec<usize>,
    /// The hosts (not origins) of each rack: `rack_complete` looks at these only.
    pub(super) rack_hosts: Vec<Vec<usize>>,
}

impl Roster {
    /// `members` are given in inventory order; datacenters and racks keep the order of
    /// their first appearance, except that the origin's datacenter goes first.
    pub fn new(members: Vec<Member>) -> Roster {
        let origin_dc = members.iter().find(|m| m.origin).map(|m| m.dc.clone());
        let mut dc_rank: HashMap<&str, usize> = HashMap::new();
        let mut rack_rank: HashMap<(&str, &str), usize> = HashMap::new();
        if let Some(dc) = &origin_dc {
            dc_rank.insert(dc, 0);
        }
        for m in &members {
            let n = dc_rank.len();
            dc_rank.entry(&m.dc).or_insert(n);
            let n = rack_rank.len();
            rack_rank.entry((&m.dc, &m.rack)).or_insert(n);
        }
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| {
            let m = &members[i];
            (
                !m.origin,
                dc_rank[m.dc.as_str()],
                rack_rank[&(m.dc.as_str(), m.rack.as_str())],
                i,
            )
        });
        let mut position = vec![0; members.len()];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let by_name = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        let rack_of: Vec<usize> = members
            .iter()
            .map(|m| rack_rank[&(m.dc.as_str(), m.rack.as_str())])
            .collect();
        let mut rack_hosts = vec![Vec::new(); rack_rank.len()];
        for (i, m) in members.iter().enumerate() {
            if !m.origin {
                rack_hosts[rack_of[i]].push(i);
            }
        }
        Roster {
            members,
            order,
            position,
            by_name,
            rack_of,
            rack_hosts,
        }
    }

    /// Member ids in chain order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, id: usize) -> &Member {
        &self.members[id]
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The member an announce comes from, or why it is refused. `source` is the
    /// connection's address; `host` the announce's `host=` parameter.
    pub fn identify(&self, source: IpAddr, host: Option<&str>) -> Result<usize, Invalid> {
        let same = |ip: Option<IpAddr>| match ip {
            Some(ip) => ip == source || (ip.is_loopback() && source.is_loopback()),
            None => false,
        };
        if let Some(name) = host {
            let id = self
                .by_name(name)
                .ok_or_else(|| format!("host `{name}` is not in this deploy"))?;
            let m = &self.members[id];
            if m.ip.is_some() && !same(m.ip) {
                return Err(format!(
                    "host `{name}` must announce from its inventory address, not {source}"
                )
                .into());
            }
            return Ok(id);
        }
        let mut found = self.members.iter().enumerate().filter(|(_, m)| same(m.ip));
        match (found.next(), found.next()) {
            (Some((id, _)), None) => Ok(id),
            (Some(_), Some(_)) => Err(format!(
                "several hosts share address {source}; add host=NAME to the announce URL"
            )
            .into()),
            (None, _) => Err(format!("address {source} is not in the inventory").into()),
        }
    }
}

/// 0 same rack, 1 same datacenter, 2 elsewhere.
pub(super) fn locality(roster: &Roster, a: usize, b: usize) -> u8 {
    let (a, b) = (&roster.members[a], &roster.members[b]);
    if a.dc != b.dc {
        2
    } else if a.rack != b.rack {
        1
    } else {
        0
    }
}
