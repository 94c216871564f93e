//! After failures: orphaned subtrees re-hung under the nearest live node that has
//! the stripe and a free slot, and members found alive again taken back.

use super::*;

impl Trees {
    /// Removes `failed` hosts and hangs each orphaned subtree under the nearest live
    /// node with a free slot that has the stripe (same rack, then datacenter, then
    /// anywhere; forwarding nodes, then shallow). Already-dead members are ignored.
    /// Returns the new edges.
    pub fn relink(&mut self, failed: &[usize]) -> Result<Vec<Relinked>, StripeError> {
        let newly = self.newly_failed(failed)?;
        if newly.is_empty() {
            return Ok(Vec::new());
        }
        for &f in &newly {
            self.dead[f] = true;
        }
        for &f in &newly {
            self.used[f] = 0;
        }
        let mut out = Vec::new();
        for s in 0..self.k {
            self.relink_stripe(s, &newly, &mut out);
        }
        Ok(out)
    }

    /// The members of `failed` not dead yet, sorted and once each; an error for a
    /// member not in the roster, or the origin.
    fn newly_failed(&self, failed: &[usize]) -> Result<Vec<usize>, StripeError> {
        let n = self.pos.len();
        for &f in failed {
            if f >= n {
                return Err(StripeError::UnknownMember(f));
            }
            if f == self.root {
                return Err(StripeError::OriginFailed);
            }
        }
        let mut newly: Vec<usize> = failed.iter().copied().filter(|&f| !self.dead[f]).collect();
        newly.sort_unstable();
        newly.dedup();
        Ok(newly)
    }

    /// Stripe `s` after the `newly` failed: their slots freed, their orphans hung
    /// back one by one (the new edges pushed on `out`).
    fn relink_stripe(&mut self, s: usize, newly: &[usize], out: &mut Vec<Relinked>) {
        let n = self.pos.len();
        self.free_parent_slots(s, newly);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        for m in 0..n {
            let p = self.parent[s][m];
            if p != NONE {
                children[p].push(m);
            }
        }
        let mut queue = self.orphans(s, newly, &children);
        for &f in newly {
            children[f].clear();
        }
        // Attached: reachable from the root through live members.
        let mut attached = vec![false; n];
        self.mark(s, self.root, &children, &mut attached);
        // Orphans put back because no attached node had room and their own
        // subtree had none to trade (see below): another orphan's may.
        let mut stalled = 0;
        while let Some((o, from)) = queue.pop_front() {
            if attached[o] {
                continue;
            }
            self.parent[s][o] = NONE;
            let to = match self.orphan_parent(s, o, &mut attached, &mut children, out) {
                Some(to) => to,
                None if stalled < queue.len() => {
                    stalled += 1;
                    queue.push_back((o, from));
                    continue;
                }
                None => {
                    self.overdraft += 1;
                    self.nearest_attached(s, o, &attached)
                }
            };
            stalled = 0;
            self.attach(s, o, to);
            children[to].push(o);
            self.mark(s, o, &children, &mut attached);
            out.push(Relinked {
                stripe: s,
                member: o,
                from,
                to,
            });
        }
    }

    /// A failed host frees its slot at its parent, for this stripe's orphans
    /// first: freed all at once, the origin's slot freed in one stripe went to
    /// the first stripe re-linked, and the stripe it came from had nowhere to go.
    fn free_parent_slots(&mut self, s: usize, newly: &[usize]) {
        for &f in newly {
            let p = self.parent[s][f];
            if p != NONE {
                // A parent that failed too has no slots left to free.
                if !self.dead[p] {
                    self.used[p] -= 1;
                }
                if p == self.root {
                    self.root_kids[s] -= 1;
                }
                self.parent[s][f] = NONE;
            }
        }
    }

    /// Orphans of stripe `s`: live members whose parent just died, each with that
    /// parent, in the order they are hung back. The largest subtrees go first: once
    /// hung back, their hosts' spare slots are places for the others, close to them
    /// (when a datacenter's entry dies, the first orphan re-enters the datacenter
    /// and the rest stay inside it).
    fn orphans(
        &self,
        s: usize,
        newly: &[usize],
        children: &[Vec<usize>],
    ) -> std::collections::VecDeque<(usize, usize)> {
        let mut orphans: Vec<(usize, usize, usize)> = Vec::new();
        for &f in newly {
            for &c in &children[f] {
                if !self.dead[c] {
                    orphans.push((c, f, self.subtree(c, children).len()));
                }
            }
        }
        orphans
            .sort_by_key(|&(c, _, size)| (std::cmp::Reverse(size), self.depth[s][c], self.pos[c]));
        orphans.into_iter().map(|(c, f, _)| (c, f)).collect()
    }

    /// The parent for orphan `o` in stripe `s`: within the datacenter (a free slot,
    /// else a trade), then anywhere the same way: a crossing only when the
    /// datacenter has no room at all. `None` when there is none yet.
    fn orphan_parent(
        &mut self,
        s: usize,
        o: usize,
        attached: &mut [bool],
        children: &mut [Vec<usize>],
        out: &mut Vec<Relinked>,
    ) -> Option<usize> {
        if let Some(to) = self.relink_parent(s, o, attached, children, true) {
            return Some(to);
        }
        if let Some(trade) = self.trade(s, o, attached, children, true) {
            return Some(traded(s, trade, attached, out));
        }
        if let Some(to) = self.relink_parent(s, o, attached, children, false) {
            return Some(to);
        }
        let trade = self.trade(s, o, attached, children, false)?;
        Some(traded(s, trade, attached, out))
    }

    /// Takes back a member given up as gone whose agent turned out alive (a poll that
    /// came late) or came back: a leaf in every stripe, under the node a re-link
    /// would pick (its datacenter first). Its former children stay where they were
    /// re-linked. Returns whether it was dead.
    pub fn revive(&mut self, member: usize) -> Result<bool, StripeError> {
        let n = self.pos.len();
        if member >= n {
            return Err(StripeError::UnknownMember(member));
        }
        if !self.dead[member] {
            return Ok(false);
        }
        self.dead[member] = false;
        self.used[member] = 0;
        for s in 0..self.k {
            let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
            for m in 0..n {
                let p = self.parent[s][m];
                if p != NONE && m != member {
                    children[p].push(m);
                }
            }
            let mut attached = vec![false; n];
            self.mark(s, self.root, &children, &mut attached);
            attached[member] = false;
            let to = self
                .relink_parent(s, member, &attached, &children, true)
                .or_else(|| self.relink_parent(s, member, &attached, &children, false))
                .unwrap_or_else(|| {
                    self.overdraft += 1;
                    self.nearest_attached(s, member, &attached)
                });
            self.attach(s, member, to);
        }
        Ok(true)
    }

    /// Live members of `from`'s subtree, `from` first.
    pub(super) fn subtree(&self, from: usize, children: &[Vec<usize>]) -> Vec<usize> {
        let mut out = vec![from];
        let mut i = 0;
        while i < out.len() {
            let m = out[i];
            out.extend(children[m].iter().copied().filter(|&c| !self.dead[c]));
            i += 1;
        }
        out
    }

    /// When no attached node has a free slot but orphan `o`'s own subtree does (a
    /// tree whose every other node is full, as after a small rack loses its
    /// forwarder): `o` takes the place of a leaf child `c` of the nearest attached
    /// node `p`, and `c` goes under the free node `q` of `o`'s subtree. `p` keeps
    /// its count, `q` uses its spare. Returns `(p, c, q)`, with `p` still to be
    /// given `o` by the caller (which counts that slot: `p`'s loss of `c` is
    /// counted here).
    pub(super) fn trade(
        &mut self,
        s: usize,
        o: usize,
        attached: &[bool],
        children: &mut [Vec<usize>],
        same_dc: bool,
    ) -> Option<(usize, usize, usize)> {
        let q = self
            .subtree(o, children)
            .into_iter()
            .filter(|&m| self.free(s, m))
            .min_by_key(|&m| (self.depth[s][m], self.pos[m]))?;
        let leaf_child = |p: usize| {
            children[p]
                .iter()
                .copied()
                .filter(|&c| !self.dead[c] && children[c].iter().all(|&g| self.dead[g]))
                .min_by_key(|&c| self.pos[c])
        };
        let (p, c) = (0..self.pos.len())
            .filter(|&p| attached[p] && !self.dead[p])
            .filter(|&p| !same_dc || self.dc[p] == self.dc[o])
            .filter_map(|p| leaf_child(p).map(|c| (p, c)))
            .min_by_key(|&(p, _)| (self.locality(o, p), self.depth[s][p], self.pos[p]))?;
        children[p].retain(|&x| x != c);
        self.used[p] -= 1;
        if p == self.root {
            self.root_kids[s] -= 1;
        }
        self.parent[s][c] = q;
        self.used[q] += 1;
        children[q].push(c);
        Some((p, c, q))
    }

    /// Marks `from`'s subtree attached and sets its depths.
    pub(super) fn mark(
        &mut self,
        s: usize,
        from: usize,
        children: &[Vec<usize>],
        attached: &mut [bool],
    ) {
        let mut stack = vec![from];
        attached[from] = true;
        while let Some(m) = stack.pop() {
            for &c in &children[m] {
                if !self.dead[c] && !attached[c] {
                    attached[c] = true;
                    self.depth[s][c] = self.depth[s][m] + 1;
                    stack.push(c);
                }
            }
        }
    }

    /// The parent for orphan `o`: within its datacenter when any attached node
    /// there has room (shallow first, a node of its own rack counting one level
    /// shallower, then forwarding nodes), else anywhere. Rack locality is a weight,
    /// not a rule: as a rule, orphans of a rack whose forwarder died took the single
    /// spare slots of each other's leaves and formed a chain.
    pub(super) fn relink_parent(
        &self,
        s: usize,
        o: usize,
        attached: &[bool],
        children: &[Vec<usize>],
        same_dc: bool,
    ) -> Option<usize> {
        let ok = |p: usize| p != o && attached[p] && self.free(s, p);
        let key = |p: usize| {
            let forwards = !children[p].is_empty();
            let depth = self.depth[s][p] + u32::from(self.rack[p] != self.rack[o]);
            (depth, self.class(s, p, forwards), self.pos[p])
        };
        let pick =
            |list: &mut dyn Iterator<Item = usize>| list.filter(|&p| ok(p)).min_by_key(|&p| key(p));
        if same_dc {
            pick(&mut self.dc_members[self.dc[o]].iter().copied())
        } else {
            pick(&mut (0..self.pos.len()))
        }
    }

    /// Whether some datacenter other than the origin's is entered more than once in
    /// a stripe (more than one copy over its interconnect).
    pub(super) fn crossings_over_one_copy(&self) -> bool {
        let mut into = vec![0usize; self.dc_members.len()];
        for s in 0..self.k {
            for m in 0..self.pos.len() {
                let p = self.parent[s][m];
                if p != NONE && self.dc[p] != self.dc[m] {
                    into[self.dc[m]] += 1;
                }
            }
        }
        into.iter()
            .enumerate()
            .any(|(d, &edges)| d != self.dc[self.root] && edges > self.k)
    }

    /// While building within one copy per host: the nearest attached node of stripe
    /// `s` that still has room within the spare budget (1.2 copies, the origin 1.1).
    pub(super) fn spare_parent(&self, s: usize, m: usize) -> Option<usize> {
        if !self.tight {
            return None;
        }
        let loose = |p: usize| {
            if p == self.root {
                origin_slots(self.k)
            } else {
                host_slots(self.k)
            }
        };
        (0..self.pos.len())
            .filter(|&p| {
                p != m
                    && !self.dead[p]
                    && (p == self.root || self.parent[s][p] != NONE)
                    && self.used[p] < loose(p)
            })
            .min_by_key(|&p| (self.locality(m, p), self.depth[s][p], self.pos[p]))
    }

    pub(super) fn nearest_attached(&self, s: usize, o: usize, attached: &[bool]) -> usize {
        (0..self.pos.len())
            .filter(|&p| p != o && attached[p])
            .min_by_key(|&p| (self.locality(o, p), self.depth[s][p], self.pos[p]))
            .unwrap_or(self.root)
    }
}

/// A trade `(p, moved, under)` made for an orphan of stripe `s`: the moved leaf is
/// recorded as re-linked and left to be re-marked (with its new depth) under the
/// orphan; returns `p`, the orphan's parent.
fn traded(
    s: usize,
    (to, moved, under): (usize, usize, usize),
    attached: &mut [bool],
    out: &mut Vec<Relinked>,
) -> usize {
    attached[moved] = false;
    out.push(Relinked {
        stripe: s,
        member: moved,
        from: to,
        to: under,
    });
    to
}
