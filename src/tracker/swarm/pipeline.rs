//! The pipeline policy: each host fed by its nearest live predecessor in the chain
//! that is not behind it, a slow feeder bypassed, a dead one skipped.

use super::*;

impl Swarm {
    /// The feeders for `me`, and the predecessor it waits for when the answer is to
    /// wait.
    pub(super) fn pipeline(
        &self,
        roster: &Roster,
        me: usize,
        now: Instant,
    ) -> (Vec<usize>, Option<usize>) {
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
            if self.peers[i].is_none() && (starting || self.launching[i].awaited(now)) {
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
            let upstream = predecessors[..k]
                .iter()
                .rev()
                .find_map(|&j| usable(j).map(|g| (j, g)));
            if !self.bypass(roster, me, (i, p), upstream, my_left, now) {
                break;
            }
        }
        if feeders.is_empty() {
            // Nobody before me in the chain: fall back to the nearest complete peer.
            feeders.extend(self.nearest_complete(roster, me, now));
        }
        (feeders, None)
    }

    /// Pipeline sharing: `me`'s feeders that it reports `lost` (connection dropped,
    /// or blocks owed and nothing sent) and that have been silent here for
    /// [`LOST_SILENT_AFTER`] are given up as gone, as if they had announced
    /// `stopped` (an announce takes one back), and `me` gets its feeders afresh at
    /// once: the next predecessor, 1.7 s at most after a feeder died or vanished,
    /// instead of waiting for `me`'s next announce and the feeder's missed one. A
    /// report alone, or silence alone, is not enough.
    pub(super) fn skip_lost(
        &mut self,
        roster: &Roster,
        me: usize,
        lost: &[SocketAddr],
        now: Instant,
    ) {
        let Some(mine) = self.peers[me].as_ref() else {
            return;
        };
        let gone: Vec<usize> = mine
            .feeders
            .iter()
            .copied()
            .filter(|&f| {
                self.peers[f]
                    .as_ref()
                    .is_some_and(|p| !p.stopped && lost_and_silent(p, lost, now))
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        for &f in &gone {
            tracing::info!(
                target: "rookery::tracker::swarm",
                "gone: {} (reported lost by {}, silent)",
                roster.members[f].name,
                roster.members[me].name
            );
            self.withdraw(f, now);
        }
        let (feeders, awaiting) = self.pipeline(roster, me, now);
        self.set_feeders(me, feeders);
        if let Some(p) = &mut self.peers[me] {
            p.awaiting = awaiting;
        }
    }

    /// Whether feeder `i` gets the next usable predecessor (`upstream`) added: only
    /// when it is slow, and never across a datacenter boundary.
    fn bypass(
        &self,
        roster: &Roster,
        me: usize,
        (i, p): (usize, &Peer),
        upstream: Option<(usize, &Peer)>,
        my_left: u64,
        now: Instant,
    ) -> bool {
        // A slow feeder is one its own upstream outruns: then the next usable
        // predecessor is added too. Hosts downstream of any feeder run at its
        // rate, so comparing with the swarm's best rate (the chain's head) made
        // every host look slow and fetch from the whole chain.
        let reference = match upstream {
            Some((_, g)) if g.left > 0 => g.rate,
            _ => self.best_rate(now),
        };
        if !self.slow(p, my_left, reference, now) {
            return false;
        }
        // A bypass never adds a crossing of a datacenter boundary: with a feeder
        // in my datacenter, one upstream across it would send a second share of
        // the copy over the interconnect (seen in the agents' logs at 16 hosts
        // while the benchmark machine was short of CPU). A dead feeder is still
        // bypassed (above), and the host that enters the datacenter already
        // fetches across it.
        !matches!(upstream, Some((j, _))
            if locality(roster, me, i) < 2 && locality(roster, me, j) == 2)
    }

    /// How far a peer may have moved since it last announced: the faster of its own
    /// rate and the asker's (a feeder's rate is unknown until its second announce,
    /// and whatever the asker received came from somewhere at least as fast) over the
    /// time since, plus [`CAUGHT_UP_SLACK`] for pieces in flight. Without the asker's
    /// rate, every host's second announce found its feeder "behind" (still at its
    /// first, empty announce) and jumped to the origin (measured: 2.6 origin copies
    /// for 8 hosts).
    pub(super) fn staleness(p: &Peer, my_rate: f64, now: Instant) -> u64 {
        let since = now.duration_since(p.last_seen).as_secs_f64();
        // Rates are smoothed over announces while transfers are bursty (20 to 45
        // MiB/s second to second on a 48 MiB/s link): allow twice the time since,
        // plus a second, at the faster rate. A restarted predecessor is hundreds of
        // MiB behind, far outside this.
        CAUGHT_UP_SLACK.saturating_add((p.rate.max(my_rate) * (2.0 * since + 1.0)) as u64)
    }

    /// A feeder is slow when its successor has caught up with it and it runs at under
    /// half the `reference` rate (its upstream's), as measured: after two announces
    /// that found it further on, or, if it never gets going, once it has been in the
    /// swarm for `expiry`.
    ///
    /// A feeder that has just come up has no rate yet (0 at its first announce, the
    /// start-up in the next). Judged on that, every host whose feeder's agent came up
    /// after its own was given the feeder's feeder too, which then split its upload
    /// between the two and made the feeder slow in earnest: in the benchmark's chain
    /// (N = 48, agents coming up over 3 to 6 s in any order) such a tangle early in
    /// the chain held everyone behind it for 3 to 6 s.
    pub(super) fn slow(&self, feeder: &Peer, my_left: u64, reference: f64, now: Instant) -> bool {
        let measured =
            feeder.progressed >= 2 || now.duration_since(feeder.first_seen) > self.expiry;
        measured
            && my_left <= feeder.left.saturating_add(CAUGHT_UP_SLACK)
            && feeder.rate < 0.5 * reference
    }

    /// The best download rate among live incomplete members.
    pub(super) fn best_rate(&self, now: Instant) -> f64 {
        (0..self.peers.len())
            .filter_map(|i| self.alive(i, now))
            .filter(|p| p.left > 0)
            .map(|p| p.rate)
            .fold(0.0, f64::max)
    }

    /// The nearest live member (by locality, then chain position) that has it all.
    pub(super) fn nearest_complete(
        &self,
        roster: &Roster,
        me: usize,
        now: Instant,
    ) -> Option<usize> {
        (0..self.peers.len())
            .filter(|&i| i != me && self.alive(i, now).is_some_and(|p| p.left == 0))
            .min_by_key(|&i| (locality(roster, me, i), roster.position[i]))
    }
}
