//! Build trees as they are in the field: more files than a process may open, links
//! that only escape when followed through each other, setuid bits.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BIN, Cluster, noise, run_ok, snapshot, write_exec};

/// Four local hosts in two datacenters, every one running `app`.
const DATACENTERS: &str = "  east: {racks: {e1: {hosts: {e1a: {services: [app]}, e1b: {services: [app]}}}}}\n  west: {racks: {w1: {hosts: {w1a: {services: [app]}, w1b: {services: [app]}}}}}\n";

fn playbook(extra_artifact: &str) -> String {
    format!(
        "name: t\nartifact: {{source: art, destination: /srv/app{extra_artifact}}}\ndistribution: {{seed_window: 2s}}\nservices:\n  app: {{start: \"true\"}}\n"
    )
}

/// `files` files of 1 to 4 KiB in nested directories, a few links and empty parts.
fn small_files(art: &Path, files: usize) {
    for i in 0..files {
        let dir = art.join(format!("lib/d{:02}/e{}", i % 40, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let len = 1024 + (i * 977) % 3072;
        std::fs::write(dir.join(format!("m{i:05}.py")), noise(len, i as u64)).unwrap();
    }
    std::fs::create_dir_all(art.join("bin")).unwrap();
    write_exec(&art.join("bin/tool"), "#!/bin/sh\necho tool\n");
    symlink("../lib/d01/e1", art.join("bin/lib")).unwrap();
    symlink("tool", art.join("bin/alias")).unwrap();
    std::fs::create_dir_all(art.join("var/empty")).unwrap();
    std::fs::write(art.join("var/zero"), b"").unwrap();
}

/// `rookery --json distribute` of `playbook` in `dir`, which must succeed; its report.
fn distribute(dir: &Path, playbook: &str) -> serde_json::Value {
    let out = run_ok(dir, &["--json", "distribute", "-i", "inv.yml", playbook]);
    serde_json::from_str(&out).unwrap()
}

/// The four hosts, `pb.yml` (the default playbook with `extra_artifact` added to its
/// artifact) and `files` small files in `art/`.
fn cluster(extra_artifact: &str, files: usize) -> Cluster {
    let c = Cluster::local(DATACENTERS).start();
    std::fs::write(c.path("pb.yml"), playbook(extra_artifact)).unwrap();
    small_files(&c.path("art"), files);
    c
}

/// Runs `rookery` in `dir` under `sh -c 'ulimit -n LIMIT; exec rookery ...'`: the soft
/// and the hard limit both, so rookery cannot raise its own.
fn rookery_with_open_files(dir: &Path, limit: u32, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .output()
        .unwrap()
}

/// More files than the process may open, on the origin and on every host (the agents
/// inherit the limit): each side keeps a bounded number of files open.
#[test]
fn a_tree_of_more_files_than_the_open_file_limit_arrives_whole() {
    let c = cluster("", 3000);
    let d = c.dir();
    let out = rookery_with_open_files(d, 256, &["--json", "distribute", "-i", "inv.yml", "pb.yml"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = r["version"].as_str().unwrap();
    let want = snapshot(&d.join("art"));
    assert!(want.len() > 3000, "{} entries", want.len());
    for host in ["e1a", "e1b", "w1a", "w1b"] {
        let got = snapshot(&d.join(format!("hosts/{host}/srv/app/releases/{version}")));
        assert_eq!(got.len(), want.len(), "{host}: entry count");
        for (path, entry) in &want {
            assert_eq!(got.get(path), Some(entry), "{host}: {}", path.display());
        }
    }
}

/// Each link's text stays inside the tree; followed through each other they climb
/// out of it. Refused when the metainfo is made, naming the link.
#[test]
fn a_chain_of_links_that_climbs_out_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("art");
    std::fs::create_dir_all(art.join("bin")).unwrap();
    std::fs::write(art.join("bin/tool"), b"x").unwrap();
    symlink("..", art.join("bin/up")).unwrap();
    symlink("up/..", art.join("bin/esc")).unwrap();
    symlink("esc/../..", art.join("bin/esc2")).unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["torrent", "create", "art"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "error: creating metainfo for art: symlink `bin/esc` (-> `up/..`) resolves outside the tree: only links that stay within it can be shipped\n"
    );
    assert!(!dir.path().join("art.torrent").exists());
}

/// A release that holds such a chain on disk (put there by hand, or by an older
/// rookery) is never made live: the switch resolves every link first.
#[test]
fn a_switch_refuses_a_release_whose_links_lead_out() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("dest/releases/v2");
    std::fs::create_dir_all(release.join("bin")).unwrap();
    symlink("..", release.join("bin/up")).unwrap();
    symlink("up/../..", release.join("bin/esc")).unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "agent",
            "switch",
            "--service",
            "app",
            "--host",
            "h",
            "--version",
            "v2",
            "--destination",
            "dest",
            "--start",
            "sleep 60",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("release v2: symlink `bin/esc` (-> `up/../..`) resolves outside the tree"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("dest/current").exists(),
        "current was switched"
    );
}

/// setuid and setgid are a decision: refused by default, naming the file; kept on
/// every host with `artifact.special_bits: keep`.
#[test]
fn setuid_bits_are_refused_unless_the_playbook_keeps_them() {
    let c = cluster("", 10);
    let d = c.dir();
    std::fs::write(d.join("keep.yml"), playbook(", special_bits: keep")).unwrap();
    std::fs::set_permissions(
        d.join("art/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let out = c.command(&["distribute", "pb.yml"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "`bin/tool` has the setuid bit set (mode 4755); set `artifact.special_bits: keep`"
        ),
        "{stderr}"
    );
    assert!(!d.join("hosts").exists() || !d.join("hosts/e1a/srv/app/releases").exists());

    let r = distribute(d, "keep.yml");
    let version = r["version"].as_str().unwrap();
    for host in ["e1a", "w1b"] {
        let tool = d.join(format!("hosts/{host}/srv/app/releases/{version}/bin/tool"));
        let mode = std::fs::metadata(tool).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o4755, "{host}");
    }
}

/// The next release renames 10% of the files and appends to 1%: each host moves at
/// most twice the bytes of the files whose content changed (a renamed file's content
/// did not), and ends with the new tree exactly.
#[test]
fn renames_and_appends_move_little_more_than_the_changed_files() {
    let c = Cluster::local(DATACENTERS).start();
    let d = c.dir();
    std::fs::write(
        d.join("pb.yml"),
        "name: t\nartifact: {source: art, destination: /srv/app}\ndistribution: {seed_window: 2s, piece_size: 16KiB}\nservices:\n  app: {start: \"true\"}\n",
    )
    .unwrap();
    let art = d.join("art");
    small_files(&art, 1500);
    let first = distribute(d, "pb.yml");
    let v1 = first["version"].as_str().unwrap();
    // Every 10th file moves to another directory under a new name; every 100th
    // (offset by 5, so none of those) grows by 8 KiB.
    let mut changed = 0u64;
    for i in 0..1500usize {
        let from = art.join(format!("lib/d{:02}/e{}/m{i:05}.py", i % 40, i % 3));
        if i % 10 == 0 {
            let to = art.join(format!(
                "lib/d{:02}/e{}/renamed-{i}.py",
                (i + 7) % 40,
                i % 3
            ));
            std::fs::rename(&from, to).unwrap();
        } else if i % 100 == 5 {
            let mut bytes = std::fs::read(&from).unwrap();
            bytes.extend(noise(8 << 10, 1_000_000 + i as u64));
            std::fs::write(&from, &bytes).unwrap();
            changed += bytes.len() as u64;
        }
    }
    let r = distribute(d, "pb.yml");
    let version = r["version"].as_str().unwrap();
    let want = snapshot(&art);
    for h in r["hosts"].as_array().unwrap() {
        let host = h["host"].as_str().unwrap();
        let moved =
            h["bytes_from_origin"].as_u64().unwrap() + h["bytes_from_peers"].as_u64().unwrap();
        eprintln!("{host}: moved {moved} bytes for {changed} bytes of changed files");
        assert!(
            moved <= 2 * changed,
            "{host} moved {moved} bytes for {changed} changed: {h}"
        );
        let releases = d.join(format!("hosts/{host}/srv/app/releases"));
        let got = snapshot(&releases.join(version));
        assert_eq!(got, want, "{host}");
        // A renamed file is the old one, linked (found by its content, untouched
        // since v1 was installed), not a copy.
        let ino = |p: PathBuf| std::fs::metadata(&p).unwrap().ino();
        for i in (0..1500usize).step_by(10) {
            let old = format!("lib/d{:02}/e{}/m{i:05}.py", i % 40, i % 3);
            let new = format!("lib/d{:02}/e{}/renamed-{i}.py", (i + 7) % 40, i % 3);
            assert_eq!(
                ino(releases.join(version).join(&new)),
                ino(releases.join(v1).join(&old)),
                "{host}: {new}"
            );
        }
    }
}

/// A host that cannot write one file of the tree fails naming the host and the file;
/// the other hosts are not held up.
#[test]
fn a_file_a_host_cannot_write_is_named_with_the_host() {
    let c = cluster(", version: v1", 50);
    let d = c.dir();
    // A directory where the tree has a file: no write can open it (root or not).
    let blocked = "lib/d07/e1/m00007.py";
    std::fs::create_dir_all(
        d.join("hosts/w1a/srv/app/releases/.staging-v1")
            .join(blocked)
            .join("x"),
    )
    .unwrap();
    let out = c.command(&["distribute", "pb.yml"]).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    let line = all
        .lines()
        .find(|l| l.contains("w1a") && l.contains(blocked))
        .unwrap_or_else(|| panic!("no line names w1a and {blocked}:\n{all}"));
    assert!(line.contains("Is a directory"), "{line}");
    for host in ["e1a", "e1b", "w1b"] {
        assert!(
            d.join(format!("hosts/{host}/srv/app/releases/v1")).is_dir(),
            "{host} has no release:\n{all}"
        );
    }
}
