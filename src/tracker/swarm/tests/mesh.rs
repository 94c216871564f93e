//! The mesh: nearest zones first, a bounded number of remote peers, and a seed for
//! a zone that has none.

use super::*;

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
