//! Stripes that leave the origin together: the origin of striped trees sends no
//! peer a piece more than a few pieces beyond the peer it has served least
//! (vendored librqbit patch 12, the upload gate).
//!
//! Why: the origin feeds each stripe's root over one link, and librqbit sends each
//! as fast as it is taken. A root that takes its stripe more slowly (TCP shares its
//! own download unevenly among the stripes coming in) leaves its share to the
//! others, which get ahead. Every host needs every stripe, so the stripe that fell
//! behind at the origin is what every host waits for at the end, and it reaches
//! them at a k-th of a link: on the shaped benchmark (48 hosts, 20 Mbit/s, 8
//! stripes) the roots had their stripes 25 to 30 s in, and every host spent its
//! last 3 to 4 s on one stripe (docs/benchmarks.md). Kept in step, a root that
//! falls behind gets the origin's link to itself until it has caught up.
//!
//! Positions are piece indexes: a root asks for its stripe's pieces in piece order,
//! and stripes interleave (piece `i` is in stripe `i mod k`), so the lowest piece a
//! root waits for says how far its stripe has come, whatever it already had (an
//! incremental release skips most pieces, and a root is at once past those). A
//! chunk of piece `p` goes to a peer when `p` is within `window` pieces of the
//! lowest position among the other peers that are waiting for chunks and were
//! last sent one less than [`IDLE`] ago (a root asks for its whole window of
//! blocks at once, often its whole stripe, so asking says little). A root that is
//! done owes nothing, and one that has vanished is sent nothing: neither holds the
//! others back for longer than that.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A peer that has been sent nothing for this long no longer holds the others back.
pub const IDLE: Duration = Duration::from_millis(500);

/// Bytes written and not yet sent that each of the origin's sockets may hold
/// (`TCP_NOTSENT_LOWAT`): a gate only decides what leaves when the kernel does not
/// take chunks by the megabyte into an autotuned send buffer. 64 KiB is 0.2 s of a
/// stripe at 20 Mbit/s with 8 stripes, and 0.4 ms of one at 10 Gbit/s. On loopback
/// (CPU the bound, 8 roots) the gate cost 8 to 11% of the throughput with 64, 128
/// or 256 KiB alike (docs/benchmarks.md).
pub const NOTSENT_LOWAT: u32 = 64 << 10;

/// Pieces each stripe may lead the slowest by: with `k` stripes, a window of
/// `WINDOW_PER_STRIPE * k` pieces. With 4 (and 128 KiB unsent) the trees took 1.20
/// to 1.27 x S/C at N = 48 on the benchmark, with 2 (and 64 KiB) 1.16 to 1.19.
pub const WINDOW_PER_STRIPE: u32 = 2;

/// The origin's uploads, kept in step.
#[derive(Debug)]
pub struct InStep {
    window: u32,
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    moved: Arc<Notify>,
}

#[derive(Debug, Clone)]
struct Peer {
    /// Chunks it asked for and was not sent yet, by piece.
    owed: BTreeMap<u32, u32>,
    /// The highest piece sent to it.
    sent: u32,
    /// When it was last sent a chunk, or began to wait for one.
    moved: Instant,
    /// When it last asked for a chunk.
    asked: Instant,
}

impl Peer {
    fn new(now: Instant) -> Peer {
        Peer {
            owed: BTreeMap::new(),
            sent: 0,
            moved: now,
            asked: now,
        }
    }

    /// How far its stripe has come: the piece below the lowest it waits for (it
    /// needs nothing below that, having it or leaving it to others), else the
    /// highest it was sent. A root whose next piece is far ahead, past pieces it
    /// already had, is that far ahead at once.
    fn position(&self) -> u32 {
        match self.owed.first_key_value() {
            Some((&p, _)) => p.saturating_sub(1),
            None => self.sent,
        }
    }

    /// Whether it holds the others back at `now`: it waits for chunks and is being
    /// sent them, or it asks (one that asks as it receives, under a download cap,
    /// owes nothing most of the time).
    fn waiting(&self, now: Instant) -> bool {
        let within = |t: Instant| now.saturating_duration_since(t) < IDLE;
        (!self.owed.is_empty() && within(self.moved)) || within(self.asked)
    }
}

impl InStep {
    /// Uploads kept within `window` pieces of each other.
    pub fn new(window: u32) -> InStep {
        InStep {
            window,
            peers: Mutex::new(HashMap::new()),
            moved: Arc::new(Notify::new()),
        }
    }

    fn asked_at(&self, peer: SocketAddr, piece: u32, now: Instant) {
        let mut peers = self.peers.lock().expect("in-step lock");
        let p = peers.entry(peer).or_insert_with(|| Peer::new(now));
        if p.owed.is_empty() {
            p.moved = now;
        }
        *p.owed.entry(piece).or_default() += 1;
        p.asked = now;
    }

    /// Whether a chunk of `piece` may go to `peer` at `now`; if so, it counts as
    /// sent.
    fn may_send_at(&self, peer: SocketAddr, piece: u32, now: Instant) -> bool {
        let mut peers = self.peers.lock().expect("in-step lock");
        let floor = peers
            .iter()
            .filter(|(a, p)| **a != peer && p.waiting(now))
            .map(|(_, p)| p.position())
            .min();
        if floor.is_some_and(|f| piece > f.saturating_add(self.window)) {
            return false;
        }
        let me = peers.entry(peer).or_insert_with(|| Peer::new(now));
        let was = me.position();
        if let Some(n) = me.owed.get_mut(&piece) {
            *n -= 1;
            if *n == 0 {
                me.owed.remove(&piece);
            }
        }
        me.sent = me.sent.max(piece);
        me.moved = now;
        // Held chunks wait for a floor to rise: only this peer's position can have.
        let rose = me.position() > was;
        drop(peers);
        if rose {
            self.moved.notify_waiters();
        }
        true
    }
}

impl librqbit::UploadGate for InStep {
    fn asked(&self, peer: SocketAddr, piece: u32) {
        self.asked_at(peer, piece, Instant::now());
    }

    fn may_send(&self, peer: SocketAddr, piece: u32) -> Option<Arc<Notify>> {
        (!self.may_send_at(peer, piece, Instant::now())).then(|| self.moved.clone())
    }

    fn gone(&self, peer: SocketAddr) {
        self.peers.lock().expect("in-step lock").remove(&peer);
        self.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use librqbit::UploadGate;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 6881))
    }

    /// Root `n` of 8 stripes asks for its stripe's pieces from `from` on, as a root
    /// does: its whole window at once.
    fn ask(g: &InStep, n: u8, from: u32, t: Instant) {
        for p in stripe(n, from, 1000) {
            g.asked_at(addr(n), p, t);
        }
    }

    /// The pieces of root `n`'s stripe from `from` to `to`.
    fn stripe(n: u8, from: u32, to: u32) -> impl Iterator<Item = u32> {
        (from..=to).filter(move |p| p % 8 == u32::from(n) % 8)
    }

    /// Whether every piece of root `n`'s stripe from `from` to `to` may go, in order.
    fn sends(g: &InStep, n: u8, from: u32, to: u32, t: Instant) -> bool {
        stripe(n, from, to).all(|p| g.may_send_at(addr(n), p, t))
    }

    /// Three roots of eight stripes: the one that is ahead waits for the slowest,
    /// and goes on as soon as that one has been sent more.
    #[test]
    fn a_root_ahead_waits_for_the_slowest() {
        let g = InStep::new(32);
        let t = Instant::now();
        for n in 1..=3 {
            ask(&g, n, 0, t);
        }
        // Root 1 may go to piece 33: within 32 of root 2's position (1).
        assert!(sends(&g, 1, 0, 33, t));
        assert!(
            !g.may_send_at(addr(1), 41, t),
            "a piece of its stripe too far"
        );
        // Root 2 comes on; root 1 still waits for root 3.
        assert!(sends(&g, 2, 0, 10, t));
        assert!(!g.may_send_at(addr(1), 41, t), "root 3 is still at 2");
        assert!(sends(&g, 3, 0, 11, t));
        assert!(g.may_send_at(addr(1), 41, t));
    }

    /// A root that joins late (re-linked after a failure) has the origin to itself
    /// until it has caught up; one that already had most of its stripe starts where
    /// its first request is.
    #[test]
    fn a_late_root_is_caught_up_first() {
        let g = InStep::new(16);
        let t = Instant::now();
        ask(&g, 1, 97, t);
        assert!(g.may_send_at(addr(1), 97, t));
        ask(&g, 2, 0, t);
        assert!(!g.may_send_at(addr(1), 105, t), "the newcomer is at 1");
        assert!(sends(&g, 2, 0, 90, t));
        assert!(g.may_send_at(addr(1), 105, t));
        // A root that has everything below piece 99 starts there.
        g.gone(addr(2));
        ask(&g, 3, 99, t);
        assert!(g.may_send_at(addr(1), 113, t), "98 + 16 is 114");
        assert!(!g.may_send_at(addr(1), 121, t));
    }

    /// An incremental release: roots skip the pieces they already have, so each one's
    /// next piece is far past the last it was sent. Their positions move with what
    /// they wait for, so neither waits for the other (counted by the last piece sent,
    /// each held the other until one of them had been sent nothing for IDLE).
    #[test]
    fn roots_that_skip_what_they_have_do_not_hold_each_other() {
        let g = InStep::new(16);
        let t = Instant::now();
        for n in 1..=2 {
            g.asked_at(addr(n), u32::from(n), t);
        }
        assert!(g.may_send_at(addr(1), 1, t));
        assert!(g.may_send_at(addr(2), 2, t));
        // Pieces 3 to 504 are unchanged; both go on from there.
        for p in [505, 513, 521] {
            g.asked_at(addr(1), p, t);
        }
        for p in [506, 514] {
            g.asked_at(addr(2), p, t);
        }
        assert!(g.may_send_at(addr(1), 505, t));
        assert!(g.may_send_at(addr(2), 506, t));
        assert!(g.may_send_at(addr(2), 514, t));
        // Root 2 asks for piece 530; root 1 still waits for 513.
        g.asked_at(addr(2), 530, t);
        assert!(!g.may_send_at(addr(2), 530, t), "root 1 is at 512");
        assert!(g.may_send_at(addr(1), 513, t));
        assert!(g.may_send_at(addr(2), 530, t));
    }

    /// A peer that owes nothing and has asked for nothing for IDLE (it is done), that
    /// has been sent nothing for IDLE (it vanished), or that is gone holds no one
    /// back.
    #[test]
    fn done_vanished_and_gone_peers_hold_no_one_back() {
        let t = Instant::now();
        // Done: root 2 asked for one piece, was sent it and asks for nothing more.
        let g = InStep::new(8);
        ask(&g, 1, 0, t);
        g.asked_at(addr(2), 2, t);
        assert!(sends(&g, 1, 0, 9, t));
        assert!(!g.may_send_at(addr(1), 17, t), "root 2 waits for piece 2");
        assert!(g.may_send_at(addr(2), 2, t));
        assert!(!g.may_send_at(addr(1), 17, t), "root 2 asked just now");
        assert!(g.may_send_at(addr(1), 17, t + IDLE));
        // Vanished: root 2 owes chunks but has been sent nothing for IDLE.
        let g = InStep::new(8);
        ask(&g, 1, 0, t);
        ask(&g, 2, 0, t);
        assert!(g.may_send_at(addr(2), 2, t));
        assert!(sends(&g, 1, 0, 17, t));
        assert!(!g.may_send_at(addr(1), 25, t));
        assert!(!g.may_send_at(addr(1), 25, t + IDLE / 2));
        assert!(g.may_send_at(addr(1), 25, t + IDLE));
        // Gone.
        let g = InStep::new(8);
        ask(&g, 1, 0, t);
        ask(&g, 2, 0, t);
        assert!(sends(&g, 1, 0, 9, t));
        assert!(!g.may_send_at(addr(1), 17, t));
        g.gone(addr(2));
        assert!(g.may_send_at(addr(1), 17, t));
    }

    /// A peer held back is woken when the slowest moves on.
    #[tokio::test]
    async fn a_held_chunk_is_woken_when_the_slowest_moves() {
        let g = Arc::new(InStep::new(8));
        for p in [1, 9, 17] {
            g.asked(addr(1), p);
        }
        for p in [2, 10] {
            g.asked(addr(2), p);
        }
        assert!(g.may_send(addr(1), 1).is_none());
        assert!(g.may_send(addr(1), 9).is_none());
        let wait = g.may_send(addr(1), 17).expect("held back");
        let mut notified = std::pin::pin!(wait.notified());
        notified.as_mut().enable();
        let g2 = g.clone();
        tokio::spawn(async move { assert!(g2.may_send(addr(2), 2).is_none()) });
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .expect("woken");
        assert!(g.may_send(addr(1), 17).is_none());
    }
}
