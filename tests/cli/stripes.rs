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

/// `host` took bytes from every feeder its trees name and from nobody else but a
/// rack-mate (a finished host helping it at the end; the rack is the name's first
/// two letters here).
fn assert_fed_as_planned(host: &str, from: &BTreeSet<String>, planned: &BTreeSet<String>) {
    assert!(
        from.is_superset(planned),
        "{host} was fed by {from:?}, planned {planned:?}"
    );
    for f in from.difference(planned) {
        assert_eq!(
            f[..2],
            host[..2],
            "{host} was fed by {f}, not planned nor a rack-mate"
        );
    }
}

/// Every host verified its copy, and each took its bytes from the feeders its trees
/// name (and perhaps a helping rack-mate): one per stripe, several per host (not a
/// chain), the origin among them only where the trees say so. Upload stays within budget: the origin sends about
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
        assert_fed_as_planned(name, &from, &planned[name]);
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
    signal_agent(d, victim, "-KILL");
}

/// Sends `signal` (`-KILL`, `-STOP`, `-CONT`) to `host`'s fetching agent.
fn signal_agent(d: &Path, host: &str, signal: &str) {
    let sent = Command::new("pkill")
        .args([
            signal,
            "-f",
            &format!("agent fetch .*{}/hosts/{host}/", d.display()),
        ])
        .status()
        .unwrap();
    assert!(sent.success(), "no agent of {host} to signal");
}

/// The lines of `host`'s fetch logs.
fn fetch_log(d: &Path, host: &str) -> String {
    std::fs::read_dir(d.join(format!("hosts/{host}/srv/app/.rookery")))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("fetch-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

/// A host that feeds another host in the `planned` trees (not only the origin
/// does), and the hosts it feeds.
fn forwarder(planned: &BTreeMap<String, BTreeSet<String>>) -> (String, Vec<String>) {
    let victim = planned
        .values()
        .flatten()
        .find(|f| *f != "origin")
        .cloned()
        .expect("some host forwards");
    let fed = planned
        .iter()
        .filter(|(_, f)| f.contains(&victim))
        .map(|(h, _)| h.clone())
        .collect();
    (victim, fed)
}

/// The run's JSON report, once `child` (a `--json distribute`) has exited, and how it
/// ended.
fn report(child: std::process::Child) -> (serde_json::Value, std::process::Output) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    (r, out)
}

/// The run ended in exit 4: some hosts failed (the one the test took down).
fn assert_some_hosts_failed(out: &std::process::Output) {
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every host of the report but `failed` verified a copy identical to `art/`, and
/// `failed` is reported failed.
fn assert_copies_but(d: &Path, r: &serde_json::Value, failed: Option<&str>) {
    let version = r["version"].as_str().unwrap();
    for h in r["hosts"].as_array().unwrap() {
        let name = h["host"].as_str().unwrap();
        if Some(name) == failed {
            assert_eq!(h["ok"], false, "{h}");
            continue;
        }
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(
            snapshot(&d.join(format!("hosts/{name}/srv/app/releases/{version}"))),
            snapshot(&d.join("art")),
            "{name}'s copy"
        );
    }
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
    let (victim, orphans) = forwarder(&planned);
    let child = c.spawn(&["--json", "distribute", "pb.yml"]);
    wait_for_a_third(d, &victim, size);
    kill_agent(d, &victim);
    let (r, out) = report(child);
    assert_copies_but(d, &r, Some(&victim));
    for h in r["hosts"].as_array().unwrap() {
        let name = h["host"].as_str().unwrap();
        if orphans.iter().any(|o| o == name) {
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
    let reported = orphans
        .iter()
        .any(|o| fetch_log(d, o).contains("lost the connection to feeder(s)"));
    assert!(
        reported,
        "no orphan of {victim} reported it lost: {orphans:?}"
    );
    assert_some_hosts_failed(&out);
}

/// A forwarding host that vanishes without closing its connections (its agent
/// stopped, as a host that lost power or its network): the hosts it fed see blocks
/// owed and nothing arriving, report it stalled, and take the rest from the feeders
/// the tracker re-links them to. Every other host verifies its copy; the vanished
/// one is killed once they have and is the run's one failure.
#[test]
fn a_forwarding_host_that_vanishes_is_reported_stalled_and_re_linked_around() {
    let size = 24 << 20;
    let c = cluster(size, ", download_limit: 3MiB/s");
    let planned = planned_feeders(c.dir());
    let (victim, orphans) = forwarder(&planned);
    vanish(&c, size, &victim, &orphans, "re-linked");
}

/// The same in the chain (`sharing: pipeline`): the victim's successor reports it
/// stalled and is given the next predecessor.
#[test]
fn a_host_that_vanishes_from_the_chain_is_reported_stalled_and_skipped() {
    let size = 24 << 20;
    let c = Cluster::local(&datacenters()).start();
    std::fs::write(
        c.path("pb.yml"),
        "name: t\nartifact: {source: art, destination: /srv/app}\ndistribution: {sharing: pipeline, seed_window: 3s, download_limit: 3MiB/s}\nservices:\n  app: {start: \"true\"}\n",
    )
    .unwrap();
    std::fs::create_dir_all(c.path("art")).unwrap();
    std::fs::write(c.path("art/blob"), noise(size, 24)).unwrap();
    let inv = rookery::config::inventory::Inventory::load(&c.dir().join("inv.yml")).unwrap();
    let hosts: Vec<usize> = (0..inv.hosts.len()).collect();
    let roster = rookery::tracker::server::roster(&inv, &hosts, Some([127, 0, 0, 1].into()));
    // The chain: the origin, then the hosts; the third host and the one after it.
    let chain: Vec<String> = roster
        .order()
        .iter()
        .map(|&m| roster.members()[m].name.clone())
        .collect();
    let said = format!("gone: {} (reported lost by {}, silent)", chain[3], chain[4]);
    vanish(&c, size, &chain[3], &[chain[4].clone()], &said);
}

/// Runs `pb.yml` on `c`, stops `victim`'s agent at a third of its copy, kills it once
/// every other host has verified, and checks: they all did, one of `fed` (the hosts
/// it fed) reported it stalled, the tracker's log (`-v`) has `tracker_says`, and the
/// run ends in exit 4 with only `victim` failed.
fn vanish(c: &Cluster, size: usize, victim: &str, fed: &[String], tracker_says: &str) {
    let d = c.dir();
    let child = c.spawn(&["-v", "--json", "distribute", "pb.yml"]);
    wait_for_a_third(d, victim, size);
    signal_agent(d, victim, "-STOP");
    let deadline = Instant::now() + Duration::from_secs(120);
    let inv = rookery::config::inventory::Inventory::load(&d.join("inv.yml")).unwrap();
    for h in inv
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .filter(|h| h != victim)
    {
        while !fetch_log(d, &h).contains("verified") {
            assert!(Instant::now() < deadline, "{h} never verified its copy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    kill_agent(d, victim);
    let (r, out) = report(child);
    assert_copies_but(d, &r, Some(victim));
    assert!(
        fed.iter()
            .any(|o| fetch_log(d, o).contains("stalled: nothing sent")),
        "none of {fed:?} reported {victim} stalled"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(tracker_says),
        "no `{tracker_says}`: {stderr}"
    );
    assert_some_hosts_failed(&out);
}

/// A host held back (its agent stopped for five seconds at a third of its copy) is
/// the furthest behind in its rack when its rack-mates finish: one that feeds it in
/// no stripe helps it, and it takes bytes from that rack-mate beside its parents.
#[test]
fn a_host_left_behind_is_helped_by_a_finished_rack_mate() {
    let size = 24 << 20;
    // Racks of eight, so that some rack-mates feed a host in none of its five stripes.
    let rack = |r: &str| {
        let hosts: Vec<String> = (1..=8)
            .map(|i| format!("{r}h{i}: {{services: [app]}}"))
            .collect();
        format!("{r}: {{hosts: {{{}}}}}", hosts.join(", "))
    };
    let c = Cluster::local(&format!(
        "  east: {{racks: {{{}, {}}}}}\n",
        rack("e1"),
        rack("e2")
    ))
    .start();
    std::fs::write(c.path("pb.yml"), playbook(", download_limit: 3MiB/s")).unwrap();
    std::fs::create_dir_all(c.path("art")).unwrap();
    std::fs::write(c.path("art/blob"), noise(size, 23)).unwrap();
    let d = c.dir();
    let planned = planned_feeders(d);
    // A host with a rack-mate that is not among its feeders.
    let (late, mates) = planned
        .iter()
        .find_map(|(h, f)| {
            let mates: Vec<&String> = planned
                .keys()
                .filter(|m| *m != h && m[..2] == h[..2] && !f.contains(*m))
                .collect();
            (!mates.is_empty()).then(|| (h.clone(), mates))
        })
        .expect("some host has a rack-mate that does not feed it");
    let child = c.spawn(&["--json", "distribute", "pb.yml"]);
    wait_for_a_third(d, &late, size);
    signal_agent(d, &late, "-STOP");
    std::thread::sleep(Duration::from_secs(5));
    signal_agent(d, &late, "-CONT");
    let (r, out) = report(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_copies_but(d, &r, None);
    let hosts = r["hosts"].as_array().unwrap();
    let log = fetch_log(d, &late);
    assert!(log.contains("helped by"), "{late} was never helped: {log}");
    let h = hosts.iter().find(|h| h["host"] == late.as_str()).unwrap();
    let fed = fed_by(h);
    assert!(
        mates.iter().any(|m| fed.get(*m).is_some_and(|&b| b > 0)),
        "{late} took nothing from {mates:?}: {fed:?}"
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
        assert_fed_as_planned(name, &from, &planned[name]);
        assert!(from.len() >= 2, "{name} has a single feeder: {from:?}");
    }
}
