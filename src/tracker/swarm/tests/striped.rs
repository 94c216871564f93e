//! Striped sharing: each stripe's parent named, silent parents re-linked around,
//! and nobody given up before the start-up grace.

use super::*;

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
        let st = s.poll(&r, Sharing::Stripes, i, &[], t);
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
    assert_eq!(s.poll(&r, Sharing::Pipeline, 3, &[], t).stripes, None);
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
    let st = s.poll(&r, Sharing::Stripes, child, &[], later);
    let stripes = st.stripes.expect("striped");
    assert!(stripes.iter().all(Option::is_some), "{stripes:?}");
    assert!(
        !stripes.contains(&Some(addr(parent))),
        "still fed by the gone {parent}: {stripes:?}"
    );
    // Heard from within the limit: nothing changes.
    let (r2, mut s2) = striped(t);
    let soon = t + Duration::from_millis(1500);
    let st = s2.poll(&r2, Sharing::Stripes, child, &[], soon);
    assert!(st.stripes.unwrap().contains(&Some(addr(parent))));
}

/// A parent its child reports lost (the connection dropped) is given up after
/// 1.5 s of silence instead of 2; silence alone, or a report alone, is not enough.
#[test]
fn a_parent_reported_lost_is_re_linked_after_a_shorter_silence() {
    let t = Instant::now();
    let r = striped(t).0;
    let trees = Trees::build(&r, 5).unwrap();
    let n = r.members().len();
    let (parent, child) = forwarding_pair(&trees, n);
    // Everyone but `parent` polls at `at`; `child` reports `lost` then.
    let fed_by_parent = |silence: u64, lost: &[SocketAddr]| {
        let (r, mut s) = striped(t);
        let at = t + Duration::from_millis(silence);
        for i in (0..n).filter(|&i| i != parent) {
            s.touch(i, at);
        }
        let st = s.poll(&r, Sharing::Stripes, child, lost, at);
        st.stripes.unwrap().contains(&Some(addr(parent)))
    };
    let lost = [addr(parent)];
    assert!(!fed_by_parent(1600, &lost), "reported lost, silent 1.6 s");
    assert!(
        fed_by_parent(1000, &lost),
        "reported lost, heard from 1 s ago"
    );
    assert!(fed_by_parent(1600, &[]), "silent 1.6 s, not reported");
    assert!(
        fed_by_parent(1600, &[addr(child)]),
        "another address reported"
    );
}

/// A parent whose agent the controller is still starting is waited for after the
/// start-up grace; once its agent runs it has `expiry` more to announce, and once
/// its command is over, none.
#[test]
fn a_parent_still_being_started_is_waited_for_after_the_grace() {
    let r = roster(&[("east", "e1", 6), ("west", "w1", 6)]);
    let trees = Trees::build(&r, 5).unwrap();
    let n = r.members().len();
    let (parent, child) = forwarding_pair(&trees, n);
    let t = Instant::now();
    // Everyone but `parent` announces at `t`; its start is slow.
    let swarm = |launch: &dyn Fn(&mut Swarm)| {
        let mut s = Swarm::new(&r, Duration::from_secs(6))
            .with_stripes(&r, 5)
            .unwrap();
        s.launching(parent);
        launch(&mut s);
        for i in (0..n).filter(|&i| i != parent) {
            s.announce(
                &r,
                Sharing::Stripes,
                i,
                seen(i, if i == 0 { 0 } else { S }),
                50,
                t,
            );
        }
        s
    };
    let named = |s: &mut Swarm, at: Instant| {
        for i in (0..n).filter(|&i| i != parent) {
            s.touch(i, at);
        }
        let stripes = s
            .poll(&r, Sharing::Stripes, child, &[], at)
            .stripes
            .unwrap();
        let p = trees
            .feeders(child)
            .iter()
            .position(|&f| f == Some(parent))
            .unwrap();
        // None: still waiting for `parent`; Some: re-linked to someone else.
        stripes[p]
    };
    let late = t + Duration::from_secs(20);
    // Still starting, 20 s in: waited for.
    assert_eq!(named(&mut swarm(&|_| {}), late), None);
    // Its agent ran at 15 s: waited for until 21 s.
    let mut s = swarm(&|_| {});
    s.launched(parent, false, t + Duration::from_secs(15));
    assert_eq!(named(&mut s, late), None);
    assert!(named(&mut s, t + Duration::from_secs(22)).is_some());
    // Its command ended without an announce: given up at once.
    let mut s = swarm(&|s| s.launched(parent, true, t));
    assert!(named(&mut s, late).is_some());
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
        let st = s.poll(&r, Sharing::Stripes, i, &[], t);
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
            s.poll(&r, Sharing::Stripes, i, &[], t).stripes,
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
    let st = s.poll(&r, Sharing::Stripes, child, &[], t);
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
    let st = s.poll(&r, Sharing::Stripes, child, &[], late);
    assert!(st.stripes.unwrap().iter().all(Option::is_some));
}

/// The striped swarm with everyone's copy complete but `behind`'s (`(member, left)`).
fn all_done_but(t: Instant, behind: &[(usize, u64)]) -> (Roster, Swarm) {
    let (r, mut s) = striped(t);
    for i in 1..r.members().len() {
        let left = behind.iter().find(|b| b.0 == i).map_or(0, |b| b.1);
        s.announce(&r, Sharing::Stripes, i, seen(i, left), 50, t);
    }
    (r, s)
}

/// A member of rack e1 (members 1 to 6) and `n` of its rack-mates it does not feed in
/// the trees.
fn free_rack_mate(r: &Roster, n: usize) -> (usize, Vec<usize>) {
    let trees = Trees::build(r, 5).unwrap();
    (1..=6)
        .find_map(|h| {
            let unfed: Vec<usize> = (1..=6)
                .filter(|&m| m != h && !trees.feeders(m).contains(&Some(h)))
                .take(n)
                .collect();
            (unfed.len() == n).then_some((h, unfed))
        })
        .expect("rack e1 has a host feeding few of its rack-mates")
}

#[test]
fn a_finished_host_helps_the_rack_mate_furthest_behind() {
    let t = Instant::now();
    let (h, xy) = free_rack_mate(&striped(t).0, 2);
    let (x, y) = (xy[0], xy[1]);
    let (r, mut s) = all_done_but(t, &[(x, S / 4), (y, S / 2)]);
    // Nobody helps before a finished host polls.
    assert_eq!(s.poll(&r, Sharing::Stripes, y, &[], t).helpers, None);
    s.poll(&r, Sharing::Stripes, h, &[], t);
    let st = s.poll(&r, Sharing::Stripes, y, &[], t);
    assert_eq!(st.helpers, Some(vec![addr(h)]), "y has more left");
    assert!(st.feeders.unwrap().contains(&addr(h)));
    // Its tree parents still feed it their stripes.
    assert!(st.stripes.unwrap().iter().all(Option::is_some));
    // One helpee per helper: x gets nobody from h.
    assert_eq!(s.poll(&r, Sharing::Stripes, x, &[], t).helpers, None);
    // While y fetches, h is busy: the status keeps it seeding.
    assert_eq!(s.status(&r, Sharing::Stripes, h, t).waiting_on_me, 1);
    // y done: h moves on to x at its next poll.
    s.announce(&r, Sharing::Stripes, y, seen(y, 0), 50, t);
    s.poll(&r, Sharing::Stripes, h, &[], t);
    assert_eq!(
        s.poll(&r, Sharing::Stripes, x, &[], t).helpers,
        Some(vec![addr(h)])
    );
}

#[test]
fn a_host_whose_children_still_fetch_helps_nobody() {
    let t = Instant::now();
    let r = striped(t).0;
    let trees = Trees::build(&r, 5).unwrap();
    // A host that feeds a rack-mate in some stripe: the rack-mate it would help.
    let (parent, child) = (1..25)
        .find_map(|c| {
            let p = trees
                .feeders(c)
                .into_iter()
                .flatten()
                .find(|&p| p != 0 && r.rack_of[p] == r.rack_of[c])?;
            Some((p, c))
        })
        .expect("some host feeds a rack-mate");
    let (r, mut s) = all_done_but(t, &[(child, S)]);
    s.poll(&r, Sharing::Stripes, parent, &[], t);
    assert_eq!(s.poll(&r, Sharing::Stripes, child, &[], t).helpers, None);
}

#[test]
fn help_stays_in_the_rack_and_ends_with_the_helper() {
    let t = Instant::now();
    let (h, x) = free_rack_mate(&striped(t).0, 1);
    let x = x[0];
    let (r, mut s) = all_done_but(t, &[(x, S)]);
    // Hosts of other racks (e2: 7 to 12, w1: 13 to 24) and the origin never help.
    for other in [0, 7, 12, 13, 24] {
        s.poll(&r, Sharing::Stripes, other, &[], t);
    }
    assert_eq!(s.poll(&r, Sharing::Stripes, x, &[], t).helpers, None);
    s.poll(&r, Sharing::Stripes, h, &[], t);
    assert_eq!(
        s.poll(&r, Sharing::Stripes, x, &[], t).helpers,
        Some(vec![addr(h)])
    );
    // The helper goes silent (gone): x is told of it no more.
    let later = t + STRIPE_SILENT_AFTER + Duration::from_millis(100);
    let st = s.poll(&r, Sharing::Stripes, x, &[], later);
    assert_eq!(st.helpers, None);
    assert!(!st.feeders.unwrap().contains(&addr(h)));
}
