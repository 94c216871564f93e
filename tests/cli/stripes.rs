//! Striped distribution between real agents: the shape the tracker chose is the shape
//! the bytes took, and a host killed mid-transfer costs only a re-link.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rookery::tracker::stripes::Trees;

use crate::support::{Cluster, noise, run_ok, snapshot};

const STRIPES: usize = 5;

/// Twelve local hosts: east (racks e1, e2) and west (w1), four to a rack.
fn datacenters() -> String {
    let rack = |r: &str| {
        let hosts: Vec<String> = (1..=4)
            .map(|i| format!("{r}h{i}: {{services: [app]}}"))
            .collect();
        format!("{r}: {{hosts: {{{}}}}}", hosts.join(", "))
    };
    format!(
        "  east: {{racks: {{{}, {}}}}}\n  west: {{racks: {{{}}}}}\n",
        rack("e1"),
        rack("e2"),
        rack("w1")
    )
}

fn playbook(extra: &str) -> String {
    format!(
        "name: t\nartifact: {{source: art, destination: /srv/app}}\ndistribution: {{sharing: stripes, stripes: {STRIPES}, seed_window: 3s{extra}}}\nservices:\n  app: {{start: \"true\"}}\n"
    )
}

/// The twelve hosts, `pb.yml` (with `extra` in its distribution) and a blob of `size`
/// bytes in `art/`.
fn cluster(size: usize, extra: &str) -> Cluster {
    let c = Cluster::local(&datacenters()).start();
    std::fs::write(c.path("pb.yml"), playbook(extra)).unwrap();
    std::fs::create_dir_all(c.path("art")).unwrap();
    std::fs::write(c.path("art/blob"), noise(size, 21)).unwrap();
    c
}

/// The feeders (by host name, the origin as `origin`) the tracker's trees give each
/// host, built by the library from the same inventory as the run.
fn planned_feeders(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let inv = rookery::config::inventory::Inventory::load(&dir.join("inv.yml")).unwrap();
    let hosts: Vec<usize> = (0..inv.hosts.len()).collect();
    let roster = rookery::tracker::server::roster(&inv, &hosts, Some([127, 0, 0, 1].into()));
    let trees = Trees::build(&roster, STRIPES).unwrap();
    let name = |m: usize| {
        let member = &roster.members()[m];
        if member.origin {
            "origin".to_string()
        } else {
            member.name.clone()
        }
    };
    (0..roster.members().len())
        .filter(|&m| !roster.members()[m].origin)
        .map(|m| {
            let feeders = trees.feeders(m).into_iter().flatten().map(name).collect();
            (name(m), feeders)
        })
        .collect()
}

fn fed_by(host: &serde_json::Value) -> BTreeMap<String, u64> {
    host["fed_by"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Every host verified its copy, and each took its bytes from exactly the feeders its
/// trees name: one per stripe, several per host (not a chain), the origin among them
/// only where the trees say so. Upload stays within budget: the origin sends about
/// one copy, no host more than 1.2.
#[test]
fn striped_trees_are_the_shape_the_bytes_take() {
    let size = 12 << 20;
    let c = cluster(size, "");
    let d = c.dir();
    let out = run_ok(d, &["--json", "distribute", "-i", "inv.yml", "pb.yml"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["sharing"], "stripes");
    let planned = planned_feeders(d);
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 12);
    let version = r["version"].as_str().unwrap();
    let mut uploaded: BTreeMap<String, u64> = BTreeMap::new();
    for h in hosts {
        let name = h["host"].as_str().unwrap();
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(
            snapshot(&d.join(format!("hosts/{name}/srv/app/releases/{version}"))),
            snapshot(&d.join("art")),
            "{name}'s copy"
        );
        let fed = fed_by(h);
        let from: BTreeSet<String> = fed.keys().cloned().collect();
        assert_eq!(from, planned[name], "{name} was fed by {fed:?}");
        assert!(from.len() >= 2, "{name} has a single feeder: {fed:?}");
        for (f, b) in fed {
            *uploaded.entry(f).or_default() += b;
        }
    }
    let copies = |b: u64| b as f64 / size as f64;
    let origin = copies(uploaded.remove("origin").unwrap_or(0));
    assert!(origin <= 1.1, "the origin sent {origin:.2} copies");
    for (host, b) in uploaded {
        assert!(copies(b) <= 1.25, "{host} sent {:.2} copies", copies(b));
    }
}

/// The bytes of `host`'s staging copy (the blob) written so far.
fn staged_bytes(d: &Path, host: &str) -> u64 {
    std::fs::read_dir(d.join(format!("hosts/{host}/srv/app/releases")))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
        .filter_map(|e| std::fs::metadata(e.path().join("blob")).ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum()
}

/// Waits until a third of the artifact is in `victim`'s staging copy.
fn wait_for_a_third(d: &Path, victim: &str, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while staged_bytes(d, victim) < size as u64 / 3 {
        assert!(Instant::now() < deadline, "{victim} never got a third");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILLs `victim`'s fetching agent, matched by its destination inside this test's
/// folder: the other tests here name their hosts alike and run at the same time.
fn kill_agent(d: &Path, victim: &str) {
    let killed = Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("agent fetch .*{}/hosts/{victim}/", d.display()),
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "no agent of {victim} to kill");
}

/// A host that forwards in some stripe is killed while the others fetch: every other
/// host still verifies its copy, from the feeders the tracker re-linked it to.
#[test]
fn a_forwarding_host_killed_mid_transfer_costs_only_a_re_link() {
    let size = 24 << 20;
    let c = cluster(size, ", download_limit: 3MiB/s");
    let d = c.dir();
    let planned = planned_feeders(d);
    // A host that feeds another host (not only the origin does).
    let victim = planned
        .values()
        .flatten()
        .find(|f| *f != "origin")
        .cloned()
        .expect("some host forwards");
    let orphans: Vec<&String> = planned
        .iter()
        .filter(|(_, f)| f.contains(&victim))
        .map(|(h, _)| h)
        .collect();
    let child = c.spawn(&["--json", "distribute", "pb.yml"]);
    wait_for_a_third(d, &victim, size);
    kill_agent(d, &victim);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let version = r["version"].as_str().unwrap();
    for h in r["hosts"].as_array().unwrap() {
        let name = h["host"].as_str().unwrap();
        if name == victim {
            assert_eq!(h["ok"], false, "{h}");
            continue;
        }
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(
            snapshot(&d.join(format!("hosts/{name}/srv/app/releases/{version}"))),
            snapshot(&d.join("art")),
            "{name}'s copy"
        );
        if orphans.contains(&&name.to_string()) {
            // Fed by the victim until it died, and by someone else after.
            let fed = fed_by(h);
            let others: u64 = fed
                .iter()
                .filter(|(f, _)| **f != victim)
                .map(|(_, b)| b)
                .sum();
            assert!(others > 0, "{name}: {fed:?}");
        }
    }
    // The victim's connections dropped when it was killed: its orphans told the
    // tracker (`lost=`), which gives a lost feeder up after 1.5 s of silence, not 2.
    let reported = orphans.iter().any(|o| {
        std::fs::read_dir(d.join(format!("hosts/{o}/srv/app/.rookery")))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("fetch-"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .any(|log| log.contains("lost the connection to feeder(s)"))
    });
    assert!(
        reported,
        "no orphan of {victim} reported it lost: {orphans:?}"
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sharing: auto` (the playbook does not set it) over twenty hosts on fast links:
/// the chain's nineteen hops cost more than the trees' few, so the distribution
/// runs striped trees, and every host takes its stripes from several feeders.
#[test]
fn auto_sharing_runs_the_trees_where_the_estimate_says_so() {
    let rack = |r: &str| {
        let hosts: Vec<String> = (1..=4)
            .map(|i| format!("{r}h{i}: {{services: [app], link: 10Gbit/s}}"))
            .collect();
        format!("{r}: {{hosts: {{{}}}}}", hosts.join(", "))
    };
    let dcs = format!(
        "  east: {{racks: {{{}, {}, {}}}}}\n  west: {{racks: {{{}, {}}}}}\n",
        rack("e1"),
        rack("e2"),
        rack("e3"),
        rack("w1"),
        rack("w2")
    );
    let c = Cluster::local(&dcs).start();
    let d = c.dir();
    std::fs::write(
        c.path("pb.yml"),
        format!("name: t\nartifact: {{source: art, destination: /srv/app}}\ndistribution: {{stripes: {STRIPES}, seed_window: 3s}}\nservices:\n  app: {{start: \"true\"}}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(c.path("art")).unwrap();
    std::fs::write(c.path("art/blob"), noise(8 << 20, 22)).unwrap();
    let out = run_ok(d, &["--json", "distribute", "-i", "inv.yml", "pb.yml"]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["sharing"], "stripes", "{r}");
    let planned = planned_feeders(d);
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 20);
    for h in hosts {
        let name = h["host"].as_str().unwrap();
        assert_eq!(h["ok"], true, "{h}");
        let from: BTreeSet<String> = fed_by(h).keys().cloned().collect();
        assert_eq!(from, planned[name], "{name}");
        assert!(from.len() >= 2, "{name} has a single feeder: {from:?}");
    }
}
