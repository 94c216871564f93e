//! The mesh policy, for clients other than rookery's agents: same-rack peers first,
//! then same-datacenter, then a bounded number of remote ones.

use super::*;

impl Swarm {
    /// Up to `numwant` peers for `me`: its rack first, then its datacenter, then a
    /// few remote ones, and a complete peer for a zone that has none.
    pub(super) fn mesh(
        &self,
        roster: &Roster,
        me: usize,
        numwant: usize,
        now: Instant,
    ) -> Vec<usize> {
        let n = self.peers.len().max(1);
        let mut others: Vec<usize> = (0..self.peers.len())
            .filter(|&i| i != me && self.alive(i, now).is_some())
            .collect();
        // Nearest first; within a class, start at an offset that depends on the
        // requester so that not everyone in a rack is told the same first peers.
        others.sort_by_key(|&i| (locality(roster, me, i), (i + n - me % n) % n));
        let mut out = Vec::new();
        let mut remote = 0;
        for &i in &others {
            if out.len() >= numwant {
                break;
            }
            if locality(roster, me, i) == 2 {
                if remote >= MESH_REMOTE_MAX {
                    continue;
                }
                remote += 1;
            }
            out.push(i);
        }
        let complete = |i: &usize| self.alive(*i, now).is_some_and(|p| p.left == 0);
        let local_seed = others
            .iter()
            .any(|i| locality(roster, me, *i) < 2 && complete(i));
        if !local_seed
            && !out.iter().any(complete)
            && let Some(seed) = others.iter().copied().find(complete)
        {
            if out.len() >= numwant.max(1) {
                out.pop();
            }
            out.insert(0, seed);
        }
        out
    }
}
