//! The striped policy: each host fed each stripe by its parent in that stripe's
//! tree, parents found gone re-linked around at the next poll.

use super::*;

impl Swarm {
    /// Striped sharing: `me`'s feeder of each stripe (`None` while that parent has not
    /// announced yet), the distinct feeders, and the parent it waits for at start-up.
    /// Parents found gone (stopped, withdrawn, silent for `silent_after`, or never
    /// seen once the start-up grace is over, or reported `lost` by `me` and silent
    /// for [`LOST_SILENT_AFTER`]) are re-linked around first, so an orphan learns its
    /// new feeder at its next poll.
    pub(super) fn striped(
        &mut self,
        roster: &Roster,
        me: usize,
        lost: &[SocketAddr],
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
        self.relink_gone(roster, me, lost, now);
        let (mut feeders, per_stripe, awaiting) = self.stripe_feeders(me);
        if let Some(h) = self.helper_of(me, now)
            && !feeders.contains(&h)
        {
            feeders.push(h);
            feeders.sort_unstable();
        }
        (feeders, per_stripe, awaiting)
    }

    /// A finished member `me` that no child in the trees waits on any more is given
    /// a rack-mate to help, the one furthest behind that has no helper
    /// ([`crate::tracker::stripes::helpee`]); one it helps until that one has its
    /// copy or is gone. Called on each of `me`'s polls.
    pub(super) fn help(&mut self, roster: &Roster, me: usize, now: Instant) {
        let Some(trees) = &self.trees else {
            return;
        };
        if me == trees.root() || trees.is_dead(me) {
            return;
        }
        if !self.peers[me]
            .as_ref()
            .is_some_and(|p| p.left == 0 && !p.stopped)
        {
            return;
        }
        if let Some(h) = self.helping[me] {
            if self.wants_help(h, now) {
                return;
            }
            self.helping[me] = None;
            if self.helped_by[h] == Some(me) {
                self.helped_by[h] = None;
            }
        }
        if self.dependants[me].iter().any(|&d| self.wants_help(d, now)) {
            return;
        }
        let candidates = roster.rack_hosts[roster.rack_of[me]]
            .iter()
            .filter(|&&c| c != me && self.wants_help(c, now) && self.helper_of(c, now).is_none())
            .filter_map(|&c| self.peers[c].as_ref().map(|p| (c, p.left)));
        let Some(c) = crate::tracker::stripes::helpee(candidates) else {
            return;
        };
        self.helping[me] = Some(c);
        self.helped_by[c] = Some(me);
        let t = self.since_start(now);
        tracing::info!(
            target: "rookery::tracker::swarm",
            "{t:.1}s {} (done) helps {} (left {} MiB)",
            roster.members[me].name,
            roster.members[c].name,
            self.peers[c].as_ref().map_or(0, |p| p.left >> 20)
        );
    }

    /// Whether `m` still fetches and is alive (heard from within `silent_after`):
    /// a child of a helper keeps it busy, a rack-mate may be helped.
    fn wants_help(&self, m: usize, now: Instant) -> bool {
        self.responsive(m, now).is_some_and(|p| p.left > 0)
            && !self.trees.as_ref().is_some_and(|t| t.is_dead(m))
    }

    /// The finished rack-mate that helps `me`, while it is alive.
    pub(super) fn helper_of(&self, me: usize, now: Instant) -> Option<usize> {
        let h = self.helped_by[me]?;
        let alive = self.responsive(h, now).is_some_and(|p| p.left == 0);
        (alive && self.helping[h] == Some(me)).then_some(h)
    }

    /// Member `m`, if it has not stopped and was heard from (an announce or a poll)
    /// within `silent_after`.
    fn responsive(&self, m: usize, now: Instant) -> Option<&Peer> {
        self.peers[m]
            .as_ref()
            .filter(|p| !p.stopped && now.duration_since(p.heard) <= self.silent_after)
    }

    /// Re-links around `me`'s parents that are gone (stopped, withdrawn, silent for
    /// `silent_after`, never seen once the start-up grace is over, or at an address
    /// in `lost` and silent for [`LOST_SILENT_AFTER`]).
    pub(super) fn relink_gone(
        &mut self,
        roster: &Roster,
        me: usize,
        lost: &[SocketAddr],
        now: Instant,
    ) {
        let Some(trees) = self.trees.as_ref() else {
            return;
        };
        // Before anyone's first announce (a member's first poll can come first), the
        // start-up grace has not even begun.
        let starting = self
            .started
            .is_none_or(|t| now.duration_since(t) < self.expiry);
        let root = trees.root();
        let gone = |p: usize| match &self.peers[p] {
            Some(peer) => {
                peer.stopped
                    || now.duration_since(peer.heard) > self.silent_after
                    || lost_and_silent(peer, lost, now)
            }
            None => !(starting || self.launching[p].awaited(now)),
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
    }

    /// `me`'s feeder of each stripe (`None` while that parent has not announced
    /// yet), the distinct feeders, and the first parent it waits for.
    pub(super) fn stripe_feeders(
        &self,
        me: usize,
    ) -> (Vec<usize>, Vec<Option<usize>>, Option<usize>) {
        let Some(trees) = self.trees.as_ref() else {
            return (Vec::new(), Vec::new(), None);
        };
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
}
