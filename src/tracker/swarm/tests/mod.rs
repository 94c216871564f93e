//! The swarm on small rosters: the rosters and announces the tests share, and the
//! status, counts and identification the tracker keeps. Each policy's tests (who
//! each member is told about, when it waits) are beside it.

mod mesh;
mod pipeline;
mod striped;

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
                    s.poll(&r, sharing, me, &[], t);
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
