//! Who may join a deploy's swarm, and which peers each member is told about.
//!
//! This is the tracker's policy, kept pure (no sockets, no clock of its own) so it can
//! be tested exhaustively and reused by the simulator. Two policies:
//!
//! - **pipeline** (rookery agents, the default): librqbit fetches pieces strictly in
//!   order, so peers that start together all want the same piece and only the origin
//!   has it. Instead the tracker arranges members in a chain (origin, then hosts by
//!   datacenter, rack and name) and tells each host about its nearest live
//!   predecessor that is not behind it. In-order fetching suits a chain: each host
//!   forwards piece *i* as soon as it has verified it, every host uploads about one
//!   copy, and the chain crosses each datacenter boundary once. A dead feeder stops
//!   announcing and is skipped at the next announce; a slow feeder (under half its
//!   upstream's rate while its successor has caught up with it) gets a bypass. The
//!   agent keeps connections to exactly the feeders named (see `fetch.rs`).
//! - **mesh** (any other client, e.g. aria2c with rarest-first): same-rack peers
//!   first, then same-datacenter, then a bounded number of remote ones; a rack or
//!   datacenter with no complete peer always gets one, so late zones never starve.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::playbook::Sharing;
use crate::tracker::roster::{Roster, locality};
use crate::tracker::stripes::{StripeError, Trees};

/// Remote (other datacenter) peers in a mesh answer, unless needed against starvation.
const MESH_REMOTE_MAX: usize = 4;
/// Striped sharing: a parent not heard from for this long is gone. Agents poll the
/// tracker every second while they fetch and announce every interval after, so two
/// seconds is two missed polls.
pub const STRIPE_SILENT_AFTER: Duration = Duration::from_secs(2);
/// A successor within this many bytes of its feeder has caught up with it.
const CAUGHT_UP_SLACK: u64 = 8 << 20;

/// What the tracker knows of one member of one swarm.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    left: u64,
    last_seen: Instant,
    /// Bytes per second, smoothed over announces.
    rate: f64,
    stopped: bool,
    /// Members this one was last told about.
    feeders: Vec<usize>,
    /// The predecessor whose first announce this one was last told to wait for.
    awaiting: Option<usize>,
    /// Last heard from (an announce or a status poll): liveness for striped trees,
    /// kept apart from `last_seen`, which the rate is computed over.
    heard: Instant,
}

/// Everyone's latest announce for one info hash.
#[derive(Debug, Clone)]
pub struct Swarm {
    peers: Vec<Option<Peer>>,
    /// First announce of anyone: members not seen within `expiry` of it are skipped.
    started: Option<Instant>,
    /// A member that has not announced for this long is considered gone.
    expiry: Duration,
    /// A feeder that has not announced for this long (one missed announce) may be
    /// gone: its successor is also given the next predecessor.
    overdue: Duration,
    /// Striped sharing: the trees, re-linked around members found gone.
    trees: Option<Trees>,
    /// Striped sharing: a parent not heard from (announce or status poll, which
    /// agents send every second) for this long is gone, and its children re-linked.
    silent_after: Duration,
    /// Members not stopped, by `(last_seen, id)`, complete and not: the live counts
    /// of every answer without a walk over all members (at 5,000 hosts that walk,
    /// on every status poll and announce under the tracker's one lock, was most of
    /// its time). Kept by [`Swarm::unindex`] and [`Swarm::index`].
    seen_complete: BTreeSet<(Instant, usize)>,
    seen_incomplete: BTreeSet<(Instant, usize)>,
    /// For each member, the members whose `feeders` name it ([`Swarm::set_feeders`]).
    dependants: Vec<Vec<usize>>,
}

/// A member's announce, as the policy needs it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub addr: SocketAddr,
    pub left: u64,
    pub rookery: bool,
    pub stopped: bool,
}

/// Per-swarm figures for an agent deciding whether to keep seeding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Every host of the member's rack has the copy.
    pub rack_complete: bool,
    /// Incomplete members currently fed by this one.
    pub waiting_on_me: usize,
    pub complete: usize,
    pub incomplete: usize,
    /// Pipeline sharing: the addresses the member was last told to fetch from. The
    /// agent keeps its outgoing connections to exactly these (librqbit only ever adds
    /// the peers of a tracker answer, so a feeder named once would stay for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feeders: Option<Vec<SocketAddr>>,
    /// Striped sharing: the feeder of each stripe, indexed by stripe (`None` while
    /// that feeder has not announced yet). The agent fetches stripe `s` (pieces `i`
    /// with `i % len == s`) from `stripes[s]` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripes: Option<Vec<Option<SocketAddr>>>,
}

impl Swarm {
    pub fn new(roster: &Roster, expiry: Duration) -> Swarm {
        Swarm {
            peers: vec![None; roster.members.len()],
            started: None,
            expiry,
            overdue: expiry,
            trees: None,
            silent_after: STRIPE_SILENT_AFTER,
            seen_complete: BTreeSet::new(),
            seen_incomplete: BTreeSet::new(),
            dependants: vec![Vec::new(); roster.members.len()],
        }
    }

    /// Takes `me`'s record out of the live-count index, before it changes.
    fn unindex(&mut self, me: usize) {
        self.reindex(me, false);
    }

    /// Puts `me`'s record (back) into the live-count index.
    fn index(&mut self, me: usize) {
        self.reindex(me, true);
    }

    fn reindex(&mut self, me: usize, present: bool) {
        if let Some(p) = &self.peers[me]
            && !p.stopped
        {
            let key = (p.last_seen, me);
            let set = if p.left == 0 {
                &mut self.seen_complete
            } else {
                &mut self.seen_incomplete
            };
            if present {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
    }

    /// Sets `me`'s feeders, keeping `dependants` in step.
    fn set_feeders(&mut self, me: usize, feeders: Vec<usize>) {
        let Some(p) = &mut self.peers[me] else {
            return;
        };
        let old = std::mem::replace(&mut p.feeders, feeders);
        for f in old {
            self.dependants[f].retain(|&d| d != me);
        }
        for &f in &p.feeders {
            if !self.dependants[f].contains(&me) {
                self.dependants[f].push(me);
            }
        }
    }

    /// Members of `set` alive at `now`: all but those last seen over `expiry` ago
    /// (the same test as [`Swarm::alive`]; the stopped are not in the index).
    fn live(&self, set: &BTreeSet<(Instant, usize)>, now: Instant) -> usize {
        let expired = now
            .checked_sub(self.expiry)
            .map_or(0, |cutoff| set.range(..(cutoff, 0)).count());
        set.len() - expired
    }

    /// Striped sharing over `k` stripes: the trees for everyone in `roster`.
    pub fn with_stripes(mut self, roster: &Roster, k: usize) -> Result<Swarm, StripeError> {
        self.trees = Some(Trees::build(roster, k)?);
        Ok(self)
    }

    /// How early member `me` should be started for its feeders to be up before it:
    /// its depth in the shallowest stripe (striped trees), else its chain position.
    pub fn start_rank(&self, roster: &Roster, me: usize) -> usize {
        match &self.trees {
            Some(t) => (0..t.stripes())
                .map(|s| t.depth(s, me) as usize)
                .min()
                .unwrap_or(0),
            None => roster.position[me],
        }
    }

    /// Records that `me` was heard from (a status poll): alive, for striped trees.
    pub fn touch(&mut self, me: usize, now: Instant) {
        if let Some(p) = &mut self.peers[me] {
            p.heard = now;
        }
    }

    /// Treats a feeder silent for longer than `after` as possibly gone (see
    /// [`Swarm::pipeline`]); without this, only `expiry` counts.
    pub fn with_overdue(mut self, after: Duration) -> Swarm {
        self.overdue = after.min(self.expiry);
        self
    }

    /// Records an announce and returns the peers to tell `me` about.
    pub fn announce(
        &mut self,
        roster: &Roster,
        sharing: Sharing,
        me: usize,
        seen: Seen,
        numwant: usize,
        now: Instant,
    ) -> Vec<SocketAddr> {
        self.started.get_or_insert(now);
        let before = self.peers[me].as_ref().map(|p| p.feeders.clone());
        let rate = match &self.peers[me] {
            Some(p) if seen.left <= p.left => {
                let dt = now.duration_since(p.last_seen).as_secs_f64();
                if dt > 0.0 {
                    let inst = (p.left - seen.left) as f64 / dt;
                    if p.rate == 0.0 {
                        inst
                    } else {
                        0.5 * p.rate + 0.5 * inst
                    }
                } else {
                    p.rate
                }
            }
            _ => 0.0,
        };
        self.unindex(me);
        self.set_feeders(me, Vec::new());
        self.peers[me] = Some(Peer {
            addr: seen.addr,
            left: seen.left,
            last_seen: now,
            rate,
            stopped: seen.stopped,
            feeders: Vec::new(),
            awaiting: None,
            heard: now,
        });
        self.index(me);
        if seen.stopped {
            return Vec::new();
        }
        let (feeders, awaiting) = match sharing {
            Sharing::Pipeline if seen.rookery => self.pipeline(roster, me, now),
            Sharing::Stripes if seen.rookery && self.trees.is_some() => {
                let (feeders, _, awaiting) = self.striped(roster, me, now);
                (feeders, awaiting)
            }
            _ => (self.mesh(roster, me, numwant, now), None),
        };
        let addrs = feeders
            .iter()
            .filter_map(|&i| self.peers[i].as_ref().map(|p| p.addr))
            .take(numwant)
            .collect();
        if before.as_ref() != Some(&feeders) {
            let names: Vec<&str> = feeders
                .iter()
                .map(|&i| roster.members[i].name.as_str())
                .collect();
            let t = self
                .started
                .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            tracing::info!(
                target: "rookery::tracker::swarm",
                "{t:.1}s {} (left {} MiB, {:.1} MiB/s) feeders: [{}]",
                roster.members[me].name,
                seen.left >> 20,
                rate / (1 << 20) as f64,
                names.join(", ")
            );
        }
        self.set_feeders(me, feeders);
        if let Some(p) = &mut self.peers[me] {
            p.awaiting = awaiting;
        }
        addrs
    }

    /// Records that member `me` leaves or will never join (its agent failed to
    /// start): its successors stop waiting for it at their next announce instead of
    /// at the end of the start-up grace.
    pub fn withdraw(&mut self, me: usize, now: Instant) {
        self.unindex(me);
        let p = self.peers[me].get_or_insert_with(|| Peer {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            left: u64::MAX,
            last_seen: now,
            rate: 0.0,
            stopped: true,
            feeders: Vec::new(),
            awaiting: None,
            heard: now,
        });
        p.stopped = true;
    }

    /// Whether `me` was last answered with nobody because the start-up rule makes it
    /// wait for predecessor `p` to announce: `(p, end of the start-up grace)`. The
    /// tracker holds such an answer until `p` announces rather than let `me` come back
    /// a whole interval later.
    pub fn waiting_for(&self, me: usize) -> Option<(usize, Instant)> {
        let peer = self.peers[me].as_ref()?;
        let p = peer.awaiting.filter(|_| peer.feeders.is_empty())?;
        Some((p, self.started? + self.expiry))
    }

    /// Whether member `id` has announced at all.
    pub fn has_announced(&self, id: usize) -> bool {
        self.peers[id].is_some()
    }

    fn alive(&self, id: usize, now: Instant) -> Option<&Peer> {
        self.peers[id]
            .as_ref()
            .filter(|p| !p.stopped && now.duration_since(p.last_seen) <= self.expiry)
    }

    /// The feeders for `me`, and the predecessor it waits for when the answer is to
    /// wait.
    fn pipeline(&self, roster: &Roster, me: usize, now: Instant) -> (Vec<usize>, Option<usize>) {
        let (my_left, my_rate) = self.peers[me]
            .as_ref()
            .map_or((u64::MAX, 0.0), |p| (p.left, p.rate));
        if my_left == 0 {
            return (Vec::new(), None);
        }
        // While the deploy starts, wait for a predecessor that has not announced yet
        // rather than jumping the chain (the answer is empty; the next announce gets
        // it). One that stays silent for `expiry` is skipped.
        let starting = self
            .started
            .is_some_and(|t| now.duration_since(t) < self.expiry);
        // Nearest first: walked from the end of the chain's prefix before `me`.
        let predecessors = &roster.order[..roster.position[me]];
        // Usable feeders: alive and not behind me (a restarted predecessor is behind
        // and would hold me back; everyone starts equal, so equal is fine). Its
        // `left` is as of its last announce, up to an interval old, while mine is
        // fresh: a feeder one piece ahead looks behind unless its progress since then
        // is allowed for. Without that slack, hosts of a healthy chain left their
        // feeders for ones further up, down to the origin, and took pieces twice
        // (measured: 5 to 10 origin copies for 8 and 16 hosts).
        let usable = |i: usize| {
            self.alive(i, now)
                .filter(|p| p.left <= my_left.saturating_add(Self::staleness(p, my_rate, now)))
        };
        let mut feeders: Vec<usize> = Vec::new();
        for k in (0..predecessors.len()).rev() {
            let i = predecessors[k];
            if self.peers[i].is_none() && starting {
                return (feeders, Some(i));
            }
            let Some(p) = usable(i) else { continue };
            feeders.push(i);
            // A feeder that missed its last announce may have exited (a seeder whose
            // window ended: librqbit announces neither `completed` nor `stopped`),
            // complete or not: keep it, but also take the next predecessor rather
            // than wait out `expiry` on a dead address.
            if now.duration_since(p.last_seen) > self.overdue {
                continue;
            }
            if p.left == 0 {
                break;
            }
            // A slow feeder is one its own upstream outruns: then the next usable
            // predecessor is added too. Hosts downstream of any feeder run at its
            // rate, so comparing with the swarm's best rate (the chain's head) made
            // every host look slow and fetch from the whole chain.
            let upstream = predecessors[..k]
                .iter()
                .rev()
                .find_map(|&j| usable(j).map(|g| (j, g)));
            let reference = match upstream {
                Some((_, g)) if g.left > 0 => g.rate,
                _ => self.best_rate(now),
            };
            if !Self::slow(p, my_left, reference) {
                break;
            }
            // A bypass never adds a crossing of a datacenter boundary: with a feeder
            // in my datacenter, one upstream across it would send a second share of
            // the copy over the interconnect (seen in the agents' logs at 16 hosts
            // while the benchmark machine was short of CPU). A dead feeder is still
            // bypassed (above), and the host that enters the datacenter already
            // fetches across it.
            if let Some((j, _)) = upstream
                && locality(roster, me, i) < 2
                && locality(roster, me, j) == 2
            {
                break;
            }
        }
        if feeders.is_empty() {
            // Nobody before me in the chain: fall back to the nearest complete peer.
            feeders.extend(self.nearest_complete(roster, me, now));
        }
        (feeders, None)
    }

    /// Striped sharing: `me`'s feeder of each stripe (`None` while that parent has not
    /// announced yet), the distinct feeders, and the parent it waits for at start-up.
    /// Parents found gone (stopped, withdrawn, silent for `silent_after`, or never
    /// seen once the start-up grace is over) are re-linked around first, so an
    /// orphan learns its new feeder at its next poll.
    fn striped(
        &mut self,
        roster: &Roster,
        me: usize,
        now: Instant,
    ) -> (Vec<usize>, Vec<Option<usize>>, Option<usize>) {
        let my_left = self.peers[me].as_ref().map_or(u64::MAX, |p| p.left);
        let Some(trees) = &self.trees else {
            return (Vec::new(), Vec::new(), None);
        };
        if my_left == 0 {
            return (Vec::new(), Vec::new(), None);
        }
        if trees.is_dead(me) {
            // Given up as gone, yet here (a late poll, a restarted agent): a leaf again.
            let trees = self.trees.as_mut().expect("checked above");
            if let Err(e) = trees.revive(me) {
                tracing::warn!(target: "rookery::tracker::swarm", "taking back {}: {e}", roster.members[me].name);
            }
        }
        let trees = self.trees.as_ref().expect("checked above");
        // Before anyone's first announce (a member's first poll can come first), the
        // start-up grace has not even begun.
        let starting = self
            .started
            .is_none_or(|t| now.duration_since(t) < self.expiry);
        let root = trees.root();
        let gone = |p: usize| match &self.peers[p] {
            Some(peer) => peer.stopped || now.duration_since(peer.heard) > self.silent_after,
            None => !starting,
        };
        // A new parent may be gone too (never seen either): a few rounds, each
        // failing at least one more member.
        for _ in 0..8 {
            let trees = self.trees.as_ref().expect("checked above");
            let mut failed: Vec<usize> = trees
                .feeders(me)
                .into_iter()
                .flatten()
                .filter(|&p| p != root && gone(p))
                .collect();
            failed.sort_unstable();
            failed.dedup();
            if failed.is_empty() {
                break;
            }
            let trees = self.trees.as_mut().expect("checked above");
            match trees.relink(&failed) {
                Ok(edges) => {
                    let names: Vec<&str> = failed
                        .iter()
                        .map(|&f| roster.members[f].name.as_str())
                        .collect();
                    tracing::info!(
                        target: "rookery::tracker::swarm",
                        "gone: [{}]; {} subtree(s) re-linked",
                        names.join(", "),
                        edges.len()
                    );
                }
                Err(e) => {
                    tracing::warn!(target: "rookery::tracker::swarm", "re-linking: {e}");
                    break;
                }
            }
        }
        let trees = self.trees.as_ref().expect("checked above");
        let mut awaiting = None;
        let per_stripe: Vec<Option<usize>> = trees
            .feeders(me)
            .into_iter()
            .map(|p| {
                let p = p?;
                match &self.peers[p] {
                    Some(peer) if !peer.stopped => Some(p),
                    _ => {
                        awaiting.get_or_insert(p);
                        None
                    }
                }
            })
            .collect();
        let mut feeders: Vec<usize> = per_stripe.iter().flatten().copied().collect();
        feeders.sort_unstable();
        feeders.dedup();
        (feeders, per_stripe, awaiting)
    }

    /// How far a peer may have moved since it last announced: the faster of its own
    /// rate and the asker's (a feeder's rate is unknown until its second announce,
    /// and whatever the asker received came from somewhere at least as fast) over the
    /// time since, plus [`CAUGHT_UP_SLACK`] for pieces in flight. Without the asker's
    /// rate, every host's second announce found its feeder "behind" (still at its
    /// first, empty announce) and jumped to the origin (measured: 2.6 origin copies
    /// for 8 hosts).
    fn staleness(p: &Peer, my_rate: f64, now: Instant) -> u64 {
        let since = now.duration_since(p.last_seen).as_secs_f64();
        // Rates are smoothed over announces while transfers are bursty (20 to 45
        // MiB/s second to second on a 48 MiB/s link): allow twice the time since,
        // plus a second, at the faster rate. A restarted predecessor is hundreds of
        // MiB behind, far outside this.
        CAUGHT_UP_SLACK.saturating_add((p.rate.max(my_rate) * (2.0 * since + 1.0)) as u64)
    }

    /// A feeder is slow when its successor has caught up with it and it runs at under
    /// half the `reference` rate (its upstream's).
    fn slow(feeder: &Peer, my_left: u64, reference: f64) -> bool {
        my_left <= feeder.left.saturating_add(CAUGHT_UP_SLACK) && feeder.rate < 0.5 * reference
    }

    /// The best download rate among live incomplete members.
    fn best_rate(&self, now: Instant) -> f64 {
        (0..self.peers.len())
            .filter_map(|i| self.alive(i, now))
            .filter(|p| p.left > 0)
            .map(|p| p.rate)
            .fold(0.0, f64::max)
    }

    fn nearest_complete(&self, roster: &Roster, me: usize, now: Instant) -> Option<usize> {
        (0..self.peers.len())
            .filter(|&i| i != me && self.alive(i, now).is_some_and(|p| p.left == 0))
            .min_by_key(|&i| (locality(roster, me, i), roster.position[i]))
    }

    fn mesh(&self, roster: &Roster, me: usize, numwant: usize, now: Instant) -> Vec<usize> {
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

    pub fn status(&self, roster: &Roster, sharing: Sharing, me: usize, now: Instant) -> Status {
        let rack_complete =
            roster.rack_hosts[roster.rack_of[me]]
                .iter()
                .all(|&i| match &self.peers[i] {
                    Some(p) => p.left == 0 || self.alive(i, now).is_none(),
                    None => false,
                });
        let (complete, incomplete) = self.counts(now);
        Status {
            rack_complete,
            waiting_on_me: self.dependants[me]
                .iter()
                .filter(|&&d| self.alive(d, now).is_some_and(|p| p.left > 0))
                .count(),
            complete: complete as usize,
            incomplete: incomplete as usize,
            feeders: match (sharing, &self.peers[me]) {
                (Sharing::Pipeline | Sharing::Stripes, Some(p)) => Some(
                    p.feeders
                        .iter()
                        .filter_map(|&i| self.peers[i].as_ref().map(|f| f.addr))
                        .collect(),
                ),
                _ => None,
            },
            stripes: None,
        }
    }

    /// [`Swarm::status`] for a member that polls: it is heard from, and with striped
    /// sharing its feeders are worked out afresh (re-linked around any gone parent),
    /// so an orphan learns its new feeder within a poll.
    pub fn poll(&mut self, roster: &Roster, sharing: Sharing, me: usize, now: Instant) -> Status {
        self.touch(me, now);
        // A member that has not announced yet gets its stripes too: its engine asks
        // nobody for anything until it knows them.
        if sharing != Sharing::Stripes || self.trees.is_none() {
            return self.status(roster, sharing, me, now);
        }
        let (feeders, per_stripe, awaiting) = self.striped(roster, me, now);
        self.set_feeders(me, feeders);
        if let Some(p) = &mut self.peers[me] {
            p.awaiting = awaiting;
        }
        let addr = |i: usize| self.peers[i].as_ref().map(|f| f.addr);
        let mut status = self.status(roster, sharing, me, now);
        if !per_stripe.is_empty() {
            status.stripes = Some(per_stripe.iter().map(|p| p.and_then(addr)).collect());
        }
        status
    }

    /// `(complete, incomplete)` among live members, for announce answers.
    pub fn counts(&self, now: Instant) -> (u32, u32) {
        (
            self.live(&self.seen_complete, now) as u32,
            self.live(&self.seen_incomplete, now) as u32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::roster::Member;
    use std::net::IpAddr;

    /// origin (controller) + hosts named `dc-rack-n`.
    fn roster(layout: &[(&str, &str, usize)]) -> Roster {
        let mut members = vec![Member {
            name: "origin".into(),
            dc: String::new(),
            rack: String::new(),
            ip: Some("127.0.0.1".parse().unwrap()),
            origin: true,
        }];
        for (dc, rack, n) in layout {
            for k in 0..*n {
                let id = members.len();
                members.push(Member {
                    name: format!("{dc}-{rack}-{k}"),
                    dc: dc.to_string(),
                    rack: rack.to_string(),
                    ip: Some(
                        format!("10.0.{}.{}", id / 250, id % 250 + 1)
                            .parse()
                            .unwrap(),
                    ),
                    origin: false,
                });
            }
        }
        Roster::new(members)
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(format!("10.9.0.{}", i + 1).parse().unwrap(), 6881)
    }

    /// A pipeline swarm (expiry 6 s) in which member `i` has announced `left[i]` at `t`.
    fn announced(r: &Roster, t: Instant, left: &[u64]) -> Swarm {
        let mut s = Swarm::new(r, Duration::from_secs(6));
        for (i, &l) in left.iter().enumerate() {
            s.announce(r, Sharing::Pipeline, i, seen(i, l), 50, t);
        }
        s
    }

    fn seen(i: usize, left: u64) -> Seen {
        Seen {
            addr: addr(i),
            left,
            rookery: true,
            stopped: false,
        }
    }

    const S: u64 = 1 << 30;

    /// A host (not the origin) that feeds another in some stripe: `(parent, child)`.
    fn forwarding_pair(trees: &Trees, n: usize) -> (usize, usize) {
        (1..n)
            .find_map(|c| {
                trees
                    .feeders(c)
                    .into_iter()
                    .flatten()
                    .find(|&p| p != 0)
                    .map(|p| (p, c))
            })
            .expect("some host forwards")
    }

    /// A striped swarm (k = 5) over two datacenters of 12 hosts, everyone announced at `t`.
    fn striped(t: Instant) -> (Roster, Swarm) {
        let r = roster(&[("east", "e1", 6), ("east", "e2", 6), ("west", "w1", 12)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6))
            .with_stripes(&r, 5)
            .unwrap();
        s.announce(&r, Sharing::Stripes, 0, seen(0, 0), 50, t);
        for i in 1..r.members().len() {
            s.announce(&r, Sharing::Stripes, i, seen(i, S), 50, t);
        }
        (r, s)
    }

    #[test]
    fn striped_sharing_names_each_stripes_parent() {
        let t = Instant::now();
        let (r, mut s) = striped(t);
        let trees = Trees::build(&r, 5).unwrap();
        for i in 1..r.members().len() {
            let st = s.poll(&r, Sharing::Stripes, i, t);
            let want: Vec<Option<SocketAddr>> =
                trees.feeders(i).into_iter().map(|p| p.map(addr)).collect();
            assert_eq!(st.stripes.as_ref(), Some(&want), "member {i}");
            assert!(
                want.iter().all(Option::is_some),
                "member {i} lacks a stripe"
            );
            let mut distinct: Vec<SocketAddr> = want.into_iter().flatten().collect();
            distinct.sort();
            distinct.dedup();
            assert_eq!(st.feeders, Some(distinct), "member {i}");
        }
        // Other sharing modes say nothing of stripes.
        assert_eq!(s.poll(&r, Sharing::Pipeline, 3, t).stripes, None);
    }

    #[test]
    fn a_silent_parent_is_re_linked_around_at_the_next_poll() {
        let t = Instant::now();
        let (r, mut s) = striped(t);
        // A host that feeds others in some stripe.
        let trees = Trees::build(&r, 5).unwrap();
        let n = r.members().len();
        let (parent, child) = forwarding_pair(&trees, n);
        // Everyone but `parent` keeps polling; after 2.5 s it is gone.
        let later = t + Duration::from_millis(2500);
        for i in (1..n).filter(|&i| i != parent) {
            s.touch(i, later);
        }
        s.touch(0, later);
        let st = s.poll(&r, Sharing::Stripes, child, later);
        let stripes = st.stripes.expect("striped");
        assert!(stripes.iter().all(Option::is_some), "{stripes:?}");
        assert!(
            !stripes.contains(&Some(addr(parent))),
            "still fed by the gone {parent}: {stripes:?}"
        );
        // Heard from within the limit: nothing changes.
        let (r2, mut s2) = striped(t);
        let soon = t + Duration::from_millis(1500);
        let st = s2.poll(&r2, Sharing::Stripes, child, soon);
        assert!(st.stripes.unwrap().contains(&Some(addr(parent))));
    }

    #[test]
    fn a_poll_before_anyone_announced_gives_nobody_up() {
        let r = roster(&[("east", "e1", 6), ("west", "w1", 6)]);
        let trees = Trees::build(&r, 5).unwrap();
        let t = Instant::now();
        let mut s = Swarm::new(&r, Duration::from_secs(6))
            .with_stripes(&r, 5)
            .unwrap();
        // Every host polls before the first announce of anyone (agents poll at once).
        for i in 1..r.members().len() {
            let st = s.poll(&r, Sharing::Stripes, i, t);
            assert!(st.stripes.unwrap().iter().all(Option::is_none));
        }
        s.announce(&r, Sharing::Stripes, 0, seen(0, 0), 50, t);
        for i in 1..r.members().len() {
            s.announce(&r, Sharing::Stripes, i, seen(i, S), 50, t);
        }
        for i in 1..r.members().len() {
            let want: Vec<Option<SocketAddr>> =
                trees.feeders(i).into_iter().map(|p| p.map(addr)).collect();
            assert_eq!(
                s.poll(&r, Sharing::Stripes, i, t).stripes,
                Some(want),
                "member {i}"
            );
        }
    }

    #[test]
    fn a_stripe_whose_parent_has_not_announced_waits_at_start_up() {
        let r = roster(&[("east", "e1", 6), ("west", "w1", 6)]);
        let trees = Trees::build(&r, 5).unwrap();
        let t = Instant::now();
        let mut s = Swarm::new(&r, Duration::from_secs(6))
            .with_stripes(&r, 5)
            .unwrap();
        s.announce(&r, Sharing::Stripes, 0, seen(0, 0), 50, t);
        // A host whose parents include a host other than the origin.
        let n = r.members().len();
        let (parent, child) = forwarding_pair(&trees, n);
        s.announce(&r, Sharing::Stripes, child, seen(child, S), 50, t);
        let st = s.poll(&r, Sharing::Stripes, child, t);
        let stripes = st.stripes.unwrap();
        for (k, p) in trees.feeders(child).into_iter().enumerate() {
            let want = (p == Some(0)).then(|| addr(0));
            assert_eq!(
                stripes[k], want,
                "stripe {k} (parent {p:?}, waiting for {parent})"
            );
        }
        // After the start-up grace, a parent never seen is gone and re-linked around.
        let late = t + Duration::from_secs(7);
        s.touch(0, late);
        let st = s.poll(&r, Sharing::Stripes, child, late);
        assert!(st.stripes.unwrap().iter().all(Option::is_some));
    }

    #[test]
    fn pipeline_chains_hosts_behind_the_origin() {
        let r = roster(&[("east", "e1", 2), ("west", "w1", 2)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6));
        let t = Instant::now();
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t);
        for i in 1..=4 {
            let got = s.announce(&r, Sharing::Pipeline, i, seen(i, S), 50, t);
            assert_eq!(got, vec![addr(i - 1)], "host {i} is fed by its predecessor");
        }
        // Complete hosts are told nothing.
        assert!(
            s.announce(&r, Sharing::Pipeline, 1, seen(1, 0), 50, t)
                .is_empty()
        );
    }

    #[test]
    fn a_feeder_that_announced_a_while_ago_is_not_taken_for_behind() {
        let r = roster(&[("east", "e1", 2)]);
        let t = Instant::now();
        let mut s = announced(&r, t, &[0, S, S]);
        // Host 1 streams at 50 MB/s and announces every 2 s; host 2, one piece behind
        // it, announces 1.9 s after host 1's last announce: its fresh `left` is below
        // host 1's stale one, yet host 1 is ahead and stays its feeder.
        let t1 = t + Duration::from_secs(2);
        s.announce(&r, Sharing::Pipeline, 1, seen(1, S - 100_000_000), 50, t1);
        let t2 = t1 + Duration::from_millis(1900);
        let got = s.announce(&r, Sharing::Pipeline, 2, seen(2, S - 180_000_000), 50, t2);
        assert_eq!(got, vec![addr(1)]);
        // A predecessor truly behind (restarted, empty) is still passed over.
        let t3 = t2 + Duration::from_millis(100);
        s.announce(&r, Sharing::Pipeline, 1, seen(1, S), 50, t3);
        let got = s.announce(&r, Sharing::Pipeline, 2, seen(2, S - 190_000_000), 50, t3);
        assert_eq!(got, vec![addr(0)]);
    }

    #[test]
    fn pipeline_skips_dead_and_restarted_feeders() {
        let r = roster(&[("east", "e1", 4)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6));
        let t = Instant::now();
        for i in 0..=4 {
            s.announce(
                &r,
                Sharing::Pipeline,
                i,
                seen(i, if i == 0 { 0 } else { S / 2 }),
                50,
                t,
            );
        }
        // Host 3 stops announcing: host 4 is moved onto host 2.
        let later = t + Duration::from_secs(10);
        for i in [0, 1, 2] {
            s.announce(
                &r,
                Sharing::Pipeline,
                i,
                seen(i, if i == 0 { 0 } else { S / 2 }),
                50,
                later,
            );
        }
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 4, seen(4, S / 2), 50, later),
            vec![addr(2)]
        );
        // Host 3 comes back empty: it is behind host 4, so host 4 keeps host 2.
        s.announce(&r, Sharing::Pipeline, 3, seen(3, S), 50, later);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 4, seen(4, S / 2), 50, later),
            vec![addr(2)]
        );
        // A host that announces `stopped` is gone at once.
        s.announce(
            &r,
            Sharing::Pipeline,
            2,
            Seen {
                stopped: true,
                ..seen(2, S / 2)
            },
            50,
            later,
        );
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 4, seen(4, S / 2), 50, later),
            vec![addr(1)]
        );
    }

    #[test]
    fn pipeline_waits_for_a_predecessor_that_has_not_announced_yet() {
        let r = roster(&[("east", "e1", 3)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6));
        let t = Instant::now();
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t);
        // Host 3 is first to announce: host 2 is still starting, so host 3 waits
        // instead of jumping to the origin.
        assert!(
            s.announce(&r, Sharing::Pipeline, 3, seen(3, S), 50, t)
                .is_empty()
        );
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 3, seen(3, S), 50, t),
            vec![addr(2)]
        );
        // Host 1 never shows up: once the start-up grace is over it is skipped.
        let later = t + Duration::from_secs(7);
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, later);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, later),
            vec![addr(0)]
        );
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 3, seen(3, S), 50, later),
            vec![addr(2)]
        );
    }

    #[test]
    fn a_withdrawn_predecessor_is_not_waited_for() {
        let r = roster(&[("east", "e1", 2)]);
        let mut s = Swarm::new(&r, Duration::from_secs(7));
        let t = Instant::now();
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t);
        assert!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t)
                .is_empty()
        );
        assert_eq!(s.waiting_for(2).map(|(p, _)| p), Some(1));
        // Host 1's agent could not be started: host 2 goes to the origin at once,
        // well within the start-up grace.
        s.withdraw(1, t);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t),
            vec![addr(0)]
        );
        assert!(s.status(&r, Sharing::Pipeline, 2, t).incomplete == 1);
    }

    #[test]
    fn a_waiting_member_names_the_predecessor_it_waits_for() {
        let r = roster(&[("east", "e1", 2)]);
        let mut s = Swarm::new(&r, Duration::from_secs(7));
        let t = Instant::now();
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t);
        assert!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t)
                .is_empty()
        );
        assert_eq!(s.waiting_for(2), Some((1, t + Duration::from_secs(7))));
        assert!(!s.has_announced(1));
        s.announce(&r, Sharing::Pipeline, 1, seen(1, S), 50, t);
        assert!(s.has_announced(1));
        assert_eq!(s.waiting_for(1), None, "host 1 is fed by the origin");
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t);
        assert_eq!(s.waiting_for(2), None);
    }

    #[test]
    fn pipeline_also_gives_the_next_predecessor_when_a_feeder_misses_an_announce() {
        let r = roster(&[("east", "e1", 2)]);
        let mut s = Swarm::new(&r, Duration::from_secs(7)).with_overdue(Duration::from_secs(3));
        let t = Instant::now();
        for i in 0..=2 {
            s.announce(
                &r,
                Sharing::Pipeline,
                i,
                seen(i, if i == 0 { 0 } else { S }),
                50,
                t,
            );
        }
        // Host 1 exits after its seed window without announcing again. One interval
        // later it is not overdue yet: host 2 keeps it alone.
        let t2 = t + Duration::from_secs(2);
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t2);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t2),
            vec![addr(1)]
        );
        // After a missed announce host 2 is also given the origin, long before
        // host 1 expires.
        let t4 = t + Duration::from_secs(4);
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t4);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t4),
            vec![addr(1), addr(0)]
        );
        // The same for a complete feeder that went quiet.
        s.announce(&r, Sharing::Pipeline, 1, seen(1, 0), 50, t4);
        let t8 = t4 + Duration::from_secs(4);
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t8);
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t8),
            vec![addr(1), addr(0)]
        );
    }

    #[test]
    fn pipeline_bypasses_a_slow_feeder() {
        let r = roster(&[("east", "e1", 3)]);
        let mut s = Swarm::new(&r, Duration::from_secs(60));
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t0);
        for i in 1..=3 {
            s.announce(&r, Sharing::Pipeline, i, seen(i, S), 50, t0);
        }
        // Host 1 runs at 100 MB/s, host 2 at 10 MB/s, host 3 is right behind host 2.
        s.announce(&r, Sharing::Pipeline, 1, seen(1, S - 200_000_000), 50, t1);
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S - 20_000_000), 50, t1);
        let got = s.announce(&r, Sharing::Pipeline, 3, seen(3, S - 20_000_000), 50, t1);
        assert_eq!(got, vec![addr(2), addr(1)]);
    }

    #[test]
    fn a_slow_feeder_is_not_bypassed_across_a_datacenter_boundary() {
        // Chain: origin, east 1 and 2, west 3 and 4.
        let r = roster(&[("east", "e1", 2), ("west", "w1", 2)]);
        // `fast` runs at 100 MB/s, `slow` (fed by it) at 10 MB/s, and `me` is right
        // behind `slow`: the rates of pipeline_bypasses_a_slow_feeder.
        let feeders = |fast: usize, slow: usize, me: usize| {
            let mut s = Swarm::new(&r, Duration::from_secs(60));
            let t0 = Instant::now();
            let t1 = t0 + Duration::from_secs(2);
            s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t0);
            for i in 1..=4 {
                s.announce(&r, Sharing::Pipeline, i, seen(i, S), 50, t0);
            }
            s.announce(
                &r,
                Sharing::Pipeline,
                fast,
                seen(fast, S - 200_000_000),
                50,
                t1,
            );
            s.announce(
                &r,
                Sharing::Pipeline,
                slow,
                seen(slow, S - 20_000_000),
                50,
                t1,
            );
            s.announce(&r, Sharing::Pipeline, me, seen(me, S - 20_000_000), 50, t1)
        };
        // West 4 behind a slow west 3 keeps it: the bypass, east 2, would send a
        // second share of the copy over the interconnect.
        assert_eq!(feeders(2, 3, 4), vec![addr(3)]);
        // West 3, which enters west, behind a slow east 2 may add east 1: it fetches
        // across the boundary either way.
        assert_eq!(feeders(1, 2, 3), vec![addr(2), addr(1)]);
    }

    #[test]
    fn pipeline_falls_back_to_the_nearest_complete_peer() {
        let r = roster(&[("east", "e1", 2), ("west", "w1", 2)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6));
        let t = Instant::now();
        // Origin gone, host 1 (east) and host 3 (west) complete; host 2 restarts.
        s.announce(&r, Sharing::Pipeline, 1, seen(1, 0), 50, t);
        s.announce(&r, Sharing::Pipeline, 3, seen(3, 0), 50, t);
        // Host 1 precedes host 2 in the chain and is complete.
        assert_eq!(
            s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t),
            vec![addr(1)]
        );
    }

    #[test]
    fn mesh_prefers_rack_then_dc_and_bounds_remote() {
        let r = roster(&[("east", "e1", 3), ("east", "e2", 2), ("west", "w1", 8)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6));
        let t = Instant::now();
        for i in 1..r.members().len() {
            s.announce(&r, Sharing::Mesh, i, seen(i, S), 50, t);
        }
        s.announce(&r, Sharing::Mesh, 0, seen(0, 0), 50, t);
        let got = s.announce(&r, Sharing::Mesh, 1, seen(1, S), 50, t);
        // Same rack (2, 3), same DC (4, 5), then at most 4 remote; the origin is the
        // only complete peer, so it is included (first) against starvation.
        assert_eq!(got[0], addr(0));
        assert_eq!(&got[1..5], &[addr(2), addr(3), addr(4), addr(5)]);
        assert_eq!(got.len(), 1 + 4 + MESH_REMOTE_MAX);
    }

    #[test]
    fn mesh_never_starves_a_zone_without_a_seed() {
        let r = roster(&[("east", "e1", 2), ("west", "w1", 2)]);
        let mut s = Swarm::new(&r, Duration::from_secs(6));
        let t = Instant::now();
        s.announce(&r, Sharing::Mesh, 1, seen(1, 0), 50, t);
        s.announce(&r, Sharing::Mesh, 2, seen(2, 0), 50, t);
        s.announce(&r, Sharing::Mesh, 4, seen(4, S), 50, t);
        // West has no complete peer: host 3 must be given one, even with numwant 1.
        let got = s.announce(&r, Sharing::Mesh, 3, seen(3, S), 1, t);
        assert_eq!(got.len(), 1);
        assert!(got[0] == addr(1) || got[0] == addr(2), "{got:?}");
    }

    #[test]
    fn status_names_the_feeders_last_given_and_only_for_the_pipeline() {
        let r = roster(&[("east", "e1", 2)]);
        let t = Instant::now();
        let mut s = announced(&r, t, &[0, S, S]);
        let st = s.status(&r, Sharing::Pipeline, 2, t);
        assert_eq!(st.feeders, Some(vec![addr(1)]));
        // Host 1 restarts empty behind host 2: the next answer, and so the status,
        // names the origin instead.
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S / 2), 50, t);
        s.announce(&r, Sharing::Pipeline, 1, seen(1, S), 50, t);
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S / 2), 50, t);
        let st = s.status(&r, Sharing::Pipeline, 2, t);
        assert_eq!(st.feeders, Some(vec![addr(0)]));
        assert_eq!(s.status(&r, Sharing::Mesh, 2, t).feeders, None);
        // Not announced yet: nothing to follow.
        let mut fresh = Swarm::new(&r, Duration::from_secs(6));
        fresh.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t);
        assert_eq!(fresh.status(&r, Sharing::Pipeline, 2, t).feeders, None);
    }

    #[test]
    fn status_tracks_rack_completion_and_dependants() {
        let r = roster(&[("east", "e1", 2)]);
        let t = Instant::now();
        let mut s = announced(&r, t, &[0, 0, S]);
        let st = s.status(&r, Sharing::Pipeline, 1, t);
        assert!(!st.rack_complete);
        assert_eq!(st.waiting_on_me, 1);
        s.announce(&r, Sharing::Pipeline, 2, seen(2, 0), 50, t);
        let st = s.status(&r, Sharing::Pipeline, 1, t);
        assert!(st.rack_complete);
        assert_eq!(st.waiting_on_me, 0);
        assert_eq!((st.complete, st.incomplete), (3, 0));
    }

    /// [`Swarm::status`]'s counts as they were worked out before the index: a walk
    /// over every member.
    fn walked(s: &Swarm, r: &Roster, me: usize, now: Instant) -> (bool, usize, usize, usize) {
        let m = &r.members[me];
        let rack_complete = r
            .members
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.origin && (&o.dc, &o.rack) == (&m.dc, &m.rack))
            .all(|(i, _)| match &s.peers[i] {
                Some(p) => p.left == 0 || s.alive(i, now).is_none(),
                None => false,
            });
        let alive: Vec<&Peer> = (0..s.peers.len()).filter_map(|i| s.alive(i, now)).collect();
        (
            rack_complete,
            alive
                .iter()
                .filter(|p| p.left > 0 && p.feeders.contains(&me))
                .count(),
            alive.iter().filter(|p| p.left == 0).count(),
            alive.iter().filter(|p| p.left > 0).count(),
        )
    }

    #[test]
    fn indexed_counts_match_a_walk_over_every_member() {
        let r = roster(&[("east", "e1", 5), ("east", "e2", 4), ("west", "w1", 6)]);
        let n = r.members().len();
        for (sharing, seed) in [
            (Sharing::Pipeline, 1u64),
            (Sharing::Stripes, 2),
            (Sharing::Mesh, 3),
            (Sharing::Pipeline, 4),
            (Sharing::Stripes, 5),
        ] {
            let mut rng = seed;
            let mut next = move |m: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % m
            };
            let mut s = Swarm::new(&r, Duration::from_secs(7)).with_overdue(Duration::from_secs(3));
            if sharing == Sharing::Stripes {
                s = s.with_stripes(&r, 5).unwrap();
            }
            let t0 = Instant::now();
            let mut t = t0;
            for step in 0..3000 {
                // Mostly forward in time, sometimes far (members expire), sometimes back.
                t = match next(20) {
                    0 => t + Duration::from_secs(8),
                    1 => t.checked_sub(Duration::from_millis(700)).unwrap_or(t),
                    _ => t + Duration::from_millis(next(400)),
                };
                let me = next(n as u64) as usize;
                match next(10) {
                    0 => s.withdraw(me, t),
                    1..=3 => {
                        s.poll(&r, sharing, me, t);
                    }
                    k => {
                        let left = [0, S / 2, S][next(3) as usize];
                        let seen = Seen {
                            stopped: k == 9 && next(3) == 0,
                            rookery: next(8) != 0,
                            ..seen(me, if me == 0 { 0 } else { left })
                        };
                        s.announce(&r, sharing, me, seen, 50, t);
                    }
                }
                let at = t + Duration::from_millis(next(9000));
                for who in 0..n {
                    let st = s.status(&r, sharing, who, at);
                    let got = (
                        st.rack_complete,
                        st.waiting_on_me,
                        st.complete,
                        st.incomplete,
                    );
                    assert_eq!(
                        got,
                        walked(&s, &r, who, at),
                        "{sharing:?} step {step} member {who}"
                    );
                }
                let (c, i) = s.counts(at);
                let (_, _, wc, wi) = walked(&s, &r, 0, at);
                assert_eq!((c as usize, i as usize), (wc, wi), "step {step}");
            }
        }
    }

    #[test]
    fn identify_by_name_or_address() {
        let r = roster(&[("east", "e1", 2)]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(r.identify(ip("10.0.0.2"), None), Ok(1));
        assert_eq!(r.identify(ip("10.0.0.2"), Some("east-e1-0")), Ok(1));
        assert_eq!(
            r.identify(ip("10.0.0.3"), Some("east-e1-0")).unwrap_err(),
            "host `east-e1-0` must announce from its inventory address, not 10.0.0.3"
        );
        assert_eq!(
            r.identify(ip("192.0.2.1"), None).unwrap_err(),
            "address 192.0.2.1 is not in the inventory"
        );
        assert_eq!(
            r.identify(ip("10.0.0.2"), Some("nope")).unwrap_err(),
            "host `nope` is not in this deploy"
        );
    }
}
