//! `page_cache.lock_current` as the service's hot set (seed 000, `vmtouch -l`): the
//! supervisor of a deployed service holds the matching files of its release locked
//! in memory while the service runs, and across a switch the same supervisor locks
//! the new release's set and lets the old one go. Read from the kernel: `VmLck` and
//! the mappings of the supervisor in `/proc`.

use std::path::Path;

use crate::support::{Cluster, is_zombie, noise, write_exec};

const DATACENTERS: &str = "  east:\n    racks:\n      r1: {services: [web], hosts: {h1: ~}}\n";

/// One host, one service whose hot set is `index/**`; its start command names the
/// cluster's directory (the cluster stops what it left running by it).
/// Healthy while the release holds `ok`; the stop command notes the version it stops.
const PLAYBOOK: &str = "name: hot\nartifact: {source: art, destination: /srv/app, version: content-hash}\ndistribution:\n  seed_window: 1s\n  page_cache: {lock_current: [\"index/**\"], lock_max: 6MiB}\nservices:\n  web:\n    quorum: 0\n    start: \"{release}/bin/serve {destination}\"\n    stop: \"echo {version} >> {destination}/stops\"\n    health: \"test -e {release}/ok\"\n    health_deadline: 2s\n";

/// The build: the service, a hot index of `hot_kib` KiB, and a cold file as large
/// again that is not in the hot set; healthy or not. `index/z.idx`, 4 MiB, is in the
/// hot set too, but past `lock_max` with any index of more than 2 MiB.
fn build(dir: &Path, hot: &str, hot_kib: usize, seed: u64, healthy: bool) {
    let art = dir.join("art");
    let _ = std::fs::remove_dir_all(&art);
    std::fs::create_dir_all(art.join("index")).unwrap();
    std::fs::create_dir_all(art.join("bin")).unwrap();
    write_exec(
        &art.join("bin/serve"),
        "#!/bin/sh\nwhile :; do sleep 0.2; done\n",
    );
    std::fs::write(art.join("index").join(hot), noise(hot_kib << 10, seed)).unwrap();
    std::fs::write(art.join("cold"), noise(hot_kib << 10, seed + 1)).unwrap();
    std::fs::write(art.join("index/z.idx"), noise(4 << 20, seed + 2)).unwrap();
    if healthy {
        std::fs::write(art.join("ok"), "").unwrap();
    }
}

/// `VmLck` of a process, in KiB.
fn vm_lck(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("the supervisor (pid {pid}) is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmLck in {status}"))
}

/// The files of releases the process has mapped.
fn mapped_releases(pid: u32) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("/releases/"))
        .map(|p| p[p.find("/releases/").unwrap()..].to_string())
        .collect();
    files.sort();
    files.dedup();
    files
}

fn run_file(c: &Cluster) -> serde_json::Value {
    let path = c.root("h1").join("srv/app/.rookery/run/web.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn the_supervisor_keeps_its_releases_hot_set_locked_across_a_switch() {
    let c = Cluster::local(DATACENTERS).start();
    std::fs::write(c.path("pb.yml"), PLAYBOOK).unwrap();
    build(c.dir(), "a.idx", 3 << 10, 1, true);
    let v1 = c.run(&["--json", "deploy", "pb.yml"]).ok().version();
    let r = run_file(&c);
    let pid = r["supervisor"].as_u64().unwrap() as u32;
    assert_eq!(r["version"], v1.as_str());
    // 3 MiB of index locked; the 3 MiB cold file and the script are not, nor the
    // 4 MiB index past the 6 MiB of `lock_max` (the log says so).
    let locked = vm_lck(pid);
    eprintln!("supervisor {pid} at {v1}: VmLck {locked} kB");
    assert!(
        (3072..3072 + 64).contains(&locked),
        "VmLck of the supervisor at {v1}: {locked} kB"
    );
    assert_eq!(
        mapped_releases(pid),
        [format!("/releases/{v1}/index/a.idx")]
    );
    let log = std::fs::read_to_string(c.root("h1").join("srv/app/.rookery/web.log")).unwrap();
    assert!(
        log.contains(
            "page_cache.lock_max (6291456 bytes) reached: 1 matching files (4194304 bytes)"
        ),
        "{log}"
    );

    // The next build's hot index is another file, of another size.
    build(c.dir(), "b.idx", 5 << 10, 3, true);
    let v2 = c.run(&["--json", "deploy", "pb.yml"]).ok().version();
    assert_ne!(v1, v2);
    let r = run_file(&c);
    assert_eq!(
        r["supervisor"].as_u64().unwrap() as u32,
        pid,
        "the same supervisor runs the new release"
    );
    assert_eq!(r["version"], v2.as_str());
    let locked = vm_lck(pid);
    eprintln!("supervisor {pid} at {v2}: VmLck {locked} kB");
    assert!(
        (5120..5120 + 64).contains(&locked),
        "VmLck of the supervisor at {v2}: {locked} kB (the old set unlocked, the new one locked)"
    );
    assert_eq!(
        mapped_releases(pid),
        [format!("/releases/{v2}/index/b.idx")],
        "only the new release's hot set is mapped"
    );
    let stops = std::fs::read_to_string(c.root("h1").join("srv/app/stops")).unwrap();
    assert_eq!(
        stops,
        format!("{v1}\n"),
        "the stop command ran for the old release"
    );
    let current = std::fs::read_link(c.root("h1").join("srv/app/current")).unwrap();
    assert!(current.ends_with(&v2), "{}", current.display());
    // The service runs from the new release.
    let service = r["service"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{service}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.contains(&format!("/releases/{v2}/bin/serve")),
        "{cmdline}"
    );
}

#[test]
fn a_release_that_fails_its_health_check_leaves_the_old_hot_set_locked_again() {
    let c = Cluster::local(DATACENTERS).start();
    std::fs::write(c.path("pb.yml"), PLAYBOOK).unwrap();
    build(c.dir(), "a.idx", 3 << 10, 1, true);
    let v1 = c.run(&["--json", "deploy", "pb.yml"]).ok().version();
    let first = run_file(&c)["supervisor"].as_u64().unwrap() as u32;
    assert!((3072..3072 + 64).contains(&vm_lck(first)));

    // The next build never turns healthy: the supervisor that took the switch stops,
    // and the switch back starts one on the old release, which locks its set again.
    build(c.dir(), "b.idx", 5 << 10, 3, false);
    let r = c.run(&["--json", "deploy", "pb.yml"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let host = &r.record()["services"][0]["hosts"][0];
    assert!(
        host["error"]
            .as_str()
            .unwrap()
            .ends_with(&format!("; switched back to {v1}")),
        "{host}"
    );
    let rf = run_file(&c);
    assert_eq!(rf["version"], v1.as_str());
    let pid = rf["supervisor"].as_u64().unwrap() as u32;
    assert_ne!(
        pid, first,
        "the supervisor of the failed release has stopped"
    );
    assert!(
        is_zombie(first),
        "the supervisor of the failed release still runs"
    );
    let locked = vm_lck(pid);
    eprintln!("supervisor {pid} back at {v1}: VmLck {locked} kB");
    assert!((3072..3072 + 64).contains(&locked), "VmLck: {locked} kB");
    assert_eq!(
        mapped_releases(pid),
        [format!("/releases/{v1}/index/a.idx")]
    );
}
