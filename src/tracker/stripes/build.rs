//! Building the trees: each stripe's backbone of forwarding nodes, then every
//! other member hung under the nearest node with a free slot (rack, datacenter,
//! anywhere), trading slots where a budget would break.

use super::*;

impl Trees {
    /// Builds the `k` trees for everyone in `roster`, rooted at its first origin.
    pub fn build(roster: &Roster, k: usize) -> Result<Trees, StripeError> {
        if !(MIN_STRIPES..=MAX_STRIPES).contains(&k) {
            return Err(StripeError::Count(k));
        }
        let blank = Trees::blank(roster, k)?;
        let order = roster.order().to_vec();
        // Built with one copy of upload per host first: a host that forwards more
        // than one copy holds every stripe through it to its share of its link
        // (measured: hosts with 9 children of 8 stripes made the slowest host 12%
        // later). The spare (up to 1.2 copies) is for re-links, and for inventories
        // whose racks cannot be fed within one copy each.
        let mut t = blank.clone();
        t.grow(&order);
        t.tight = false;
        // Built with the spare too; the tight trees are kept when they fit (nothing
        // over budget, no extra datacenter crossing) and are at most one hop deeper.
        // A hop costs one piece at 1/k of the link plus the hop lag (about 0.2 s
        // measured); a ninth child on every busy host costs 1/8 of the whole
        // transfer. Preferring the shallower trees at any price made N = 48 in
        // bench/swarm.sh (racks of 12) forward 1.12 copies from most hosts, for one
        // hop fewer.
        let mut loose = blank;
        loose.tight = false;
        loose.grow(&order);
        if t.overdraft > 0 || t.crossings_over_one_copy() || t.max_depth() > loose.max_depth() + 1 {
            return Ok(loose);
        }
        Ok(t)
    }

    /// Trees over `roster` with nobody attached yet (and tight budgets): roster
    /// positions, zone ids, each zone's members and each host's home stripe.
    fn blank(roster: &Roster, k: usize) -> Result<Trees, StripeError> {
        let order = roster.order();
        let members = roster.members();
        let root = *order
            .iter()
            .find(|&&m| members[m].origin)
            .ok_or(StripeError::NoOrigin)?;
        let n = members.len();
        let mut pos = vec![0; n];
        for (p, &m) in order.iter().enumerate() {
            pos[m] = p;
        }
        let (dc, rack, dcs, racks) = zone_ids(roster);
        let mut rack_members = vec![Vec::new(); racks];
        let mut dc_members = vec![Vec::new(); dcs];
        let mut home = vec![NONE; n];
        let mut next_home = 0;
        for &m in order {
            rack_members[rack[m]].push(m);
            dc_members[dc[m]].push(m);
            if m != root {
                home[m] = next_home % k;
                next_home += 1;
            }
        }
        Ok(Trees {
            k,
            tight: true,
            root,
            parent: vec![vec![NONE; n]; k],
            depth: vec![vec![0; n]; k],
            used: vec![0; n],
            dead: vec![false; n],
            root_kids: vec![0; k],
            home,
            rack,
            dc,
            at: order.to_vec(),
            pos,
            rack_members,
            dc_members,
            overdraft: 0,
        })
    }

    /// Both passes over every stripe: the backbones, then the fill.
    fn grow(&mut self, order: &[usize]) {
        for s in 0..self.k {
            self.backbone(s);
        }
        for s in 0..self.k {
            self.fill(s, order);
        }
    }

    /// Whether `m` can take one more child in stripe `s`. The origin keeps one
    /// slot for every other stripe that has no child of it yet: without that, the
    /// fill pass of one stripe took the slot another stripe's whole tree needed.
    pub(super) fn free(&self, s: usize, m: usize) -> bool {
        if self.dead[m] {
            return false;
        }
        let reserved = if m == self.root {
            (0..self.k)
                .filter(|&t| t != s && self.root_kids[t] == 0)
                .count()
        } else {
            0
        };
        self.used[m] + reserved < self.slots(m)
    }

    pub(super) fn attach(&mut self, s: usize, child: usize, parent: usize) {
        if parent == self.root {
            self.root_kids[s] += 1;
        }
        self.parent[s][child] = parent;
        self.depth[s][child] = self.depth[s][parent] + 1;
        self.used[parent] += 1;
    }

    /// The best candidate of one zone set: the first whose key is valid, dropping
    /// from this set those that can never be valid again (full; over the cross-rack
    /// fan-out, which only this pass's cross-rack sets ask about).
    pub(super) fn best(
        &self,
        s: usize,
        index: &mut Index,
        zone: Zone,
        valid_forever: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        loop {
            let set = match zone {
                Zone::Rack(r) => &mut index.rack[r],
                Zone::Dc(d) => &mut index.dc[d],
                Zone::All => &mut index.all,
            };
            let &key = set.first()?;
            let m = self.member_at(key.2);
            if self.free(s, m) && valid_forever(m) {
                return Some(m);
            }
            set.remove(&key);
        }
    }

    pub(super) fn member_at(&self, position: usize) -> usize {
        self.at[position]
    }

    /// Pass 1 for stripe `s`: datacenter entries, rack entries, home hosts and the
    /// leaves of racks that hold a home host, with only the origin and home hosts
    /// as parents.
    pub(super) fn backbone(&mut self, s: usize) {
        let mut index = Index::new(
            self.rack_members.len(),
            self.dc_members.len(),
            self.pos.len(),
        );
        // Slots each node gave to other racks, within the cross-rack fan-out.
        let mut outside = vec![0usize; self.pos.len()];
        let entry_of_dc = self.dc_entries(s, &mut index, &mut outside);
        let entered = self.rack_entries(s, &entry_of_dc, &mut index, &mut outside);
        self.within_entered_racks(s, &entered, &mut index);
    }

    /// Each datacenter's entry in stripe `s` (NONE for one not entered), in roster
    /// order, chained from the origin.
    fn dc_entries(&mut self, s: usize, index: &mut Index, outside: &mut [usize]) -> Vec<usize> {
        let fanout = cross_rack_fanout(self.k);
        let mut first_dc = true;
        let mut entry_of_dc = vec![NONE; self.dc_members.len()];
        for d in 0..self.dc_members.len() {
            let Some(entry) = self.dc_entry(s, d) else {
                continue;
            };
            // Datacenters are chained (origin, first, second, ..): each entry feeds
            // the next one's. A fan-out here instead made a datacenter of one host
            // feed every other datacenter's entry, twice its budget; a few
            // datacenters cost a few hops, not a factor.
            let previous = entry_of_dc[..d].iter().rev().find(|&&e| e != NONE).copied();
            let parent = if first_dc && self.free(s, self.root) {
                Some(self.root)
            } else if let Some(e) = previous.filter(|&e| self.free(s, e)) {
                Some(e)
            } else {
                self.best(s, index, Zone::All, |p| outside[p] < fanout)
            };
            first_dc = false;
            let Some(p) = parent else { continue };
            self.attach(s, entry, p);
            outside[p] += 1;
            entry_of_dc[d] = entry;
            index.insert(self, entry, (0, self.depth[s][entry], self.pos[entry]));
        }
        entry_of_dc
    }

    /// The host that enters datacenter `d` in stripe `s`: its first home host of the
    /// stripe, else the one with the most free slots; `None` for a datacenter of
    /// only the origin.
    fn dc_entry(&self, s: usize, d: usize) -> Option<usize> {
        let hosts: Vec<usize> = self.dc_members[d]
            .iter()
            .copied()
            .filter(|&m| m != self.root)
            .collect();
        if hosts.is_empty() {
            return None;
        }
        let entry = hosts
            .iter()
            .copied()
            .find(|&m| self.home[m] == s)
            .unwrap_or_else(|| {
                // No home host here: the one with the most free slots.
                *hosts
                    .iter()
                    .min_by_key(|&&m| (self.used[m], self.pos[m]))
                    .unwrap_or(&hosts[0])
            });
        Some(entry)
    }

    /// Rack entries: the first home host of each rack not yet entered, under the
    /// shallowest interior node of its datacenter. Returns which racks are entered
    /// (by a datacenter entry or a rack entry).
    // Racks are walked by index: the loop body also reads `rack_members[r]` and
    // attaches through `self`, which an iterator over `entered` would borrow.
    #[allow(clippy::needless_range_loop)]
    fn rack_entries(
        &mut self,
        s: usize,
        entry_of_dc: &[usize],
        index: &mut Index,
        outside: &mut [usize],
    ) -> Vec<bool> {
        let fanout = cross_rack_fanout(self.k);
        let racks = self.rack_members.len();
        let mut entered = vec![false; racks];
        for &e in entry_of_dc {
            if e != NONE {
                entered[self.rack[e]] = true;
            }
        }
        for r in 0..racks {
            if entered[r] {
                continue;
            }
            let Some(e) = self.rack_members[r]
                .iter()
                .copied()
                .find(|&m| m != self.root && self.home[m] == s)
            else {
                continue;
            };
            let d = self.dc[e];
            let Some(p) = self.best(s, index, Zone::Dc(d), |p| outside[p] < fanout) else {
                continue;
            };
            self.attach(s, e, p);
            outside[p] += 1;
            entered[r] = true;
            index.insert(self, e, (0, self.depth[s][e], self.pos[e]));
        }
        entered
    }

    /// Within each entered rack: the other home hosts, then the leaves, each under
    /// the rack's shallowest interior node with a free slot.
    fn within_entered_racks(&mut self, s: usize, entered: &[bool], index: &mut Index) {
        for (r, _) in entered.iter().enumerate().filter(|&(_, &e)| e) {
            let members = self.rack_members[r].clone();
            let (homes, leaves): (Vec<usize>, Vec<usize>) = members
                .into_iter()
                .filter(|&m| m != self.root && self.parent[s][m] == NONE)
                .partition(|&m| self.home[m] == s);
            for m in homes {
                if let Some(p) = self.best(s, index, Zone::Rack(r), |_| true) {
                    self.attach(s, m, p);
                    index.insert(self, m, (0, self.depth[s][m], self.pos[m]));
                }
            }
            for m in leaves {
                if let Some(p) = self.best(s, index, Zone::Rack(r), |_| true) {
                    self.attach(s, m, p);
                }
            }
        }
    }

    /// Pass 2 for stripe `s`: every host still without a parent, by locality.
    pub(super) fn fill(&mut self, s: usize, order: &[usize]) {
        let n = self.pos.len();
        let mut index = Index::new(self.rack_members.len(), self.dc_members.len(), n);
        let mut forwards = vec![false; n];
        for m in 0..n {
            let p = self.parent[s][m];
            if p != NONE {
                forwards[p] = true;
            }
        }
        let attached = |t: &Trees, m: usize| m == t.root || t.parent[s][m] != NONE;
        for &m in order {
            if attached(self, m) {
                let class = self.class(s, m, forwards[m]);
                index.insert(self, m, (class, self.depth[s][m], self.pos[m]));
            }
        }
        for r in 0..self.rack_members.len() {
            let mut waiting: Vec<usize> = self.rack_members[r]
                .iter()
                .copied()
                .filter(|&m| !attached(self, m))
                .collect();
            // The host with the most room enters the rack and passes the stripe on.
            waiting.sort_by_key(|&m| (self.used[m], self.pos[m]));
            for m in waiting {
                let (rk, d) = (self.rack[m], self.dc[m]);
                let p = self
                    .best(s, &mut index, Zone::Rack(rk), |_| true)
                    .or_else(|| self.best(s, &mut index, Zone::Dc(d), |_| true))
                    .or_else(|| self.best(s, &mut index, Zone::All, |_| true));
                let p = match p {
                    Some(p) => p,
                    None => match self.fill_trade(s, m, &forwards) {
                        // Every node with the stripe is full but `m` has room: it
                        // takes the place of leaf `c` under `p` and feeds `c`.
                        Some((p, c)) => {
                            self.used[p] -= 1;
                            if p == self.root {
                                self.root_kids[s] -= 1;
                            }
                            self.attach(s, m, p);
                            self.attach(s, c, m);
                            forwards[m] = true;
                            index.insert(self, m, (0, self.depth[s][m], self.pos[m]));
                            let class = self.class(s, c, false);
                            index.insert(self, c, (class, self.depth[s][c], self.pos[c]));
                            continue;
                        }
                        None => match self.spare_parent(s, m) {
                            // Building within one copy per host: the nearest node
                            // with spare (up to 1.2 copies) takes the few that fit
                            // nowhere else.
                            Some(p) => p,
                            None => {
                                self.overdraft += 1;
                                self.nearest_ignoring_budget(s, m)
                            }
                        },
                    },
                };
                self.attach(s, m, p);
                if !forwards[p] {
                    forwards[p] = true;
                    if index.key[p].is_some() {
                        index.insert(self, p, (0, self.depth[s][p], self.pos[p]));
                    }
                }
                let class = self.class(s, m, false);
                index.insert(self, m, (class, self.depth[s][m], self.pos[m]));
            }
        }
    }

    /// For the fill pass when no attached node has room: the nearest attached node
    /// `p` with a leaf child `c` that unattached `m` (which has room) can feed.
    pub(super) fn fill_trade(
        &self,
        s: usize,
        m: usize,
        forwards: &[bool],
    ) -> Option<(usize, usize)> {
        if !self.free(s, m) {
            return None;
        }
        (0..self.pos.len())
            .filter(|&c| c != self.root && !self.dead[c] && !forwards[c])
            .filter_map(|c| {
                let p = self.parent[s][c];
                (p != NONE).then_some((p, c))
            })
            .min_by_key(|&(p, c)| {
                (
                    self.locality(m, p),
                    self.depth[s][p],
                    self.pos[p],
                    self.pos[c],
                )
            })
    }

    /// 0 for a node that forwards this stripe anyway (the origin, its home hosts,
    /// anyone with a child in it), 1 for a leaf that would become interior.
    pub(super) fn class(&self, s: usize, m: usize, forwards: bool) -> u8 {
        if m == self.root || self.home[m] == s || forwards {
            0
        } else {
            1
        }
    }

    /// The last resort when every node with the stripe is full: the nearest attached
    /// live node, shallowest, over budget.
    pub(super) fn nearest_ignoring_budget(&self, s: usize, m: usize) -> usize {
        (0..self.pos.len())
            .filter(|&p| p != m && !self.dead[p] && (p == self.root || self.parent[s][p] != NONE))
            .min_by_key(|&p| (self.locality(m, p), self.depth[s][p], self.pos[p]))
            .unwrap_or(self.root)
    }

    /// 0: same rack, 1: same datacenter, 2: elsewhere.
    pub(super) fn locality(&self, a: usize, b: usize) -> u8 {
        if self.rack[a] == self.rack[b] {
            0
        } else if self.dc[a] == self.dc[b] {
            1
        } else {
            2
        }
    }
}

/// Dense zone ids in roster order (the origin's datacenter first): each member's
/// datacenter and rack, and how many datacenters and racks there are.
fn zone_ids(roster: &Roster) -> (Vec<usize>, Vec<usize>, usize, usize) {
    let members = roster.members();
    let n = members.len();
    let mut dc = vec![0; n];
    let mut rack = vec![0; n];
    let mut dc_names: Vec<&str> = Vec::new();
    let mut rack_names: Vec<(&str, &str)> = Vec::new();
    for &m in roster.order() {
        let mm = &members[m];
        dc[m] = match dc_names.iter().position(|d| *d == mm.dc) {
            Some(i) => i,
            None => {
                dc_names.push(&mm.dc);
                dc_names.len() - 1
            }
        };
        let key = (mm.dc.as_str(), mm.rack.as_str());
        // Racks of a datacenter are contiguous in roster order, so the last one
        // seen is the only one to compare with.
        rack[m] = match rack_names.last() {
            Some(last) if *last == key => rack_names.len() - 1,
            _ => match rack_names.iter().rposition(|r| *r == key) {
                Some(i) => i,
                None => {
                    rack_names.push(key);
                    rack_names.len() - 1
                }
            },
        };
    }
    (dc, rack, dc_names.len(), rack_names.len())
}
