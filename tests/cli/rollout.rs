//! Deploys end to end on the local transport, with a real ZooKeeper and with the
//! local store: real distribution between host agents, real supervised services
//! (`demo-service`, an HTTP server with a health check), and an independent watcher
//! that reads the store while the rollout runs and proves quorum and order.
//!
//! The stack is a diamond: `a` on six hosts; `b` and `c` depend on `a`; `d` depends
//! on `b` and `c`. Each test runs it on a [`Diamond`], a `Cluster::local` of its own.
//! Here: the diamond and its watcher, and the plain deploy on both stores; `faults`,
//! `gates`, `moves` and `parallel` hold the rest.

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

mod faults;
mod gates;
mod moves;
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
