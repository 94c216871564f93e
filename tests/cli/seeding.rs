//! The adaptive seed window between real processes on loopback (`rookery tracker`,
//! an origin `agent seed`, `agent fetch` in the foreground): a seeder stays while a
//! late host of its rack still lacks the copy, leaves soon after that host is
//! complete, and never stays past `--seed-window-max`.
//!
//! The inventory has rack `r1` (hosts `a` and `b`) and rack `r2` (host `c`, which
//! never comes: another rack's absence must not hold `a`). The chain is origin, a,
//! b, c, so a late `b` is fed by `a`. Times are taken on the test's clock: when a
//! line of an agent's stdout is read, and when its process is found gone (sampled
//! every 20 ms).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{BIN, Proc, art_torrent, free_port, noise};

/// The artifact: small, but at `B_RATE` it takes `b` a few seconds.
const PAYLOAD: usize = 6 << 20;
/// `b`'s download cap, so that its fetch takes a measurable time (about 3 s).
const B_RATE: &str = "2MiB/s";
/// The tracker's re-announce interval (`rookery tracker`'s default): the tracker
/// learns that a host is complete at its first announce after that.
const INTERVAL: Duration = Duration::from_secs(2);
/// A seeder's round of `/status` polls (src/agent/fetch.rs): once a second, each
/// waiting up to 800 ms for the answer.
const POLL: Duration = Duration::from_millis(1800);
/// The agent's exit (its `stopped` announce, the engine's stop: about a second) and
/// the scheduling of processes on two shared, loaded cores.
const SLACK: Duration = Duration::from_secs(3);

impl Proc {
    /// Whether the process has exited, and if so whether with status 0.
    fn exited(&mut self) -> Option<bool> {
        self.0.try_wait().unwrap().map(|s| s.success())
    }
}

/// An agent's stdout (JSON events), each line with the moment the test read it.
#[derive(Clone)]
struct Events(Arc<Mutex<Vec<(Instant, serde_json::Value)>>>);

impl Events {
    fn read(stream: impl std::io::Read + Send + 'static) -> Events {
        let events = Events(Arc::new(Mutex::new(Vec::new())));
        let keep = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                keep.0.lock().unwrap().push((Instant::now(), v));
            }
        });
        events
    }

    /// The first event named `name`, and when it was read.
    fn get(&self, name: &str) -> Option<(Instant, serde_json::Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v["event"] == name)
            .cloned()
    }

    /// The last `progress` event short of `total` bytes, and when it was read.
    fn last_incomplete(&self, total: u64) -> Option<(Instant, serde_json::Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rfind(|(_, v)| {
                v["event"] == "progress" && v["bytes"].as_u64().is_some_and(|b| b < total)
            })
            .cloned()
    }
}

/// One test's cluster: inventory, artifact and metainfo in a directory, a tracker
/// and an origin.
struct Cluster {
    dir: tempfile::TempDir,
    tracker_port: u16,
    origin: String,
    tracker: Proc,
    _origin: Proc,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("inv.yml"),
            "cluster: t\ntransport: {local: {root: hosts}}\ndatacenters:\n  east: {racks: {r1: {hosts: {a: {}, b: {}}}, r2: {hosts: {c: {}}}}}\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("art")).unwrap();
        std::fs::write(d.join("art/blob"), noise(PAYLOAD, 23)).unwrap();
        art_torrent(d);
        let tracker_port = free_port();
        let listen = format!("127.0.0.1:{tracker_port}");
        let interval = format!("{}s", INTERVAL.as_secs());
        let (tracker, _) = spawn(
            d,
            "tracker",
            &[
                "-i",
                "inv.yml",
                "tracker",
                "--listen",
                &listen,
                "--torrent",
                "art.torrent",
                "--interval",
                &interval,
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", tracker_port)).is_err() {
            assert!(Instant::now() < deadline, "the tracker does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let origin = format!("127.0.0.1:{}", free_port());
        let announce = format!("http://127.0.0.1:{tracker_port}/announce?host=controller");
        let (origin_proc, events) = spawn(
            d,
            "origin",
            &[
                "agent",
                "seed",
                "--torrent",
                "art.torrent",
                "--source",
                "art",
                "--host",
                "controller",
                "--listen",
                &origin,
                "--tracker",
                &announce,
            ],
        );
        // Its first report comes once it serves the torrent (not probed: see caps.rs
        // on librqbit and failed handshakes).
        let deadline = Instant::now() + Duration::from_secs(30);
        while events.get("seeding").is_none() {
            assert!(
                Instant::now() < deadline,
                "the origin never started seeding"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Cluster {
            dir,
            tracker_port,
            origin,
            tracker,
            _origin: origin_proc,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `agent fetch` in the foreground for `host`: the process is the seeder.
    fn fetch(&self, host: &str, extra: &[&str]) -> (Proc, Events) {
        let listen = format!("127.0.0.1:{}", free_port());
        let tracker = format!(
            "http://127.0.0.1:{}/announce?host={host}",
            self.tracker_port
        );
        let dest = format!("hosts/{host}");
        let mut args = vec![
            "agent",
            "fetch",
            "--torrent",
            "art.torrent",
            "--host",
            host,
            "--listen",
            &listen,
            "--tracker",
            &tracker,
            "--origin",
            &self.origin,
            "--destination",
            &dest,
            "--version",
            "v1",
            "--stall-timeout",
            "60s",
            "--foreground",
        ];
        args.extend_from_slice(extra);
        spawn(self.path(), host, &args)
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the tracker: a tracker too busy to
    /// answer, whose port still accepts connections.
    fn freeze_tracker(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: a signal to a child this test started and has not reaped.
        unsafe { libc::kill(self.tracker.0.id() as i32, signal) };
    }

    /// The log (stderr) of process `name`.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Starts `rookery ARGS` in `dir`, its log (stderr) into `<name>.log` there.
fn spawn(dir: &Path, name: &str, args: &[&str]) -> (Proc, Events) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .env("ROOKERY_LOG", "rookery=info")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let events = Events::read(child.stdout.take().unwrap());
    (Proc(child), events)
}

/// Waits for an agent's result line; it must say ok.
fn result(who: &str, p: &mut Proc, events: &Events, c: &Cluster) -> (Instant, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((at, r)) = events.get("result") {
            assert_eq!(r["ok"], true, "{who}: {r}\n{}", c.log(who));
            return (at, r);
        }
        assert!(
            p.exited().is_none(),
            "{who} exited without a result\n{}",
            c.log(who)
        );
        assert!(
            Instant::now() < deadline,
            "{who}: no result\n{}",
            c.log(who)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Samples `p` every 20 ms until it exits or `until`; when it was found gone.
fn exit_by(p: &mut Proc, until: Instant) -> Option<(Instant, bool)> {
    loop {
        if let Some(ok) = p.exited() {
            return Some((Instant::now(), ok));
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `a` completes alone, then seeds while its rack-mate `b` has not come; `b` comes
/// late and fetches from `a`; `a` leaves once `b` is complete (though `c`, of another
/// rack, never comes), well before its `--seed-window-max`.
#[test]
fn an_adaptive_seeder_stays_for_a_late_rack_mate_and_leaves_when_it_is_complete() {
    let max = Duration::from_secs(25);
    let c = Cluster::new();
    let max_arg = format!("{}s", max.as_secs());
    let adaptive = [
        "--seed-mode",
        "adaptive",
        "--seed-window",
        "1s",
        "--seed-window-max",
        &max_arg,
    ];
    let (mut a, a_events) = c.fetch("a", &adaptive);
    let (a_done, a_result) = result("a", &mut a, &a_events, &c);

    // `b` has not come: `a` stays, past its 1 s seed window.
    let alone = Duration::from_secs(4);
    assert_eq!(
        exit_by(&mut a, a_done + alone),
        None,
        "a left by {} after its copy, while its rack-mate b had not come (max {})\n{}",
        secs(a_done.elapsed()),
        secs(max),
        c.log("a")
    );
    let log = c.log("a");
    for line in [
        "seeding until every host of the rack has the copy and none is fed by this one, for at most 25s",
        "seeding: the rack lacks copies; 0 host(s) fed by this one",
    ] {
        assert!(log.contains(line), "a's log lacks {line:?}\n{log}");
    }

    // `b` comes, slowed down, and seeds on for longer than this test waits (a fixed
    // window): `a` must leave because `b` is complete, not because `b` is gone.
    let (mut b, b_events) = c.fetch(
        "b",
        &[
            "--download-limit",
            B_RATE,
            "--seed-mode",
            "fixed",
            "--seed-window",
            "60s",
        ],
    );
    let b_started = Instant::now();
    let (b_done, b_result) = result("b", &mut b, &b_events, &c);
    let total = b_result["bytes"].as_u64().unwrap();
    let a_exit = exit_by(&mut a, a_done + max + POLL + SLACK);
    let b_incomplete = b_events.last_incomplete(total).map(|(t, _)| t);
    let seen = format!(
        "a complete at 0 s; b started at {}, last seen incomplete at {}, complete at {}; a exited at {}; max {}\na: {a_result}\nb: {b_result}\n--- a's log\n{}\n--- b's log\n{}",
        secs(b_started - a_done),
        b_incomplete.map_or("-".into(), |t| secs(t - a_done)),
        secs(b_done - a_done),
        a_exit.map_or("-".into(), |(t, _)| secs(t - a_done)),
        secs(max),
        c.log("a"),
        c.log("b"),
    );
    eprintln!("{}", seen.lines().next().unwrap());
    // `b` fetched from `a`: the seeder that stayed fed it.
    assert!(
        b_result["bytes_from_peers"].as_u64().unwrap() > 0,
        "b fetched nothing from a\n{seen}"
    );
    let Some((a_gone, a_ok)) = a_exit else {
        panic!("a still seeds past its max although b is complete\n{seen}");
    };
    assert!(a_ok, "a exited with a failure\n{seen}");
    if let Some(t) = b_incomplete {
        assert!(a_gone > t, "a left while b was still incomplete\n{seen}");
    }
    assert!(
        a_gone + Duration::from_millis(200) >= b_done,
        "a left before b was complete\n{seen}"
    );
    let bound = INTERVAL + POLL + SLACK;
    assert!(
        a_gone <= b_done + bound,
        "a did not leave within {} of b's completion (the tracker's interval, a poll, slack)\n{seen}",
        secs(bound)
    );
    assert!(
        a_gone < a_done + max,
        "a left at its max, not because its rack was complete\n{seen}"
    );
    // `b` is still seeding: `a` did not wait for it to go.
    assert_eq!(b.exited(), None, "b left before the test ended\n{seen}");
    let why = "every host of the rack has the copy and none is fed by this one";
    assert!(
        c.log("a").contains(why),
        "a's log does not say it left because {why}\n{seen}"
    );
}

/// `a` completes and its rack-mate `b` never comes: `a` seeds until its
/// `--seed-window-max`, not before, and leaves then, not much later. Meanwhile the
/// tracker stalls for a few of `a`'s polls (past `a`'s 1 s seed window): a tracker
/// that is slow to answer is not a tracker that is gone, and `a` stays.
#[test]
fn an_adaptive_seeder_whose_rack_mate_never_comes_leaves_at_its_max() {
    let max = Duration::from_secs(8);
    let c = Cluster::new();
    let max_arg = format!("{}s", max.as_secs());
    let (mut a, a_events) = c.fetch(
        "a",
        &[
            "--seed-mode",
            "adaptive",
            "--seed-window",
            "1s",
            "--seed-window-max",
            &max_arg,
        ],
    );
    let (a_done, _) = result("a", &mut a, &a_events, &c);
    let (stall, stalled) = (Duration::from_secs(2), Duration::from_millis(2500));
    assert_eq!(
        exit_by(&mut a, a_done + stall),
        None,
        "a left early\n{}",
        c.log("a")
    );
    c.freeze_tracker(true);
    let exited = exit_by(&mut a, a_done + stall + stalled);
    c.freeze_tracker(false);
    // Its log says so as soon as it decides: the process itself may linger, waiting
    // for the stalled tracker to take its `stopped` announce.
    let left = exited.is_some() || c.log("a").contains("leaving the swarm");
    assert!(
        !left,
        "a left by {} after its copy while the tracker stalled from {} for {} (max {}), although its rack-mate b never came\n{}",
        secs(a_done.elapsed()),
        secs(stall),
        secs(stalled),
        secs(max),
        c.log("a")
    );
    // The seed window starts right after the result line is written; the line is
    // read some milliseconds later.
    let early = Duration::from_millis(300);
    let bound = max + POLL + SLACK;
    let exit = exit_by(&mut a, a_done + bound);
    let seen = format!(
        "a complete at 0 s, exited at {}; max {}\n--- a's log\n{}",
        exit.map_or("-".into(), |(t, _)| secs(t - a_done)),
        secs(max),
        c.log("a")
    );
    eprintln!("{}", seen.lines().next().unwrap());
    let Some((gone, ok)) = exit else {
        panic!(
            "a still seeds {} after its copy, past its max of {}\n{seen}",
            secs(bound),
            secs(max)
        );
    };
    assert!(ok, "a exited with a failure\n{seen}");
    assert!(
        gone + early >= a_done + max,
        "a left before its max while its rack-mate b never came\n{seen}"
    );
    let why = "seed_window_max 8s reached";
    assert!(
        c.log("a").contains(why),
        "a's log does not say it left because {why}\n{seen}"
    );
}
