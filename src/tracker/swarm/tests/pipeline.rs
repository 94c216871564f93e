//! The pipeline: the chain behind the origin, dead, restarted, slow and missing
//! feeders, and waiting for a predecessor.

use super::*;

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
fn a_predecessor_still_being_started_is_waited_for_after_the_grace() {
    let r = roster(&[("east", "e1", 2)]);
    let mut s = Swarm::new(&r, Duration::from_secs(7));
    let t = Instant::now();
    s.launching(1);
    s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t);
    // 10 s in, host 1's command is still on its way: host 2 waits for it.
    let later = t + Duration::from_secs(10);
    s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, later);
    assert!(
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, later)
            .is_empty()
    );
    // Its command ended without an announce: host 2 goes to the origin.
    s.launched(1, true, later);
    assert_eq!(
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, later),
        vec![addr(0)]
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
    let t2 = t1 + Duration::from_secs(2);
    for (t, k) in [(t1, 1), (t2, 2)] {
        s.announce(
            &r,
            Sharing::Pipeline,
            1,
            seen(1, S - k * 200_000_000),
            50,
            t,
        );
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S - k * 20_000_000), 50, t);
    }
    let got = s.announce(&r, Sharing::Pipeline, 3, seen(3, S - 40_000_000), 50, t2);
    assert_eq!(got, vec![addr(2), addr(1)]);
}

#[test]
fn a_feeder_that_just_came_up_is_not_bypassed() {
    // Origin, hosts 1 to 3. Host 1 streams at 100 MB/s; host 2's agent comes up
    // late, host 3's right after it: host 2's rate is 0 at its first announce and
    // has its start-up in its second. Judged slow on those, host 3 was given host 1
    // too, which then fed both and made host 2 slow in earnest.
    let r = roster(&[("east", "e1", 3)]);
    let mut s = Swarm::new(&r, Duration::from_secs(60));
    let t0 = Instant::now();
    s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t0);
    // Hosts 1, 2 and 3 announce `left` at `secs`; host 3's answer.
    let mut round = |secs: u64, left: [Option<u64>; 3]| {
        let t = t0 + Duration::from_secs(secs);
        let mut got = Vec::new();
        for (i, l) in left.into_iter().enumerate() {
            if let Some(l) = l {
                got = s.announce(&r, Sharing::Pipeline, i + 1, seen(i + 1, l), 50, t);
            }
        }
        got
    };
    let mb = |n: u64| S - n * 1_000_000;
    round(0, [Some(mb(0)), None, None]);
    round(2, [Some(mb(200)), None, None]);
    // Host 1 streams at 100 MB/s; hosts 2 and 3 come up at 4 s.
    let first = round(4, [Some(mb(400)), Some(S), Some(S)]);
    assert_eq!(first, vec![addr(2)], "host 2 has no rate yet");
    // Its second announce: 10 MB in its first 2 s (connecting, slow start).
    let second = round(6, [Some(mb(600)), Some(mb(10)), Some(mb(10))]);
    assert_eq!(second, vec![addr(2)], "one interval is its start-up");
    // Slow in its second interval too (10 MB/s against 100): now it is bypassed.
    let third = round(8, [Some(mb(800)), Some(mb(30)), Some(mb(30))]);
    assert_eq!(third, vec![addr(2), addr(1)]);
}

#[test]
fn a_feeder_that_never_gets_going_is_bypassed_after_expiry() {
    let r = roster(&[("east", "e1", 3)]);
    let expiry = Duration::from_secs(6);
    let mut s = Swarm::new(&r, expiry);
    let t0 = Instant::now();
    s.announce(&r, Sharing::Pipeline, 0, seen(0, 0), 50, t0);
    // Host 1 streams; host 2 announces on time and never moves.
    let at = |s: &mut Swarm, secs: u64| {
        let t = t0 + Duration::from_secs(secs);
        s.announce(
            &r,
            Sharing::Pipeline,
            1,
            seen(1, S - secs * 100_000_000),
            50,
            t,
        );
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, t);
        s.announce(&r, Sharing::Pipeline, 3, seen(3, S), 50, t)
    };
    for secs in [0, 2, 4] {
        assert_eq!(at(&mut s, secs), vec![addr(2)], "{secs} s in: waited for");
    }
    assert!(Duration::from_secs(8) > expiry);
    at(&mut s, 6);
    assert_eq!(at(&mut s, 8), vec![addr(2), addr(1)]);
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
        let t2 = t1 + Duration::from_secs(2);
        for (t, k) in [(t1, 1), (t2, 2)] {
            let left = |i: usize, step: u64| seen(i, S - k * step);
            s.announce(&r, Sharing::Pipeline, fast, left(fast, 200_000_000), 50, t);
            s.announce(&r, Sharing::Pipeline, slow, left(slow, 20_000_000), 50, t);
        }
        s.announce(&r, Sharing::Pipeline, me, seen(me, S - 40_000_000), 50, t2)
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
fn a_feeder_reported_lost_and_silent_is_skipped_at_the_poll() {
    let r = roster(&[("east", "e1", 3)]);
    let t = Instant::now();
    let mut s = announced(&r, t, &[0, S, S, S]);
    let feeders = |s: &mut Swarm, lost: &[SocketAddr], at: Instant| {
        s.poll(&r, Sharing::Pipeline, 2, lost, at).feeders.unwrap()
    };
    assert_eq!(feeders(&mut s, &[], t), vec![addr(1)]);
    // Host 1 vanishes: host 2 keeps polling and reports it; host 3 polls too.
    let soon = t + Duration::from_millis(1000);
    s.poll(&r, Sharing::Pipeline, 3, &[], soon);
    // Reported, but heard from within 1.5 s: kept.
    assert_eq!(feeders(&mut s, &[addr(1)], soon), vec![addr(1)]);
    // Silent, but not reported: kept (the announce rules deal with it).
    let later = t + LOST_SILENT_AFTER + Duration::from_millis(100);
    assert_eq!(feeders(&mut s, &[], later), vec![addr(1)]);
    // Reported and silent: skipped for the next predecessor at this very poll.
    assert_eq!(feeders(&mut s, &[addr(1)], later), vec![addr(0)]);
    // Given up for everyone until it announces again.
    let st = s.status(&r, Sharing::Pipeline, 1, later);
    assert_eq!(st.waiting_on_me, 0);
    assert_eq!(
        s.announce(&r, Sharing::Pipeline, 3, seen(3, S), 50, later),
        vec![addr(2)]
    );
    s.announce(&r, Sharing::Pipeline, 1, seen(1, S / 2), 50, later);
    assert_eq!(
        s.announce(&r, Sharing::Pipeline, 2, seen(2, S), 50, later),
        vec![addr(1)]
    );
}
