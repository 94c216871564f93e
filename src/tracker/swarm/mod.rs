//! Who may join a deploy's swarm, and which peers each member is told about.
//!
//! This is the tracker's policy, kept pure (no sockets, no clock of its own) so it can
//! be tested exhaustively and reused by the simulator. Three policies:
//!
//! - **pipeline** (rookery agents, the default): librqbit fetches pieces strictly in
//!   order, so peers that start together all want the same piece and only the origin
//!   has it. Instead the tracker arranges members in a chain (origin, then hosts by
//!   datacenter, rack and name) and tells each host about its nearest live
//!   predecessor that is not behind it. In-order fetching suits a chain: each host
//!   forwards piece *i* as soon as it has verified it, every host uploads about one
//!   copy, and the chain crosses each datacenter boundary once. A dead feeder stops
//!   announcing and is skipped at the next announce, or at once when its successor
//!   reports it lost and it has gone silent; a slow feeder (under half its
//!   upstream's rate while its successor has caught up with it) gets a bypass. The
//!   agent keeps connections to exactly the feeders named (see `fetch.rs`).
//! - **mesh** (any other client, e.g. aria2c with rarest-first): same-rack peers
//!   first, then same-datacenter, then a bounded number of remote ones; a rack or
//!   datacenter with no complete peer always gets one, so late zones never starve.
//! - **stripes** (`sharing: stripes`): each member gets each stripe from its parent
//!   in that stripe's tree ([`crate::tracker::stripes`]); parents found gone are
//!   re-linked around at the next poll.
//!
//! Here: the members, what they announced, and what each is told. Beside it, one
//! policy each: `pipeline.rs`, `striped.rs`, `mesh.rs`.

mod mesh;
mod pipeline;
mod striped;

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

/// Striped sharing: a parent that a child reports lost (its connection dropped, or
/// it owes blocks and has sent nothing for a second) is given up once silent this
/// long. A live agent polls every second, so 1.5 s of silence plus such a report is
/// a dead agent or a vanished host; the child, which polls every 200 ms while it
/// reports a loss, is re-linked within about 1.7 s of the death instead of up to
/// 3 s. A report alone (a slow feeder that is alive) gives nobody up.
pub const LOST_SILENT_AFTER: Duration = Duration::from_millis(1500);
/// Whether a feeder its child reports in `lost` has also been silent for
/// [`LOST_SILENT_AFTER`]: given up, in the trees and in the chain.
fn lost_and_silent(p: &Peer, lost: &[SocketAddr], now: Instant) -> bool {
    lost.contains(&p.addr) && now.duration_since(p.heard) > LOST_SILENT_AFTER
}

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
    /// Announces that found it further on than the one before: `rate` says how fast
    /// it is only from the second (the first interval holds its start-up).
    progressed: u32,
    /// Its first announce of this swarm.
    first_seen: Instant,
    stopped: bool,
    /// Members this one was last told about.
    feeders: Vec<usize>,
    /// The predecessor whose first announce this one was last told to wait for.
    awaiting: Option<usize>,
    /// Last heard from (an announce or a status poll): liveness for striped trees,
    /// kept apart from `last_seen`, which the rate is computed over.
    heard: Instant,
}

/// Where the controller is with starting a member's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Not started by this controller, or done.
    No,
    /// Its command is on its way.
    Starting,
    /// Its agent runs, and should have announced by then.
    Until(Instant),
}

impl Launch {
    /// Whether a never-seen member in this state is still waited for at `now`.
    fn awaited(self, now: Instant) -> bool {
        match self {
            Launch::No => false,
            Launch::Starting => true,
            Launch::Until(t) => now < t,
        }
    }
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
    /// Members whose agent the controller is starting ([`Swarm::launching`]): one
    /// not seen yet is waited for, start-up grace or not, while its start is under
    /// way and for `expiry` after its agent runs ([`Swarm::launched`]).
    launching: Vec<Launch>,
    /// Striped sharing: the rack-mate each finished member helps
    /// ([`crate::tracker::stripes::helpee`]), and the helper of each member helped.
    helping: Vec<Option<usize>>,
    helped_by: Vec<Option<usize>>,
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
    /// Striped sharing: finished rack-mates that help this member, asked for any
    /// piece of any stripe ([`crate::tracker::stripes::helpee`]). They are among
    /// `feeders` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helpers: Option<Vec<SocketAddr>>,
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
            launching: vec![Launch::No; roster.members.len()],
            helping: vec![None; roster.members.len()],
            helped_by: vec![None; roster.members.len()],
        }
    }

    /// The controller is starting `me`'s agent: until [`Swarm::launched`] (or a
    /// withdrawal), `me` is waited for if it has not been seen, however long the
    /// start-up grace has been over. A controller starts hundreds of agents over
    /// seconds (measured: 48 over 7 s on the benchmark's 2 cores, most of it the
    /// remote shell's rc file on every host; see `bench/swarm.sh`), and a grace
    /// counted from the first announce gave up the last ones started: their
    /// children were re-linked around them, across a datacenter where their own had
    /// no room, and the late hosts joined as leaves.
    pub fn launching(&mut self, me: usize) {
        self.launching[me] = Launch::Starting;
    }

    /// `me`'s agent runs (`ended`: false) or its command is over (`ended`: true):
    /// it is waited for `expiry` more to announce, or not at all.
    pub fn launched(&mut self, me: usize, ended: bool, now: Instant) {
        self.launching[me] = if ended {
            Launch::No
        } else {
            Launch::Until(now + self.expiry)
        };
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

    /// Seconds since the swarm's first announce, for the log.
    fn since_start(&self, now: Instant) -> f64 {
        self.started
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64())
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
        let (progressed, first_seen) = match &self.peers[me] {
            Some(p) if !p.stopped => (p.progressed + u32::from(seen.left < p.left), p.first_seen),
            _ => (0, now),
        };
        self.unindex(me);
        self.set_feeders(me, Vec::new());
        self.peers[me] = Some(Peer {
            addr: seen.addr,
            left: seen.left,
            last_seen: now,
            rate,
            progressed,
            first_seen,
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
                let (feeders, _, awaiting) = self.striped(roster, me, &[], now);
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
            let t = self.since_start(now);
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
        self.launching[me] = Launch::No;
        self.unindex(me);
        let p = self.peers[me].get_or_insert_with(|| Peer {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            left: u64::MAX,
            last_seen: now,
            rate: 0.0,
            progressed: 0,
            first_seen: now,
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
            helpers: None,
        }
    }

    /// [`Swarm::status`] for a member that polls: it is heard from, and with striped
    /// sharing its feeders are worked out afresh (re-linked around any gone parent),
    /// so an orphan learns its new feeder within a poll.
    ///
    /// `lost`: the feeders (addresses as announced) whose connection to `me`
    /// dropped or that stalled; each is given up after [`LOST_SILENT_AFTER`] of
    /// silence (with the pipeline, [`Swarm::skip_lost`]).
    pub fn poll(
        &mut self,
        roster: &Roster,
        sharing: Sharing,
        me: usize,
        lost: &[SocketAddr],
        now: Instant,
    ) -> Status {
        self.touch(me, now);
        if sharing == Sharing::Pipeline && !lost.is_empty() {
            self.skip_lost(roster, me, lost, now);
        }
        // A member that has not announced yet gets its stripes too: its engine asks
        // nobody for anything until it knows them.
        if sharing != Sharing::Stripes || self.trees.is_none() {
            return self.status(roster, sharing, me, now);
        }
        self.help(roster, me, now);
        let (feeders, per_stripe, awaiting) = self.striped(roster, me, lost, now);
        self.set_feeders(me, feeders);
        if let Some(p) = &mut self.peers[me] {
            p.awaiting = awaiting;
        }
        let addr = |i: usize| self.peers[i].as_ref().map(|f| f.addr);
        let mut status = self.status(roster, sharing, me, now);
        if !per_stripe.is_empty() {
            status.stripes = Some(per_stripe.iter().map(|p| p.and_then(addr)).collect());
            status.helpers = self
                .helper_of(me, now)
                .map(|h| addr(h).into_iter().collect());
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
mod tests;
