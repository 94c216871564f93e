//! Striped distribution trees (SplitStream style) with rack and datacenter locality:
//! the topology meant to replace the single chain of [`crate::tracker::swarm`] at fleet scale.
//!
//! A chain gives every host one copy up and one copy down, but the last host is N hops
//! behind the origin. Here the content is cut into `k` **stripes** (piece *i* belongs
//! to stripe *i mod k*) and every stripe has its own tree rooted at the origin. Each
//! host has a **home stripe**, in which it is interior (forwards to up to about `k`
//! children), and is a leaf in the other `k - 1`. A host downloads `k` stripes of
//! 1/k copy each and uploads about `k` slots of 1/k copy: one copy, as in the chain,
//! but each stripe's tree fans out `k` ways, so the depth grows with log_k N.
//!
//! **Budgets.** One slot is one child in one stripe, 1/k copy. A host has
//! [`host_slots`] = floor(1.2 k) slots (at most 1.2 copies up), the origin
//! [`origin_slots`] = floor(1.1 k). The spare above `k` is what absorbs uneven
//! zones and re-links after failures.
//!
//! **Homes.** Hosts in roster order (datacenter, rack, name) take home stripes 0, 1,
//! .., k-1, 0, ..: a rack or datacenter of at least `k` hosts holds every stripe's
//! interior nodes, a smaller one a run of consecutive stripes (one counter over the
//! whole roster, so that datacenters of one host do not all forward stripe 0).
//!
//! **Construction**, deterministic, in two passes over the stripes:
//!
//! 1. *Interior-disjoint backbone* (parents are only the origin and home hosts of
//!    the stripe). Per stripe: the origin feeds the first datacenter entry (the
//!    origin's datacenter first); every other datacenter's entry (a home host of the
//!    stripe, else the least-burdened host there) hangs off the previous
//!    datacenter's entry (else the shallowest interior node with room), so each
//!    remote datacenter is entered once per stripe, one copy in all. Then one entry per rack that has a home host, under the shallowest
//!    interior node of its own datacenter; then the rack's other home hosts under the
//!    rack's shallowest interior node; then the rack's other hosts (leaves) the same
//!    way. Interior nodes give at most [`cross_rack_fanout`] of their slots to other
//!    racks, so racks keep room for their own hosts while the racks of a datacenter
//!    still form a tree of logarithmic depth.
//! 2. *Fill* (everything pass 1 left: racks smaller than `k` that hold no home host
//!    of a stripe, overflow of full racks, datacenters with no home host). For each
//!    unattached host and stripe, breadth first: the nearest parent with a free
//!    slot, by locality (same rack, same datacenter, anywhere), then nodes already
//!    forwarding this stripe before leaves (keeps hosts interior mainly in one stripe),
//!    then depth. Within a rack, hosts with the most free slots go first, so the one
//!    that enters the rack is the one with room to pass the stripe on.
//!
//! **Re-link** ([`Trees::relink`]): failed hosts free the slots they used at their
//! parents; each orphaned subtree (shallowest first) is hung under the nearest live,
//! attached node with a free slot, by the same order (same rack, same datacenter,
//! forwarding nodes, depth). Locality comes first, so a datacenter crossing is added
//! only when no node of the orphan's datacenter that already has the stripe has room.
//!
//! Known gaps, found by the property test:
//! - a remote datacenter of fewer than 4k hosts (many small racks) can receive more
//!   than 1.1 copies: entered twice in a stripe as built (`[[1, 3, 1, 1], [1]]` at
//!   k = 7 gave 1.14; a 16-host datacenter of six racks at k = 8, 1.125). The
//!   property test allows such datacenters two stripes entered twice, checks 1.1
//!   copies from 4k hosts up, and after failures allows one more crossing per entry
//!   that died (an orphaned datacenter must be entered again). After a second round
//!   of failures a small datacenter can exceed that: its survivors run out of spare
//!   slots and an orphan is fed across the interconnect rather than starved;
//! - in a fleet of fewer than 4k hosts the origin can take one child over its
//!   budget (`[[4, 4, 1, 1, 1, 1]]` at k = 7: 1.14 copies);
//! - with k near N / 3 over many one-host racks (k = 16 and 23), the depth exceeded
//!   2 log_k N + D + 4 by one level. The default (8) and the property test's range
//!   (5 to 10) are clear of it.
//!
//! This is pure policy (no clock, no sockets), used by the tracker
//! ([`crate::tracker::swarm`], `sharing: stripes`) and meant for the simulator. Both passes keep candidate parents in ordered sets per rack,
//! datacenter and stripe, so building trees for 10,000 hosts takes milliseconds.

mod build;
mod relink;

use std::collections::BTreeSet;

use crate::config::playbook::{MAX_STRIPES, MIN_STRIPES};
use crate::tracker::roster::Roster;

/// No parent (the origin, a failed host, or not attached yet).
const NONE: usize = usize::MAX;

/// Upload slots of a host: 1.2 copies at most.
pub fn host_slots(k: usize) -> usize {
    (k * 6 / 5).max(k)
}

/// Upload slots of the origin: 1.1 copies at most.
pub fn origin_slots(k: usize) -> usize {
    (k * 11 / 10).max(k)
}

/// How many of an interior node's slots may go to other racks during the backbone
/// pass: half, so that racks of a datacenter form a tree with fan-out k/2 while each
/// rack's entry keeps the other half for its own hosts.
pub fn cross_rack_fanout(k: usize) -> usize {
    (k / 2).max(2)
}

/// Which of a finished host's rack-mates it helps: the one with the most bytes left
/// (the lowest member number among equals), given `(member, left)` of those still
/// fetching that no other host helps yet.
///
/// **Help** is how the trees' tail is cut. A host whose parent in some stripe died,
/// or fell behind its siblings, gets that stripe late, and its subtree with it; the
/// trees alone give it nothing faster than one slot of its new parent. Meanwhile
/// hosts that have the whole copy, and no child in the trees still fetching, upload
/// nothing. The tracker pairs each such host with one rack-mate still fetching (the
/// one furthest behind), which then asks it for any piece of any stripe beside its
/// parents. Rack-mates only: no uplink or interconnect carries a helper's bytes, and
/// a rack is small enough to look at on every poll. A helper helps one host at a
/// time and a host takes one helper; the origin never helps (its upload stays one
/// copy).
pub fn helpee(candidates: impl IntoIterator<Item = (usize, u64)>) -> Option<usize> {
    candidates
        .into_iter()
        .filter(|&(_, left)| left > 0)
        .min_by_key(|&(m, left)| (std::cmp::Reverse(left), m))
        .map(|(m, _)| m)
}

/// The stripe piece `i` belongs to.
pub fn stripe_of_piece(piece: usize, k: usize) -> usize {
    piece % k.max(1)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    #[error("the stripe count must be from {MIN_STRIPES} to {MAX_STRIPES}, found {0}")]
    Count(usize),
    #[error("the roster has no origin to root the trees at")]
    NoOrigin,
    #[error("member {0} is not in the roster")]
    UnknownMember(usize),
    #[error("the origin cannot be re-linked around: it is every tree's root")]
    OriginFailed,
}

/// One re-parented subtree: `member` now gets `stripe` from `to` instead of the
/// failed `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relinked {
    pub stripe: usize,
    pub member: usize,
    pub from: usize,
    pub to: usize,
}

/// The `k` trees over a roster's members (ids as in [`Roster::members`]).
#[derive(Debug, Clone)]
pub struct Trees {
    k: usize,
    /// While building: one copy of upload per host (k slots), not the spare.
    tight: bool,
    root: usize,
    /// `parent[s][m]`: who feeds member `m` stripe `s` (NONE for the root, the dead
    /// and, during construction, the unattached).
    parent: Vec<Vec<usize>>,
    /// `depth[s][m]`: hops from the origin (0 for the origin).
    depth: Vec<Vec<u32>>,
    /// Slots in use: live children over all stripes.
    used: Vec<usize>,
    dead: Vec<bool>,
    /// Children of the origin per stripe: its slots are about one per stripe, so
    /// a stripe may not take a second one while another stripe has none.
    root_kids: Vec<usize>,
    /// Home stripe (NONE for the origin).
    home: Vec<usize>,
    /// Dense zone ids and roster positions, for locality and tie-breaks.
    rack: Vec<usize>,
    dc: Vec<usize>,
    pos: Vec<usize>,
    /// The member at each roster position (the inverse of `pos`).
    at: Vec<usize>,
    /// Members of each rack and datacenter, in roster order.
    rack_members: Vec<Vec<usize>>,
    dc_members: Vec<Vec<usize>>,
    /// Attachments that found no parent with a free slot anywhere and took one over
    /// budget (never seen in the property tests; kept visible rather than starve).
    overdraft: usize,
}

/// A candidate parent's order within one zone: forwarding nodes first (class 0),
/// then shallow, then roster position.
type Key = (u8, u32, usize);

/// Candidate parents of one stripe, by zone.
struct Index {
    rack: Vec<BTreeSet<Key>>,
    dc: Vec<BTreeSet<Key>>,
    all: BTreeSet<Key>,
    key: Vec<Option<Key>>,
}

impl Index {
    fn new(racks: usize, dcs: usize, members: usize) -> Index {
        Index {
            rack: vec![BTreeSet::new(); racks],
            dc: vec![BTreeSet::new(); dcs],
            all: BTreeSet::new(),
            key: vec![None; members],
        }
    }

    fn insert(&mut self, t: &Trees, m: usize, key: Key) {
        self.remove(t, m);
        self.rack[t.rack[m]].insert(key);
        self.dc[t.dc[m]].insert(key);
        self.all.insert(key);
        self.key[m] = Some(key);
    }

    fn remove(&mut self, t: &Trees, m: usize) {
        if let Some(k) = self.key[m].take() {
            self.rack[t.rack[m]].remove(&k);
            self.dc[t.dc[m]].remove(&k);
            self.all.remove(&k);
        }
    }
}

/// Which zone set a query looks in.
#[derive(Clone, Copy)]
enum Zone {
    Rack(usize),
    Dc(usize),
    All,
}

impl Trees {
    pub fn stripes(&self) -> usize {
        self.k
    }

    pub fn root(&self) -> usize {
        self.root
    }

    /// Who feeds `member` stripe `stripe` (`None` for the origin and failed hosts).
    pub fn parent(&self, stripe: usize, member: usize) -> Option<usize> {
        self.parent
            .get(stripe)
            .and_then(|p| p.get(member))
            .copied()
            .filter(|&p| p != NONE)
    }

    /// The feeder of each stripe for `member`, indexed by stripe: what the tracker
    /// tells an agent.
    pub fn feeders(&self, member: usize) -> Vec<Option<usize>> {
        (0..self.k).map(|s| self.parent(s, member)).collect()
    }

    /// Hops from the origin to `member` in `stripe`.
    pub fn depth(&self, stripe: usize, member: usize) -> u32 {
        self.depth[stripe][member]
    }

    /// The deepest live member over all stripes.
    pub fn max_depth(&self) -> u32 {
        (0..self.k)
            .flat_map(|s| {
                self.depth[s]
                    .iter()
                    .enumerate()
                    .filter(|&(m, _)| !self.dead[m])
                    .map(|(_, &d)| d)
            })
            .max()
            .unwrap_or(0)
    }

    /// Children `member` feeds, over all stripes (each 1/k copy).
    pub fn slots_used(&self, member: usize) -> usize {
        self.used[member]
    }

    /// The slots `member` may use.
    pub fn slots(&self, member: usize) -> usize {
        if self.tight {
            return self.k;
        }
        if member == self.root {
            origin_slots(self.k)
        } else {
            host_slots(self.k)
        }
    }

    /// The stripe `member` forwards mainly (`None` for the origin).
    pub fn home(&self, member: usize) -> Option<usize> {
        Some(self.home[member]).filter(|&h| h != NONE)
    }

    pub fn is_dead(&self, member: usize) -> bool {
        self.dead[member]
    }

    /// Attachments made over budget because no node with a free slot had the stripe.
    pub fn overdraft(&self) -> usize {
        self.overdraft
    }
}

#[cfg(test)]
mod tests;
