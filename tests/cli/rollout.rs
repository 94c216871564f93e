//! Deploys end to end on the local transport, with a real ZooKeeper and with the
//! local store: real distribution between host agents, real supervised services
//! (`demo-service`, an HTTP server with a health check), and an independent watcher
//! that reads the store while the rollout runs and proves quorum and order.
//!
//! The stack is a diamond: `a` on six hosts; `b` and `c` depend on `a`; `d` depends
//! on `b` and `c`. Each test runs it on a [`Diamond`], a `Cluster::local` of its own.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rookery::coordination::Coordinator;
use rookery::coordination::store::Location;

use crate::support::{
    BIN, Cluster, Ensemble, Lines, Partition, Run, Store, ZooKeeper, ctrl_c, host_states, rt,
    spawn_in_group, succeed, wait_until, write_exec,
};

mod parallel;

const DEMO: &str = env!("CARGO_BIN_EXE_demo-service");

/// Services, their hosts and their quorum (strict: `a` may lose 2, the others 1).
const SERVICES: &[(&str, &[&str], u32)] = &[
    ("a", &["h1", "h2", "h3", "h4", "h5", "h6"], 4),
    ("b", &["h1", "h2", "h4", "h5"], 3),
    ("c", &["h2", "h3", "h5", "h6"], 3),
    ("d", &["h1", "h3", "h4"], 2),
];

const DEPS: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];

/// The cluster of these tests: six local hosts in two datacenters running the
/// diamond, with its playbook `pb.yml` and its build `art/` in the cluster's directory.
struct Diamond(Cluster);

impl Deref for Diamond {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Diamond {
    /// `loose`: quorums that leave room for one host down.
    fn new(store: Store, loose: bool) -> Diamond {
        let services_of = |h: &str| -> Vec<&str> {
            SERVICES
                .iter()
                .filter(|(_, hosts, _)| hosts.contains(&h))
                .map(|(s, _, _)| *s)
                .collect()
        };
        let host = |h: &str| format!("{h}: {{services: [{}]}}", services_of(h).join(", "));
        let datacenters = format!(
            "  east:\n    racks:\n      r1: {{hosts: {{{}, {}}}}}\n      r2: {{hosts: {{{}}}}}\n  west:\n    racks:\n      r1: {{hosts: {{{}, {}}}}}\n      r2: {{hosts: {{{}}}}}\n",
            host("h1"),
            host("h2"),
            host("h3"),
            host("h4"),
            host("h5"),
            host("h6")
        );
        let mut pb = String::from(
            "name: diamond\nartifact: {source: art, destination: /srv/app, version: content-hash, keep_releases: 2}\ndistribution: {seed_window: 1s}\nservices:\n",
        );
        for ((name, hosts, quorum), (_, deps)) in SERVICES.iter().zip(DEPS) {
            // Loose: half the hosts, one at a time, so a service keeps going with
            // one host down.
            let (q, par) = if loose {
                (hosts.len() as u32 / 2, 1)
            } else {
                (*quorum, 2)
            };
            pb.push_str(&format!(
                "  {name}:\n    quorum: {q}\n    max_parallel: {par}\n    depends_on: [{}]\n    start: \"{{release}}/bin/demo-service serve --name {name} --host {{host}} --version {{version}} --state {{destination}}/run\"\n    health: \"{{release}}/bin/check {name} {{destination}}/run {{version}}\"\n    health_deadline: 8s\n    min_healthy_time: 300ms\n",
                deps.join(", ")
            ));
        }
        let c = Diamond(Cluster::local(&datacenters).store(store).start());
        std::fs::write(c.path("pb.yml"), pb).unwrap();
        c.artifact("v1", None);
        c
    }

    /// The build: demo-service, a health check wrapper (failing for `broken`), a label.
    fn artifact(&self, label: &str, broken: Option<&str>) {
        let bin = self.path("art/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(DEMO, bin.join("demo-service")).unwrap();
        let mut fail = match broken {
            Some(s) => {
                format!("[ \"$1\" = {s} ] && {{ echo {s} is broken in this build >&2; exit 1; }}\n")
            }
            None => String::new(),
        };
        // A service breaks on one host, on one build: `run/broken-<service>-<label>`.
        fail.push_str(&format!(
            "[ -e \"$2/broken-$1-{label}\" ] && {{ echo broken on this host >&2; exit 1; }}\n"
        ));
        write_exec(
            &bin.join("check"),
            &format!(
                "#!/bin/sh\n{fail}exec \"$(dirname \"$0\")/demo-service\" check --name \"$1\" --state \"$2\" --version \"$3\"\n"
            ),
        );
        std::fs::write(self.path("art/LABEL"), label).unwrap();
    }

    fn deploy(&self) -> Run {
        self.run(&["--json", "deploy", "pb.yml"])
    }

    /// Adds settings to service `a` of `pb.yml` (YAML lines, unindented).
    fn settings_of_a(&self, settings: &str) {
        let pb = std::fs::read_to_string(self.path("pb.yml")).unwrap();
        let indented: String = settings.lines().map(|l| format!("    {l}\n")).collect();
        let edited = pb.replacen("  a:\n", &format!("  a:\n{indented}"), 1);
        assert_ne!(pb, edited);
        std::fs::write(self.path("pb.yml"), edited).unwrap();
    }

    /// Breaks `service`'s health check on `host` for the build labelled `label`.
    fn break_on(&self, service: &str, host: &str, label: &str) {
        let marker = format!("hosts/{host}/srv/app/run/broken-{service}-{label}");
        std::fs::write(self.path(&marker), "").unwrap();
    }

    /// `(service, host, version)` of every start, from the services' own logs.
    fn starts(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
            let log = self.path(&format!("hosts/{h}/srv/app/run/starts.log"));
            for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                out.push((f[0].to_string(), f[1].to_string(), f[2].to_string()));
            }
        }
        out
    }

    fn starts_of(&self, version: &str) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for (s, h, v) in self.starts() {
            if v == version {
                *m.entry((s, h)).or_default() += 1;
            }
        }
        m
    }

    fn live(&self) -> BTreeMap<(String, String), String> {
        rt().block_on(async {
            let store = self.location().open("t").await.unwrap();
            let mut m = BTreeMap::new();
            for (s, _, _) in SERVICES {
                for i in store.live(s).await.unwrap() {
                    m.insert((s.to_string(), i.host), i.version);
                }
            }
            m
        })
    }

    /// Asserts that every instance started exactly once on `version`; returns the
    /// starts.
    #[track_caller]
    fn each_started_once(&self, version: &str) -> BTreeMap<(String, String), usize> {
        let starts = self.starts_of(version);
        assert_eq!(starts.len(), total_instances(), "{starts:?}");
        assert!(
            starts.values().all(|&n| n == 1),
            "a host was restarted twice: {starts:?}"
        );
        starts
    }

    /// Waits until `n` instances are live in total.
    #[track_caller]
    fn wait_live(&self, n: usize) {
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || self.live().len() == n,
            || format!("not {n} live: {:?}", self.live()),
        );
    }

    /// `rookery agent start` on `host`, as at boot; its result lines.
    #[track_caller]
    fn agent_start(&self, host: &str, catch_up: bool) -> Vec<serde_json::Value> {
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "start", "--destination"])
            .arg(self.path(&format!("hosts/{host}/srv/app")));
        if catch_up {
            cmd.arg("--catch-up");
        }
        succeed(&mut cmd)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect()
    }
}

/// Reads the store on its own while a rollout runs: the fewest live instances of
/// each service, and when each instance was first seen on the new version.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Seen>,
}

/// The fewest live instances per service; when each (service, host) was first new.
type Seen = (BTreeMap<String, usize>, BTreeMap<(String, String), Instant>);

impl Watcher {
    fn start(location: Location, old: String) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            rt().block_on(async move {
                let store = location.open("t").await.unwrap();
                let mut min: BTreeMap<String, usize> = BTreeMap::new();
                let mut first_new: BTreeMap<(String, String), Instant> = BTreeMap::new();
                while !flag.load(Ordering::SeqCst) {
                    for (s, _, _) in SERVICES {
                        // A read that fails (a frozen ensemble member) says nothing.
                        let Ok(live) = store.live(s).await else {
                            continue;
                        };
                        let m = min.entry(s.to_string()).or_insert(usize::MAX);
                        *m = (*m).min(live.len());
                        for i in live {
                            if i.version != old {
                                first_new
                                    .entry((s.to_string(), i.host))
                                    .or_insert_with(Instant::now);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (min, first_new)
            })
        });
        Watcher { stop, thread }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn total_instances() -> usize {
    SERVICES.iter().map(|(_, h, _)| h.len()).sum()
}

/// A first deploy on an empty cluster; returns its version.
fn first_deploy(c: &Diamond) -> String {
    let r = c.deploy().ok();
    let v = r.version();
    c.wait_live(total_instances());
    v
}

fn diamond(store: Store) {
    let c = Diamond::new(store, false);
    let v1 = first_deploy(&c);

    c.artifact("v2", None);
    let watcher = Watcher::start(c.location().clone(), v1.clone());
    let r = c.deploy().ok();
    let (min, first_new) = watcher.finish();
    let v2 = r.version();
    assert_ne!(v1, v2);
    assert_eq!(r.record()["state"], "done", "{}", r.stdout);

    // Quorum held all along, as seen from outside.
    for (s, _, quorum) in SERVICES {
        assert!(
            min[*s] >= *quorum as usize,
            "{s} dropped to {} live instances, below its quorum {quorum}",
            min[*s]
        );
    }
    // Order: every instance of a dependency was new before any of its dependents.
    for (s, deps) in DEPS {
        for d in *deps {
            let last_dep = first_new
                .iter()
                .filter(|((x, _), _)| x == d)
                .map(|(_, t)| *t)
                .max()
                .unwrap();
            let first = first_new
                .iter()
                .filter(|((x, _), _)| x == s)
                .map(|(_, t)| *t)
                .min()
                .unwrap();
            assert!(last_dep < first, "{s} switched before all of {d}");
        }
    }
    // Each instance started exactly once on the new version, and everything runs it.
    let starts = c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());

    // The same deploy again changes nothing.
    let again = c.deploy().ok();
    for (s, _, _) in SERVICES {
        assert!(
            host_states(&again.record(), s)
                .values()
                .all(|st| st == "unchanged")
        );
    }
    assert_eq!(c.starts_of(&v2), starts);

    // Status: every instance live on v2, nothing staged, v1 and v2 installed.
    let status = c.run(&["--json", "status", "pb.yml"]).ok().report();
    for svc in status["services"].as_array().unwrap() {
        for h in svc["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], v2.as_str(), "{h}");
            assert_eq!(h["current"], v2.as_str(), "{h}");
            assert!(h["staged"].is_null(), "{h}");
            assert_eq!(h["releases"].as_array().unwrap().len(), 2, "{h}");
        }
    }
    assert!(status["lock"].is_null());
    assert_eq!(status["last_deploy"]["state"], "done");
}

#[test]
fn diamond_rollout_keeps_quorum_and_order_on_zookeeper() {
    diamond(Store::ZooKeeper);
}

#[test]
fn diamond_rollout_keeps_quorum_and_order_on_the_local_store() {
    diamond(Store::Local);
}

fn failing_health(store: Store) {
    let c = Diamond::new(store, false);
    let v1 = first_deploy(&c);
    c.artifact("v3", Some("b"));
    let r = c.deploy();
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "failed");
    assert!(
        rec["message"].as_str().unwrap().starts_with(
            "b: 1 host(s) failed, more than its failure budget of 0; the deploy stopped"
        ),
        "{rec}"
    );
    // a went through; b's first host failed and went back; nothing else of b, c, d moved.
    assert!(host_states(&rec, "a").values().all(|s| s == "done"));
    let b = host_states(&rec, "b");
    let failed: Vec<&String> = b
        .iter()
        .filter(|(_, s)| *s == "failed")
        .map(|(h, _)| h)
        .collect();
    assert_eq!(failed.len(), 1, "{b:?}");
    assert!(b.values().all(|s| s == "failed" || s == "pending"), "{b:?}");
    assert!(host_states(&rec, "c").values().all(|s| s == "pending"));
    assert!(host_states(&rec, "d").values().all(|s| s == "pending"));
    let host = &rec["services"][1]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["state"] == "failed")
        .unwrap()
        .clone();
    assert!(
        host["error"]
            .as_str()
            .unwrap()
            .ends_with(&format!("; switched back to {v1}")),
        "{host}"
    );
    // The failed host runs b on v1 again; no b, c or d instance was lost.
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    for ((s, _), v) in &live {
        if s != "a" {
            assert_eq!(v, &v1, "{live:?}");
        }
    }
}

#[test]
fn a_failing_health_check_switches_the_host_back_and_stops_the_deploy_on_zookeeper() {
    failing_health(Store::ZooKeeper);
}

#[test]
fn a_failing_health_check_switches_the_host_back_and_stops_the_deploy_on_the_local_store() {
    failing_health(Store::Local);
}

fn kill_and_resume(store: Store) {
    let c = Diamond::new(store, false);
    first_deploy(&c);
    c.artifact("v2", None);
    let mut child = c.spawn(&["deploy", "pb.yml"]);
    // Wait until the rollout is under way (two instances of `a` started on the new
    // version), then kill the controller outright.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let v2_starts = c
            .starts()
            .iter()
            .filter(|(s, _, v)| s == "a" && !v.is_empty())
            .count();
        if v2_starts >= 6 + 2 {
            break;
        }
        assert!(Instant::now() < until, "the rollout did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Once the dead run's lock is gone (at once with the local store, when its
    // session expires with ZooKeeper), `status` says who left the deploy, not that
    // it runs.
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = c.run(&["--json", "status"]).ok().report();
        if s["lock"].is_null() {
            break s;
        }
        assert!(Instant::now() < until, "the dead run's lock stayed: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let last = &status["last_deploy"];
    assert_eq!(last["state"], "interrupted", "{last}");
    assert!(
        last["message"].as_str().unwrap().starts_with("left by "),
        "{last}"
    );

    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    let v2 = r.version();
    assert_eq!(r.record()["state"], "done");
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2));
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        let cur = std::fs::read_link(c.path(&format!("hosts/{h}/srv/app/current"))).unwrap();
        assert_eq!(cur, Path::new("releases").join(&v2));
    }
}

#[test]
fn a_killed_deploy_resumes_without_restarting_finished_hosts_on_zookeeper() {
    kill_and_resume(Store::ZooKeeper);
}

#[test]
fn a_killed_deploy_resumes_without_restarting_finished_hosts_on_the_local_store() {
    kill_and_resume(Store::Local);
}

fn concurrent(store: Store) {
    let c = Diamond::new(store, false);
    first_deploy(&c);
    c.artifact("v2", None);
    let first = c.spawn(&["deploy", "pb.yml"]);
    let until = Instant::now() + Duration::from_secs(30);
    let holder = loop {
        let status = c.run(&["--json", "status"]).ok().report();
        if !status["lock"].is_null() {
            break status["lock"].clone();
        }
        assert!(
            Instant::now() < until,
            "the first deploy never took the lock"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let second = c.run(&["deploy", "pb.yml"]);
    assert_eq!(second.code, 5, "{}", second.stderr);
    let pid = first.id();
    assert_eq!(holder["pid"], pid);
    assert!(
        second.stderr.starts_with(&format!(
            "error: taking the deploy lock: another deploy holds the lock of cluster `t`: {} (pid {pid}, deploy ",
            holder["who"].as_str().unwrap()
        )),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains(" UTC\n"), "{}", second.stderr);
    let first = Run::from(first.wait_with_output().unwrap(), &["deploy (first)"]);
    first.ok();
}

#[test]
fn a_second_deploy_is_refused_while_one_runs_on_zookeeper() {
    concurrent(Store::ZooKeeper);
}

#[test]
fn a_second_deploy_is_refused_while_one_runs_on_the_local_store() {
    concurrent(Store::Local);
}

fn catch_up(store: Store) {
    let c = Diamond::new(store, true);
    first_deploy(&c);
    // h6 goes down: its services die and its disk is gone from the network.
    c.host_down("h6");
    c.wait_live(total_instances() - 2); // a and c
    std::fs::rename(c.path("hosts/h6"), c.path("h6.away")).unwrap();
    std::fs::write(c.path("hosts/h6"), "not a directory").unwrap();

    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 4, "{}", r.stderr);
    let v2 = r.version();
    assert_eq!(host_states(&r.record(), "a")["h6"], "skipped");
    assert_eq!(host_states(&r.record(), "a")["h5"], "done");

    // h6 comes back, on the old release and with nothing running.
    std::fs::remove_file(c.path("hosts/h6")).unwrap();
    std::fs::rename(c.path("h6.away"), c.path("hosts/h6")).unwrap();
    let r = c.run(&["--json", "reconcile", "pb.yml"]).ok();
    let rec = r.report();
    assert_eq!(rec["kind"], "reconcile");
    assert_eq!(host_states(&rec, "a")["h6"], "done");
    assert_eq!(host_states(&rec, "a")["h5"], "unchanged");
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
}

#[test]
fn a_host_that_missed_a_deploy_catches_up_through_reconcile_on_zookeeper() {
    catch_up(Store::ZooKeeper);
}

#[test]
fn a_host_that_missed_a_deploy_catches_up_through_reconcile_on_the_local_store() {
    catch_up(Store::Local);
}

#[test]
fn a_lost_zookeeper_session_halts_the_rollout_and_the_next_run_finishes_it() {
    let z = ZooKeeper::start();
    // Everything reaches ZooKeeper through a link the test can cut.
    let runtime = rt();
    let link = runtime.block_on(Partition::start(z.connect.clone()));
    let c = Diamond::new(Store::ZooKeeperAt(link.addr.clone()), false);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let child = c.spawn(&["--json", "deploy", "pb.yml"]);
    let until = Instant::now() + Duration::from_secs(60);
    while !c.starts().iter().any(|(s, _, v)| s == "a" && v != &v1) {
        assert!(Instant::now() < until, "the rollout did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Cut for longer than the session timeout (4 s): every session expires.
    link.set(false);
    std::thread::sleep(Duration::from_secs(7));
    link.set(true);
    let out = child.wait_with_output().unwrap();
    let r = Run::from(out, &["deploy (cut)"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    assert!(
        r.stderr.contains("the coordination session was lost")
            || r.stdout.contains("the coordination session was lost"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // Item 12 of issue 18: a host recorded `done` is live on the new version (once
    // its supervisor has registered again after the cut), never elsewhere.
    let halted = r.record();
    let v2 = r.version();
    c.wait_live(total_instances());
    let live = c.live();
    for (s, _, _) in SERVICES {
        for (h, state) in host_states(&halted, s) {
            if state == "done" {
                assert_eq!(
                    live[&(s.to_string(), h.clone())],
                    v2,
                    "{s} on {h}: {halted}"
                );
            }
        }
    }
    // The next run resumes the record and finishes the job: hosts caught in flight
    // (their new instance could not register during the cut) are switched again.
    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    assert_eq!(r.version(), v2);
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
    // Nobody restarted a host: the batch in flight kept running its new instances
    // (a start whose registration waits for the store is not a failed start), so
    // the next run found them `already` there.
    c.each_started_once(&v2);
    drop(link);
}

#[test]
fn the_first_ctrl_c_finishes_the_batch_in_flight_and_the_next_run_resumes() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let mut child = spawn_in_group(c.command(&["deploy", "pb.yml"]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    let stdout = Lines::read(child.stdout.take().unwrap());
    stderr.wait_for("a: batch 1/");
    ctrl_c(&child);
    let status = child.wait().unwrap();
    let said = stderr.finish() + "\n" + &stdout.finish();
    assert_eq!(status.code(), Some(130), "{said}");
    // The batch in flight finished: its hosts run the new version; nothing else moved.
    let batch: Vec<String> = said
        .lines()
        .find_map(|l| l.strip_prefix("a: batch 1/3: "))
        .unwrap_or_else(|| panic!("{said}"))
        .split(", ")
        .map(str::to_string)
        .collect();
    assert_eq!(batch.len(), 2, "{said}");
    assert!(said.contains("interrupted before a batch 2/3"), "{said}");
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    for ((service, host), version) in &live {
        let moved = service == "a" && batch.contains(host);
        assert_eq!(version != &v1, moved, "{service} on {host} runs {version}");
    }

    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    let v2 = r.version();
    c.each_started_once(&v2);
}

#[test]
fn a_second_ctrl_c_aborts_at_once() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    c.artifact("v2", None);
    let mut child = spawn_in_group(c.command(&["deploy", "pb.yml"]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    let stdout = Lines::read(child.stdout.take().unwrap());
    stderr.wait_for("a: batch 1/");
    ctrl_c(&child);
    std::thread::sleep(Duration::from_millis(100));
    ctrl_c(&child);
    let status = child.wait().unwrap();
    let said = stderr.finish() + "\n" + &stdout.finish();
    assert_eq!(status.code(), Some(130), "{said}");
    // Aborted, not finished cleanly: no summary of a stopped deploy was printed.
    assert!(!said.contains("interrupted before"), "{said}");
    // Whatever the hosts were doing completed on their side: every instance is live,
    // and the next run finishes the deploy.
    c.wait_live(total_instances());
    let r = c.deploy().ok();
    assert_eq!(r.record()["state"], "done");
}

#[test]
fn a_rebooted_host_starts_its_services_and_catches_up_when_asked() {
    let c = Diamond::new(Store::Local, true);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    // v2 reaches every host, then h6 goes down before the rollout.
    c.run(&["distribute", "pb.yml"]).ok();
    c.host_down("h6");
    c.wait_live(total_instances() - 2);
    c.run(&["rollout", "pb.yml", "--limit", "!h6"]).ok();
    let v2 = c.live()[&("a".to_string(), "h1".to_string())].clone();
    assert_ne!(v2, v1);

    // At boot, without --catch-up: back on the release it last ran.
    let lines = c.agent_start("h6", false);
    assert_eq!(lines.len(), 2, "{lines:?}"); // a and c
    assert!(
        lines.iter().all(|l| l["version"] == v1.as_str()),
        "{lines:?}"
    );
    c.wait_live(total_instances());
    assert_eq!(c.live()[&("a".to_string(), "h6".to_string())], v1);

    // Down again; at boot with --catch-up: on the version the others run.
    c.host_down("h6");
    c.wait_live(total_instances() - 2);
    let lines = c.agent_start("h6", true);
    assert!(
        lines.iter().all(|l| l["version"] == v2.as_str()),
        "{lines:?}"
    );
    assert!(
        lines[0]["note"]
            .as_str()
            .unwrap()
            .starts_with(&format!("caught up: the live instances run {v2}")),
        "{lines:?}"
    );
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
    let cur = std::fs::read_link(c.path("hosts/h6/srv/app/current")).unwrap();
    assert_eq!(cur, Path::new("releases").join(&v2));
}

/// Two instances of `a` down elsewhere: with 4 live of 6 and quorum 4, not one host
/// of a batch can go, re-cut or not. The deploy stops at the gate, nothing touched.
#[test]
fn missing_instances_elsewhere_stop_the_deploy_before_the_batch_and_the_next_run_finishes() {
    let c = Diamond::new(Store::ZooKeeper, false);
    let v1 = first_deploy(&c);
    // h5 and h6 go down: `a` has 4 live instances of 6, quorum 4.
    c.host_down("h5");
    c.host_down("h6");
    c.wait_live(total_instances() - 5);
    c.artifact("v2", None);
    let deploy = ["--json", "deploy", "pb.yml", "--limit", "!h5,!h6"];
    let r = c.run(&deploy);
    assert_eq!(r.code, 8, "exit 8 = the deploy stopped\n{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "failed", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("a: 4 live instance(s), 2 of them in the next batch (")
            && message.ends_with(
                "); quorum 4 needs 1 more live elsewhere before one of them can go; gave up after 8s (the service's health_deadline); none of them was touched"
            ),
        "{message}"
    );
    // Nothing was touched: every instance that was live still runs v1, on v1.
    let live = c.live();
    assert_eq!(live.len(), total_instances() - 5, "{live:?}");
    assert!(live.values().all(|v| v == &v1), "{live:?}");
    assert!(host_states(&rec, "a").values().all(|s| s == "pending"));
    for h in ["h1", "h2", "h3", "h4"] {
        let cur = std::fs::read_link(c.path(&format!("hosts/{h}/srv/app/current"))).unwrap();
        assert_eq!(cur, Path::new("releases").join(&v1), "{h}");
    }

    // h5 and h6 are back: the same command resumes and finishes.
    c.agent_start("h5", false);
    c.agent_start("h6", false);
    c.wait_live(total_instances());
    let r = c.run(&deploy).ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    assert_eq!(r.record()["state"], "done");
    let v2 = r.version();
    for ((s, h), v) in &c.live() {
        let left_out = h == "h5" || h == "h6";
        assert_eq!(v, if left_out { &v1 } else { &v2 }, "{s} on {h}");
    }
}

/// Issue 21: one instance of `a` down elsewhere. A planned batch of two would leave
/// 3 live of quorum 4, so the gate re-cuts it at run time: one host, then the other.
/// The deploy finishes, and the quorum holds all along, seen from outside.
#[test]
fn a_batch_that_would_break_quorum_is_recut_at_run_time_and_the_deploy_finishes() {
    let c = Diamond::new(Store::Local, false);
    // `c` also runs on h6: quorum 2 of 4 leaves it room to roll with h6 down.
    let pb = std::fs::read_to_string(c.path("pb.yml")).unwrap();
    let edited = pb.replace("  c:\n    quorum: 3\n", "  c:\n    quorum: 2\n");
    assert_ne!(pb, edited);
    std::fs::write(c.path("pb.yml"), edited).unwrap();
    let v1 = first_deploy(&c);
    c.host_down("h6");
    c.wait_live(total_instances() - 2);
    c.artifact("v2", None);
    let watcher = Watcher::start(c.location().clone(), v1.clone());
    let r = c.run(&["--json", "deploy", "pb.yml", "--limit", "!h6"]);
    let (min, _) = watcher.finish();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.record()["state"], "done");
    assert!(
        r.stderr
            .contains("a: 5 live instance(s), 2 of them in the next batch (")
            && r.stderr
                .contains("); quorum 4 leaves room for 1 down: re-cut, "),
        "{}",
        r.stderr
    );
    assert!(
        min["a"] >= 4,
        "a fell to {} live, below its quorum 4",
        min["a"]
    );
    assert!(
        min["c"] >= 2,
        "c fell to {} live, below its quorum 2",
        min["c"]
    );
    let v2 = r.version();
    for ((s, h), v) in &c.live() {
        assert_eq!(v, if h == "h6" { &v1 } else { &v2 }, "{s} on {h}");
    }
}

#[test]
fn rollback_returns_every_host_to_its_previous_release_dependents_first() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let v2 = c.deploy().ok().version();
    assert!(c.live().values().all(|v| v == &v2));

    // Only d first: the others stay on v2.
    let r = c
        .run(&["--json", "rollback", "pb.yml", "--service", "d"])
        .ok();
    assert_eq!(r.report()["kind"], "rollback");
    let live = c.live();
    for ((s, h), v) in &live {
        assert_eq!(v, if s == "d" { &v1 } else { &v2 }, "{s} on {h}");
    }
    // ... and at boot too: each service starts where it runs (its own release, not
    // the host-wide `current` link the rollback moved), and status agrees.
    let status = c.run(&["--json", "status", "pb.yml"]).ok().report();
    for svc in status["services"].as_array().unwrap() {
        let want = if svc["name"] == "d" { &v1 } else { &v2 };
        for h in svc["hosts"].as_array().unwrap() {
            assert_eq!(h["on_boot"], want.as_str(), "{svc}");
            assert_eq!(h["boot_differs"], false, "{svc}");
        }
    }
    c.host_down("h1"); // a, b and d run there
    c.wait_live(total_instances() - 3);
    let started = c.agent_start("h1", false);
    let versions: BTreeMap<&str, &str> = started
        .iter()
        .map(|l| {
            (
                l["service"].as_str().unwrap(),
                l["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        BTreeMap::from([("a", v2.as_str()), ("b", v2.as_str()), ("d", v1.as_str())]),
        "{started:?}"
    );
    c.wait_live(total_instances());
    for ((s, h), v) in &c.live() {
        assert_eq!(v, if s == "d" { &v1 } else { &v2 }, "{s} on {h}");
    }
    // A host set to start another release at boot than the one live is flagged.
    let spec = c.path("hosts/h3/srv/app/.rookery/services/d.json");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace(&v1, &v2)).unwrap();
    let r = c.run(&["status", "pb.yml"]).ok();
    let flagged: Vec<&str> = r.stdout.lines().filter(|l| l.contains("(!)")).collect();
    assert_eq!(flagged.len(), 1, "{}", r.stdout);
    assert!(flagged[0].trim_start().starts_with("h3 "), "{}", r.stdout);
    std::fs::write(&spec, text).unwrap();

    // Then everything, watched: dependents go back before what they depend on.
    let watcher = Watcher::start(c.location().clone(), v2.clone());
    let r = c.run(&["--json", "rollback", "pb.yml"]).ok();
    let (min, first_old) = watcher.finish();
    let rec = r.report();
    assert_eq!(rec["state"], "done", "{rec}");
    assert!(c.live().values().all(|v| v == &v1), "{:?}", c.live());
    for (s, _, quorum) in SERVICES {
        assert!(min[*s] >= *quorum as usize, "{s} fell below its quorum");
    }
    for (s, deps) in DEPS {
        if *s == "d" {
            continue; // already back before the watch started
        }
        for d in *deps {
            let last_dependent = first_old
                .iter()
                .filter(|((x, _), _)| x == s)
                .map(|(_, t)| *t)
                .max()
                .unwrap();
            let first_dependency = first_old
                .iter()
                .filter(|((x, _), _)| x == d)
                .map(|(_, t)| *t)
                .min()
                .unwrap();
            assert!(
                last_dependent < first_dependency,
                "{d} went back before all of {s}"
            );
        }
    }
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        let cur = std::fs::read_link(c.path(&format!("hosts/{h}/srv/app/current"))).unwrap();
        assert_eq!(cur, Path::new("releases").join(&v1));
    }
}

/// The playbook at a fixed label `version`, and the same with `b`'s health check
/// always failing (a health check is the playbook's, not the build's).
fn labelled_playbooks(c: &Diamond, version: &str) -> (String, String) {
    let pb = std::fs::read_to_string(c.path("pb.yml"))
        .unwrap()
        .replace("version: content-hash", &format!("version: {version}"));
    let broken = pb.replace(
        "health: \"{release}/bin/check b {destination}/run {version}\"",
        "health: \"exit 1\"",
    );
    assert_ne!(pb, broken, "b's health check was not found");
    std::fs::write(c.path("pb-label.yml"), &pb).unwrap();
    std::fs::write(c.path("pb-broken.yml"), &broken).unwrap();
    ("pb-label.yml".into(), "pb-broken.yml".into())
}

/// A switch back runs the release it returns to with the commands that host last ran
/// it with, not the new playbook's: here the new playbook's health check of `b` is
/// what is broken (`exit 1`), and it must not fail the way back too.
#[test]
fn a_switch_back_uses_the_health_check_the_old_release_ran_with() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    let (_, broken) = labelled_playbooks(&c, "v2");
    let r = c.run(&["--json", "deploy", &broken]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    let failed: Vec<&serde_json::Value> = rec["services"][1]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{rec}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .ends_with(&format!("; switched back to {v1}")),
        "{rec}"
    );
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    for ((s, h), v) in &live {
        assert_eq!(v, if s == "a" { "v2" } else { v1.as_str() }, "{s} on {h}");
    }
}

/// Issue 18's first sequence: a deploy stopped within a `--limit`, then the same
/// version deployed without it. The second run resumes the record and rolls every
/// host of its own, wider scope; it never ends `done` with hosts on the old version.
#[test]
fn a_deploy_without_the_stopped_runs_limit_finishes_every_host() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    let (pb, broken) = labelled_playbooks(&c, "v2");
    let r = c.run(&["--json", "--limit", "h1,h2", "deploy", &broken]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let r = c.run(&["--json", "deploy", &pb]).ok();
    let rec = r.record();
    assert_eq!(rec["state"], "done", "{rec}");
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == "v2"), "{live:?}");
}

/// The other order: a whole deploy stopped, then a `--limit` run of it. The limited
/// run finishes its hosts but leaves the record not done, naming the hosts left; the
/// plain run then finishes.
#[test]
fn a_limited_run_of_a_stopped_deploy_never_records_it_done() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    let (pb, broken) = labelled_playbooks(&c, "v2");
    let r = c.run(&["--json", "deploy", &broken]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let r = c.run(&["--json", "--limit", "h1", "deploy", &pb]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "interrupted", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("done within this run's --limit;")
            && message.contains("c/h3")
            && message.ends_with("run the same command without --limit to finish"),
        "{message}"
    );
    for ((_, host), v) in c.live() {
        if host == "h1" {
            assert_eq!(v, "v2");
        }
    }
    c.run(&["--json", "deploy", &pb]).ok();
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == "v2"), "{live:?}");
}

/// Issue 18's second sequence: a deploy limited to one datacenter, then `reconcile`.
/// The tie (half the hosts on each version) goes to the newest deployed version, and
/// no host is ever moved back from it; `--dry-run` prints exactly those moves first.
#[test]
fn reconcile_never_moves_a_host_back_from_the_newest_deploy() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let v2 = c
        .run(&["--json", "--limit", "dc:east", "deploy", "pb.yml"])
        .ok()
        .version();
    let before = c.live();
    let preview = c
        .run(&["--json", "reconcile", "--dry-run", "pb.yml"])
        .ok()
        .report();
    let moves = preview["moves"].as_array().unwrap();
    let mut expected: Vec<(String, String)> = before
        .iter()
        .filter(|(_, v)| **v == v1)
        .map(|((s, h), _)| (s.clone(), h.clone()))
        .collect();
    let mut got: Vec<(String, String)> = moves
        .iter()
        .map(|m| {
            assert_eq!(m["from"], v1.as_str(), "{m}");
            assert_eq!(m["to"], v2.as_str(), "{m}");
            (
                m["service"].as_str().unwrap().into(),
                m["host"].as_str().unwrap().into(),
            )
        })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{preview}");
    assert_eq!(c.live(), before, "the dry run changed something");
    c.run(&["--json", "reconcile", "pb.yml"]).ok();
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| *v == v2), "{live:?}");
}

/// On a first deploy no service ran before, whatever another service on the same host
/// did to `current` first: the record (and the summary line) says `(none) -> <v>`,
/// not `<v> -> <v>`.
#[test]
fn a_first_deploy_records_no_previous_release_for_any_service() {
    let c = Diamond::new(Store::Local, true);
    let r = c.deploy().ok();
    let rec = r.record();
    for s in rec["services"].as_array().unwrap() {
        for h in s["hosts"].as_array().unwrap() {
            assert_eq!(h["state"], "done", "{h}");
            assert!(h["from"].is_null(), "{}: {h}", s["name"]);
        }
    }
    assert!(
        !r.stderr.contains(&format!("{0} -> {0}", r.version())),
        "{}",
        r.stderr
    );
}

/// Waits until the deploy is under way: two instances of `a` started on a version
/// other than `old`.
#[track_caller]
fn wait_rolling(c: &Diamond, old: &str) {
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            c.starts()
                .iter()
                .filter(|(s, _, v)| s == "a" && v != old)
                .count()
                >= 2
        },
        || "the rollout did not start",
    );
}

/// A cluster on a three-server ensemble, with the default session timeout of the
/// field (10 s: a silent server is given up after a third of it).
fn on_ensemble(e: &Ensemble) -> Diamond {
    let c = Diamond::new(Store::ZooKeeperAt(e.connect.clone()), false);
    let inv = std::fs::read_to_string(c.path("inv.yml")).unwrap();
    std::fs::write(
        c.path("inv.yml"),
        inv.replace("session_timeout: 5s", "session_timeout: 10s"),
    )
    .unwrap();
    c
}

/// Issue 25: a ZooKeeper server that hangs (SIGSTOP for 6 s, more than a third of the
/// 10 s session timeout) under a deploy, first the controller's, then a supervisor's,
/// costs nothing: the clients move to another server of the ensemble with their
/// sessions, the deploy finishes with exit 0, no instance starts twice, and no
/// service is ever seen below its quorum.
#[test]
fn a_frozen_zookeeper_server_costs_the_deploy_nothing() {
    let e = Ensemble::start();
    let c = on_ensemble(&e);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let watcher = Watcher::start(c.location().clone(), v1.clone());
    let child = c.spawn(&["--json", "deploy", "pb.yml"]);
    let pid = child.id();
    wait_rolling(&c, &v1);
    let server = e
        .server_of(pid)
        .expect("the deploy has a connection to the ensemble");
    e.freeze(server);
    std::thread::sleep(Duration::from_millis(6000));
    e.thaw(server);
    // A supervisor that has been switched already: `a` on h1 (the first batch).
    let pattern = format!(
        "agent run --detach --service a --host h1 .*{}",
        c.dir().display()
    );
    let out = Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    let supervisor: u32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("a's supervisor on h1");
    // Its connection may be moving (it was on the server just thawed): wait for it.
    let until = Instant::now() + Duration::from_secs(10);
    let server = loop {
        if let Some(s) = e.server_of(supervisor) {
            break s;
        }
        assert!(
            Instant::now() < until,
            "the supervisor has no connection to the ensemble"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    e.freeze(server);
    std::thread::sleep(Duration::from_millis(6000));
    e.thaw(server);
    let out = child.wait_with_output().unwrap();
    // The supervisor kept its session (it moved to another server): it never had to
    // open a new one, so its live entry never went.
    let log = std::fs::read_to_string(c.path("hosts/h1/srv/app/.rookery/a.log")).unwrap();
    assert!(!log.contains("reconnecting"), "{log}");
    let r = Run::from(out, &["--json", "deploy", "pb.yml"]).ok();
    let v2 = r.version();
    assert_eq!(r.record()["state"], "done");
    c.each_started_once(&v2);
    let (min, _) = watcher.finish();
    for (s, _, quorum) in SERVICES {
        assert!(
            min[*s] >= *quorum as usize,
            "{s} was seen with {} live, below its quorum {quorum}",
            min[*s]
        );
    }
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| *v == v2), "{:?}", c.live());
}

/// Issue 25: two servers of three killed under a deploy (the ensemble has no quorum)
/// halt it safely: exit 8, the session named as the cause, no host charged with a
/// failure and no restart begun after the loss. With the servers back, the next run
/// resumes and finishes without starting any instance a second time.
#[test]
fn an_ensemble_without_quorum_halts_the_deploy_and_the_next_run_finishes_it() {
    let mut e = Ensemble::start();
    let c = on_ensemble(&e);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let child = c.spawn(&["--json", "deploy", "pb.yml"]);
    let pid = child.id();
    wait_rolling(&c, &v1);
    let server = e
        .server_of(pid)
        .expect("the deploy has a connection to the ensemble");
    let other = (server + 1) % 3;
    e.kill(server);
    e.kill(other);
    let out = child.wait_with_output().unwrap();
    let starts_at_halt = c.starts().len();
    let r = Run::from(out, &["--json", "deploy (no quorum)"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let record = r.record();
    assert!(
        record["message"]
            .as_str()
            .is_some_and(|m| m.contains("the coordination session was lost")),
        "{}",
        r.stdout
    );
    // Nothing was charged to a host: no host of any service is `failed`.
    for (s, _, _) in SERVICES {
        let states = host_states(&record, s);
        assert!(states.values().all(|st| st != "failed"), "{s}: {states:?}");
    }
    // Nothing started after the halt, while the ensemble stays without quorum.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.starts().len(), starts_at_halt, "{:?}", c.starts());

    e.restart(server);
    e.restart(other);
    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    assert_eq!(r.record()["state"], "done");
    let v2 = r.version();
    c.each_started_once(&v2);
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| *v == v2), "{:?}", c.live());
}

/// Issue 21: `canary` gates. The canary bakes, then the deploy stops waiting for
/// promotion (exit 9, recorded); running it again still waits and restarts nothing;
/// `rollout --promote` finishes it without restarting the canary.
#[test]
fn canaries_bake_then_wait_for_promotion_and_promote_finishes_the_deploy() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 1s");
    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 9, "exit 9 = waiting for promotion\n{}", r.stderr);
    let v2 = r.version();
    let rec = r.record();
    assert_eq!(rec["state"], "waiting", "{rec}");
    assert_eq!(rec["services"][0]["canary"]["state"], "waiting", "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .starts_with("a: canaries h1 baked 1s clean and wait for promotion"),
        "{rec}"
    );
    let a = host_states(&rec, "a");
    assert_eq!(a["h1"], "done", "{a:?}");
    assert_eq!(a.values().filter(|s| *s == "pending").count(), 5, "{a:?}");
    for s in ["b", "c", "d"] {
        assert!(host_states(&rec, s).values().all(|st| st == "pending"));
    }
    for ((s, h), v) in c.live() {
        let canary = s == "a" && h == "h1";
        assert_eq!(&v, if canary { &v2 } else { &v1 }, "{s} on {h}");
    }

    // Without --promote, the same command waits again and restarts nothing.
    let again = c.deploy();
    assert_eq!(again.code, 9, "{}", again.stderr);
    assert_eq!(c.starts_of(&v2).len(), 1, "{:?}", c.starts_of(&v2));

    let r = c.run(&["--json", "rollout", "pb.yml", "--promote"]).ok();
    assert_eq!(r.report()["state"], "done");
    assert!(r.stderr.contains("a: canaries h1 promoted"), "{}", r.stderr);
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());

    // Nothing waits now: --promote says so.
    let r = c.run(&["rollout", "pb.yml", "--promote"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--promote: no deploy of playbook `diamond` waits for promotion"),
        "{}",
        r.stderr
    );
}

/// Issue 21: a canary that fails its restart switches every canary back and stops the
/// deploy, although the failure budget would let the rollout go on.
#[test]
fn a_failing_canary_switches_the_canaries_back_whatever_the_failure_budget() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 2\ncanary_bake: 1s\nauto_promote: true\nfailure_budget: 5");
    c.artifact("v2", None);
    c.break_on("a", "h4", "v2");
    let r = c.deploy();
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "failed", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("a: canary h4: ")
            && message.contains("the canaries were switched back to their previous release")
            && message.contains("whatever the failure budget (5)"),
        "{message}"
    );
    let a = host_states(&rec, "a");
    assert_eq!(a["h4"], "failed", "{a:?}");
    assert_eq!(a["h1"], "pending", "{a:?}");
    let h1 = rec["services"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap()
        .clone();
    assert!(
        h1["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("switched back to {v1} with the other canaries")),
        "{h1}"
    );
    // Every instance is live, on the old release.
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == &v1), "{live:?}");
}

/// Issue 21: the canary's health is watched during the whole bake: a canary that
/// turns unhealthy during it is switched back and the deploy stops.
#[test]
fn a_canary_failing_during_the_bake_is_switched_back_and_stops_the_deploy() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 60s\nauto_promote: true");
    c.artifact("v2", None);
    let mut child = spawn_in_group(c.command(&["--json", "deploy", "pb.yml"]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    let stdout = Lines::read(child.stdout.take().unwrap());
    stderr.wait_for("a: canaries h1 baking for 1m");
    c.break_on("a", "h1", "v2");
    let status = child.wait().unwrap();
    let (said, out) = (stderr.finish(), stdout.finish());
    assert_eq!(status.code(), Some(8), "{said}");
    let rec: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rec = &rec["rollout"];
    let h1 = rec["services"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap()
        .clone();
    assert_eq!(h1["state"], "failed", "{rec}");
    let error = h1["error"].as_str().unwrap();
    assert!(
        error.contains("was withdrawn (failed health checks or exited) during the canary bake")
            && error.ends_with(&format!("; switched back to {v1}")),
        "{error}"
    );
    assert!(host_states(rec, "b").values().all(|s| s == "pending"));
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == &v1), "{live:?}");
}

/// Issue 21: a run killed during the bake is resumed by baking again, without
/// restarting the canary.
#[test]
fn a_deploy_killed_during_the_bake_resumes_the_bake_without_restarting_the_canary() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 60s");
    c.artifact("v2", None);
    let mut child = spawn_in_group(c.command(&["deploy", "pb.yml"]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    stderr.wait_for("a: canaries h1 baking");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stderr);
    let pb = std::fs::read_to_string(c.path("pb.yml")).unwrap();
    std::fs::write(
        c.path("pb.yml"),
        pb.replace(
            "canary_bake: 60s",
            "canary_bake: 1s\n    auto_promote: true",
        ),
    )
    .unwrap();
    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    assert!(
        r.stderr.contains("a: canaries h1 baking for 1s"),
        "{}",
        r.stderr
    );
    assert_eq!(r.record()["state"], "done");
    assert_eq!(r.record()["services"][0]["canary"]["state"], "promoted");
    let v2 = r.version();
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
}

/// Issue 21: `dc_budget: 1` keeps each batch of `a` within one datacenter in the run,
/// as the plan cuts it.
#[test]
fn dc_budget_keeps_each_batch_in_one_datacenter() {
    let c = Diamond::new(Store::Local, false);
    c.settings_of_a("dc_budget: 1");
    let plan = c.run(&["plan", "pb.yml"]).ok();
    assert!(
        plan.stdout
            .contains("max_parallel 2, any racks, 1 datacenter at a time"),
        "{}",
        plan.stdout
    );
    let r = c.deploy().ok();
    let batches: Vec<Vec<&str>> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("a: batch "))
        .map(|l| l.split_once(": ").unwrap().1.split(", ").collect())
        .collect();
    assert_eq!(batches.len(), 4, "{}", r.stderr);
    for b in &batches {
        let east = b.iter().filter(|h| ["h1", "h2", "h3"].contains(h)).count();
        assert!(
            east == 0 || east == b.len(),
            "batch {b:?} spans both datacenters"
        );
    }
    let planned: Vec<&str> = plan
        .stdout
        .lines()
        .skip_while(|l| !l.contains(". a:"))
        .skip(1)
        .take(4)
        .collect();
    for (p, b) in planned.iter().zip(&batches) {
        assert!(p.contains(&b.join(", ")), "plan {p:?}, run {b:?}");
    }
}

/// Issue 21: the plan shows the canary gate after the canary batches.
#[test]
fn the_plan_shows_the_canary_gate() {
    let c = Diamond::new(Store::Local, false);
    c.settings_of_a("canary: 2\ncanary_bake: 2m");
    let plan = c.run(&["plan", "pb.yml"]).ok().stdout;
    let lines: Vec<&str> = plan.lines().skip_while(|l| !l.contains(". a:")).collect();
    assert!(lines[0].contains("2 canaries"), "{plan}");
    assert!(lines[1].contains("canary  h1, h4"), "{plan}");
    assert_eq!(
        lines[2].trim(),
        "gate      the canaries bake 2m healthy (a failure switches them back and stops the deploy); then the deploy waits for `rookery rollout --promote` (exit 9)",
        "{plan}"
    );
    assert!(!lines[3].contains("canary"), "{plan}");
}

/// Issue 21: `--promote` checks the canaries first: one that died while the deploy
/// waited is a failed canary, switched back, and the deploy stops.
#[test]
fn promoting_a_canary_that_died_while_waiting_switches_it_back() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 1s");
    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 9, "{}", r.stderr);
    c.host_down("h1");
    let r = c.run(&["--json", "rollout", "pb.yml", "--promote"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.report();
    assert_eq!(rec["state"], "failed", "{rec}");
    let h1 = rec["services"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap()
        .clone();
    assert_eq!(h1["state"], "failed", "{rec}");
    assert!(
        h1["error"]
            .as_str()
            .unwrap()
            .starts_with("canary h1: no longer live on "),
        "{h1}"
    );
    assert!(
        host_states(&rec, "a").values().all(|s| s != "done"),
        "{rec}"
    );
    // `a` runs the old release everywhere again, h1 included.
    let live = c.live();
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        assert_eq!(live[&("a".to_string(), h.to_string())], v1, "{live:?}");
    }
}
