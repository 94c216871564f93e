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
        self.stripe_feeders(me)
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
                let silent = now.duration_since(peer.heard);
                peer.stopped
                    || silent > self.silent_after
                    || (silent > LOST_SILENT_AFTER && lost.contains(&peer.addr))
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
