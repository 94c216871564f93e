//! Real BitTorrent transfers between real processes on loopback: `rookery tracker`,
//! `rookery agent seed` (the origin) and several `rookery agent fetch`, plus Debian's
//! aria2c. Nothing here is faked: bytes cross TCP sockets between processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    BIN, Cluster, Proc, art_torrent, free_port, is_zombie, noise, run_ok, running, snapshot, spawn,
    start, succeed, wait_for_port, wait_until,
};

/// One test's cluster: local hosts, an artifact, its metainfo, a tracker and an
/// origin.
struct Swarm {
    cluster: Cluster,
    tracker_port: u16,
    origin_port: u16,
    _tracker: Proc,
}

const HOSTS: [&str; 4] = ["e1a", "e1b", "w1a", "w1b"];

impl Swarm {
    /// Starts a tracker for the metainfo of `art/` (which the caller has filled).
    fn new(build: impl FnOnce(&Path)) -> Swarm {
        let cluster = Cluster::local(
            "  east: {racks: {e1: {hosts: {e1a: {}, e1b: {}}}}}\n  west: {racks: {w1: {hosts: {w1a: {}, w1b: {}}}}}\n",
        )
        .start();
        let d = cluster.dir();
        std::fs::create_dir_all(d.join("art")).unwrap();
        build(&d.join("art"));
        let (tracker_port, tracker) = publish(d);
        Swarm {
            cluster,
            tracker_port,
            origin_port: free_port(),
            _tracker: tracker,
        }
    }

    fn path(&self) -> &Path {
        self.cluster.dir()
    }

    fn announce(&self, host: &str) -> String {
        format!(
            "http://127.0.0.1:{}/announce?host={host}",
            self.tracker_port
        )
    }

    /// The origin: serves `art/` read-only until terminated.
    fn origin(&self, extra: &[&str]) -> Proc {
        let listen = format!("127.0.0.1:{}", self.origin_port);
        let tracker = self.announce("controller");
        let mut args = vec![
            "agent",
            "seed",
            "--torrent",
            "art.torrent",
            "--source",
            "art",
            "--host",
            "controller",
            "--listen",
            &listen,
            "--tracker",
            &tracker,
        ];
        args.extend_from_slice(extra);
        spawn(self.path(), &args)
    }

    /// `rookery agent fetch --torrent art.torrent --host HOST`, not yet run.
    fn fetch_command(&self, host: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path()).args([
            "agent",
            "fetch",
            "--torrent",
            "art.torrent",
            "--host",
            host,
        ]);
        cmd
    }

    /// `agent fetch` for `host` into `hosts/<host>`, version `v1` unless overridden.
    fn fetch(&self, host: &str, extra: &[&str]) -> Proc {
        let listen = format!("127.0.0.1:{}", free_port());
        let tracker = self.announce(host);
        let dest = format!("hosts/{host}");
        let origin = format!("127.0.0.1:{}", self.origin_port);
        let mut args = vec![
            "--listen",
            &listen,
            "--tracker",
            &tracker,
            "--destination",
            &dest,
            "--origin",
            &origin,
        ];
        if !extra.contains(&"--stall-timeout") {
            args.extend_from_slice(&["--stall-timeout", "60s"]);
        }
        if !extra.contains(&"--seed-window") {
            args.extend_from_slice(&["--seed-window", "3s"]);
        }
        if !extra.contains(&"--version") {
            args.extend_from_slice(&["--version", "v1"]);
        }
        args.extend_from_slice(extra);
        start(self.fetch_command(host).args(&args))
    }
}

/// Waits until 64 blocks of `staging` are on disk: the transfer is under way.
#[track_caller]
fn wait_receiving(staging: &Path, what: &str) {
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || std::fs::metadata(staging).map(|m| m.blocks()).unwrap_or(0) >= 64,
        || what,
    );
}

/// Writes the metainfo of `art/` and starts a tracker for it.
fn publish(d: &Path) -> (u16, Proc) {
    art_torrent(d);
    tracker(d, &[])
}

/// Starts `rookery -i inv.yml tracker` for `art.torrent` with `extra` arguments;
/// its port and process.
fn tracker(d: &Path, extra: &[&str]) -> (u16, Proc) {
    let tracker_port = free_port();
    let listen = format!("127.0.0.1:{tracker_port}");
    let mut args = vec![
        "-i",
        "inv.yml",
        "tracker",
        "--listen",
        &listen,
        "--torrent",
        "art.torrent",
    ];
    args.extend_from_slice(extra);
    let tracker = spawn(d, &args);
    wait_for_port(tracker_port);
    (tracker_port, tracker)
}

/// Waits for an agent and returns its result line (and its exit status).
fn result(p: &mut Proc) -> (serde_json::Value, bool) {
    let stdout = p.0.stdout.take().unwrap();
    let mut result = serde_json::Value::Null;
    for line in BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "result" {
            result = v;
        }
    }
    let mut err = String::new();
    p.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = p.0.wait().unwrap();
    assert!(!result.is_null(), "no result line; stderr: {err}");
    (result, status.success())
}

/// The tree the issue asks for: empty files, an empty directory, an executable, a
/// symlink, more than 1,000 small files and one large file.
fn full_tree(art: &Path) {
    std::fs::create_dir_all(art.join("bin")).unwrap();
    std::fs::create_dir_all(art.join("empty/inner")).unwrap();
    std::fs::create_dir_all(art.join("small")).unwrap();
    std::fs::write(art.join("bin/app"), "#!/bin/sh\necho app\n").unwrap();
    std::fs::set_permissions(art.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(art.join("bin/readonly"), "r").unwrap();
    std::fs::set_permissions(
        art.join("bin/readonly"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::write(art.join("zero"), "").unwrap();
    std::fs::write(art.join("small/zero-too"), "").unwrap();
    for i in 0..1100 {
        std::fs::write(art.join(format!("small/f{i:04}")), format!("file {i}\n")).unwrap();
    }
    std::fs::write(art.join("large.bin"), noise(24 << 20, 7)).unwrap();
    symlink("bin/app", art.join("run")).unwrap();
}

#[test]
fn a_tree_arrives_identical_on_four_agents_and_the_origin_uploads_about_one_copy() {
    let swarm = Swarm::new(full_tree);
    let mut origin = swarm.origin(&[]);
    let mut agents: Vec<Proc> = HOSTS.iter().map(|h| swarm.fetch(h, &[])).collect();
    let want = snapshot(&swarm.path().join("art"));
    let total: u64 = want
        .values()
        .filter(|v| v.0 == 'f')
        .map(|v| v.2.len() as u64)
        .sum();
    let mut from_peers = 0;
    let mut seeders = Vec::new();
    for (host, agent) in HOSTS.iter().zip(&mut agents) {
        let (r, ok) = result(agent);
        seeders.push(r["seeder_pid"].as_u64().unwrap() as u32);
        assert!(ok && r["ok"] == true, "{host}: {r}");
        assert_eq!(r["bytes"], total);
        from_peers += r["bytes_from_peers"].as_u64().unwrap();
        let got = snapshot(&swarm.path().join(format!("hosts/{host}/releases/v1")));
        assert_eq!(got.len(), want.len(), "{host}: entry count");
        for (path, entry) in &want {
            assert_eq!(got.get(path), Some(entry), "{host}: {}", path.display());
        }
    }
    // The agents exit after reporting; give the seeders' counters a moment, then
    // read the origin's own upload counter.
    let out = origin.terminate();
    let uploaded: u64 = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "seeded")
        .map(|v| v["uploaded"].as_u64().unwrap())
        .next()
        .expect("origin reported its upload");
    assert!(
        uploaded <= total * 3 / 2,
        "origin uploaded {uploaded} bytes for a {total}-byte artifact and 4 hosts"
    );
    assert!(
        from_peers >= total * 2,
        "hosts fed each other only {from_peers} bytes"
    );
    // The agents returned while their background seeders went on; after the 3 s
    // window every seeder has exited.
    let deadline = Instant::now() + Duration::from_secs(20);
    for pid in seeders {
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "seeder {pid} is still running");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn a_crafted_metainfo_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let pieces = "p".repeat(20);
    for (name, path) in [("dots", "l2:..4:evile"), ("abs", "l0:4:evile")] {
        let torrent = format!(
            "d4:infod5:filesld6:lengthi1e4:path{path}ee4:name3:art12:piece lengthi65536e6:pieces20:{pieces}7:privatei1eee"
        );
        std::fs::write(dir.path().join(format!("{name}.torrent")), torrent).unwrap();
        let out = Command::new(BIN)
            .args([
                "agent",
                "fetch",
                "--torrent",
                &format!("{name}.torrent"),
                "--host",
                "h",
            ])
            .args([
                "--destination",
                "dest",
                "--version",
                "v1",
                "--peer",
                "127.0.0.1:9",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("would escape the destination"), "{err}");
        assert!(
            !dir.path().join("dest").exists(),
            "{name}: the agent wrote something"
        );
    }
}

#[test]
fn a_leecher_killed_mid_transfer_does_not_stop_the_others() {
    let swarm = Swarm::new(|art| std::fs::write(art.join("blob"), noise(12 << 20, 3)).unwrap());
    let _origin = swarm.origin(&[]);
    // Slow every agent down so the kill lands mid-transfer; the victim stays in the
    // foreground so the process killed is the one transferring.
    let slow = ["--download-limit", "4MiB/s"];
    let mut victim = swarm.fetch("e1b", &[&slow[..], &["--foreground"]].concat());
    let mut others: Vec<Proc> = ["e1a", "w1a", "w1b"]
        .iter()
        .map(|h| swarm.fetch(h, &slow))
        .collect();
    let staging = swarm.path().join("hosts/e1b/releases/.staging-v1/blob");
    wait_receiving(&staging, "the victim never started receiving");
    victim.0.kill().unwrap();
    let _ = victim.0.wait();
    for agent in &mut others {
        let (r, ok) = result(agent);
        assert!(ok && r["ok"] == true, "{r}");
    }
    assert!(!swarm.path().join("hosts/e1b/releases/v1").exists());
}

#[test]
fn once_every_piece_is_in_the_swarm_the_origin_may_die() {
    let swarm = Swarm::new(|art| std::fs::write(art.join("blob"), noise(12 << 20, 5)).unwrap());
    let mut origin = swarm.origin(&[]);
    // The first host of the chain downloads at full speed; the rest are capped, so
    // they are far from done when it finishes and the origin goes away.
    // It seeds long enough to outlive the origin's part.
    let mut first = swarm.fetch("e1a", &["--seed-window", "60s"]);
    let slow = ["--download-limit", "3MiB/s"];
    let mut others: Vec<Proc> = ["e1b", "w1a", "w1b"]
        .iter()
        .map(|h| swarm.fetch(h, &slow))
        .collect();
    let (r, ok) = result(&mut first);
    assert!(ok && r["ok"] == true, "{r}");
    let seeder = r["seeder_pid"].as_u64().unwrap();
    origin.terminate();
    for agent in &mut others {
        let (r, ok) = result(agent);
        assert!(ok && r["ok"] == true, "{r}");
        assert!(r["bytes_from_peers"].as_u64().unwrap() > 0, "{r}");
    }
    // SAFETY: kill(2) on the seeder the agent reported.
    unsafe { libc::kill(seeder as i32, libc::SIGTERM) };
}

/// The next release of `art/`: a fresh metainfo, tracker and origin for its info
/// hash, and `host`'s fetch of it as `v2`, which must succeed. Returns the swarm,
/// the tracker and origin (alive while held) and the fetch's result.
fn next_release(swarm: Swarm, host: &str) -> (Swarm, [Proc; 2], serde_json::Value) {
    let (tracker_port, tracker) = publish(swarm.path());
    let next = Swarm {
        tracker_port,
        origin_port: free_port(),
        ..swarm
    };
    let origin = next.origin(&[]);
    let (r, ok) = result(&mut next.fetch(host, &["--version", "v2"]));
    assert!(ok, "{r}");
    (next, [tracker, origin], r)
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn a_second_release_reuses_unchanged_files() {
    let swarm = Swarm::new(|art| {
        std::fs::write(art.join("same"), noise(4 << 20, 1)).unwrap();
        std::fs::write(art.join("changed"), noise(1 << 20, 2)).unwrap();
    });
    let _origin = swarm.origin(&[]);
    let (r, ok) = result(&mut swarm.fetch("e1a", &[]));
    assert!(ok, "{r}");
    assert_eq!(r["bytes_reused"], 0);
    // Version 2 changes one file; the host starts from v1 and fetches only that.
    std::fs::write(swarm.path().join("art/changed"), noise(1 << 20, 9)).unwrap();
    let (swarm2, _procs, r) = next_release(swarm, "e1a");
    assert_eq!(r["bytes_reused"], 4 << 20, "{r}");
    assert_eq!(r["bytes_from_origin"], 1 << 20, "{r}");
    let v2 = swarm2.path().join("hosts/e1a/releases/v2");
    assert_eq!(
        std::fs::read(v2.join("changed")).unwrap(),
        noise(1 << 20, 9)
    );
    assert_eq!(std::fs::read(v2.join("same")).unwrap(), noise(4 << 20, 1));
    // Not copied: the same file as v1's, linked.
    let v1 = swarm2.path().join("hosts/e1a/releases/v1");
    assert_eq!(ino(&v2.join("same")), ino(&v1.join("same")));
}

/// A file unchanged since the last release is linked, and its pieces are not
/// checked again, only while the host's copy of the last release is as it was
/// installed; a piece that straddles a linked file and a changed one is fetched
/// without writing into the linked file.
#[test]
fn only_files_untouched_since_the_last_release_are_linked_into_the_next() {
    // Lengths that are not whole pieces: pieces straddle the files.
    let (same, tampered) = (noise((4 << 20) + 1000, 1), noise((1 << 20) + 333, 3));
    let swarm = Swarm::new(|art| {
        std::fs::write(art.join("same"), &same).unwrap();
        std::fs::write(art.join("tampered"), &tampered).unwrap();
        std::fs::write(art.join("changed"), noise((1 << 20) + 77, 2)).unwrap();
    });
    let _origin = swarm.origin(&[]);
    let (r, ok) = result(&mut swarm.fetch("e1a", &[]));
    assert!(ok, "{r}");
    let v1 = swarm.path().join("hosts/e1a/releases/v1");
    // Something on the host writes into the installed release.
    let mut bad = tampered.clone();
    bad[5000] ^= 0xff;
    std::fs::write(v1.join("tampered"), &bad).unwrap();
    let changed = noise((1 << 20) + 77, 9);
    std::fs::write(swarm.path().join("art/changed"), &changed).unwrap();
    let (swarm2, _procs, r) = next_release(swarm, "e1a");
    let v2 = swarm2.path().join("hosts/e1a/releases/v2");
    assert_eq!(std::fs::read(v2.join("changed")).unwrap(), changed);
    // Linked, and not written: v1's copy is still the original.
    assert_eq!(ino(&v2.join("same")), ino(&v1.join("same")));
    assert_eq!(std::fs::read(v1.join("same")).unwrap(), same);
    // Changed since v1 was installed: copied, checked and repaired, not linked.
    assert_ne!(ino(&v2.join("tampered")), ino(&v1.join("tampered")));
    assert_eq!(std::fs::read(v2.join("tampered")).unwrap(), tampered);
    assert!(
        r["bytes_from_origin"].as_u64().unwrap() > (1 << 20) + 77,
        "{r}"
    );
}

#[test]
fn aria2c_downloads_from_a_rookery_origin_through_the_rookery_tracker() {
    let swarm = Swarm::new(|art| {
        std::fs::create_dir_all(art.join("d")).unwrap();
        std::fs::write(art.join("d/blob"), noise(3 << 20, 11)).unwrap();
        std::fs::write(art.join("note"), "hello\n").unwrap();
    });
    let _origin = swarm.origin(&[]);
    let out = Command::new("aria2c")
        .current_dir(swarm.path())
        .args([
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--seed-time=0",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--listen-port",
            &free_port().to_string(),
            "--bt-tracker",
            &swarm.announce("w1b"),
            "--dir",
            "aria",
            "art.torrent",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run aria2c ({e}): install Debian's `aria2` package (scripts/test does)")
        });
    assert!(
        out.status.success(),
        "aria2c: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read(swarm.path().join("aria/art/d/blob")).unwrap(),
        noise(3 << 20, 11)
    );
}

/// A peer that speaks just enough BitTorrent to claim every piece and answer every
/// request with garbage.
fn corrupt_peer(info_hash: [u8; 20], pieces: usize) -> (u16, std::thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut hs = [0u8; 68];
        if s.read_exact(&mut hs).is_err() {
            return 0;
        }
        let mut reply = vec![19u8];
        reply.extend_from_slice(b"BitTorrent protocol");
        reply.extend_from_slice(&[0; 8]);
        reply.extend_from_slice(&info_hash);
        reply.extend_from_slice(b"-XX0000-corruptpeer!");
        // Bitfield: every piece (a multiple of 8 here).
        reply.extend_from_slice(&(1 + pieces as u32 / 8).to_be_bytes());
        reply.push(5);
        reply.extend(std::iter::repeat_n(0xffu8, pieces / 8));
        reply.extend_from_slice(&[0, 0, 0, 1, 1]); // unchoke
        if s.write_all(&reply).is_err() {
            return 0;
        }
        let mut served = 0u64;
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return served;
            }
            let len = u32::from_be_bytes(len) as usize;
            let mut msg = vec![0u8; len];
            if s.read_exact(&mut msg).is_err() {
                return served;
            }
            if len == 13 && msg[0] == 6 {
                let (index, begin, length) = (&msg[1..5], &msg[5..9], &msg[9..13]);
                let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
                let mut piece = ((9 + length) as u32).to_be_bytes().to_vec();
                piece.push(7);
                piece.extend_from_slice(index);
                piece.extend_from_slice(begin);
                piece.extend(std::iter::repeat_n(0xAAu8, length));
                if s.write_all(&piece).is_err() {
                    return served;
                }
                served += length as u64;
            }
        }
    });
    (port, handle)
}

#[test]
fn a_peer_sending_corrupt_data_is_detected_and_the_pieces_fetched_again() {
    // 256 pieces of 64 KiB: more than one peer's request window (512 blocks of
    // 16 KiB, 128 pieces; see `engine.rs`), so the origin cannot reserve them all
    // before the corrupt peer is asked.
    let swarm = Swarm::new(|art| std::fs::write(art.join("blob"), noise(16 << 20, 13)).unwrap());
    let inspect = run_ok(
        swarm.path(),
        &["--json", "torrent", "inspect", "art.torrent"],
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let hex = v["info_hash"].as_str().unwrap();
    let hash: Vec<u8> = (0..20)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let (bad_port, bad) = corrupt_peer(hash.try_into().unwrap(), 256);
    // The origin is slowed down, so the corrupt peer gets requests too.
    let _origin = swarm.origin(&["--upload-limit", "4MiB/s"]);
    wait_for_port(swarm.origin_port);
    let listen = format!("127.0.0.1:{}", free_port());
    succeed(
        swarm
            .fetch_command("e1a")
            .args(["--listen", &listen])
            .args([
                "--destination",
                "dest",
                "--version",
                "v1",
                "--foreground",
                "--seed-window",
                "0s",
            ])
            .args(["--peer", &format!("127.0.0.1:{bad_port}")])
            .args(["--peer", &format!("127.0.0.1:{}", swarm.origin_port)]),
    );
    assert_eq!(
        std::fs::read(swarm.path().join("dest/releases/v1/blob")).unwrap(),
        noise(16 << 20, 13)
    );
    let served = bad.join().unwrap();
    assert!(served > 0, "the corrupt peer was never asked for anything");
}

/// A local cluster of `datacenters` whose hosts run `app`, with `pb.yml` shipping
/// `art/` (64 KiB pieces, seeding `seed_window`), which the caller fills.
fn app_cluster(datacenters: &str, seed_window: &str) -> Cluster {
    let c = Cluster::local(datacenters).start();
    std::fs::write(
        c.path("pb.yml"),
        format!("name: t\nartifact: {{source: art, destination: /srv/app}}\ndistribution: {{seed_window: {seed_window}, piece_size: 64KiB}}\nservices:\n  app: {{start: \"true\"}}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(c.path("art")).unwrap();
    c
}

/// `prepare` hashes the artifact ahead: the distribute that follows reads no file
/// (every hash reused) and distributes the version `prepare` named.
#[test]
fn a_prepared_artifact_is_not_read_again_by_the_distribute_that_follows() {
    let c = app_cluster(
        "  east: {racks: {e1: {hosts: {e1a: {services: [app]}, e1b: {services: [app]}}}}}\n",
        "1s",
    );
    let d = c.dir();
    std::fs::create_dir_all(d.join("art/sub")).unwrap();
    std::fs::write(d.join("art/blob"), noise(3 << 20, 21)).unwrap();
    std::fs::write(d.join("art/sub/small"), "small\n").unwrap();
    let p = c.run(&["--json", "prepare", "pb.yml"]).ok().report();
    assert_eq!(p["origin"], "controller", "{p}");
    let r = c.run(&["-v", "--json", "distribute", "pb.yml"]).ok();
    assert_eq!(r.report()["version"], p["version"], "{}", r.stdout);
    assert!(
        r.stderr.contains("file_bytes_read=0 piece_bytes_read=0"),
        "{}",
        r.stderr
    );
}

#[test]
fn distribute_reports_every_host_from_the_engines_counters() {
    let c = app_cluster(
        "  east: {racks: {e1: {hosts: {e1a: {services: [app]}, e1b: {services: [app]}}}}}\n  west: {racks: {w1: {hosts: {w1a: {services: [app]}, w1b: {services: [app]}}}}}\n",
        "6s",
    );
    let d = c.dir();
    std::fs::write(d.join("art/blob"), noise(6 << 20, 21)).unwrap();
    let run = || c.run(&["--json", "distribute", "pb.yml"]).ok().report();
    let r = run();
    let total = 6u64 << 20;
    assert_eq!(r["artifact_bytes"], total);
    // `sharing: auto` (not set): four hosts get the chain.
    assert_eq!(r["sharing"], "pipeline", "{r}");
    let uploaded = r["origin_uploaded_bytes"].as_u64().unwrap();
    assert!(uploaded >= total && uploaded <= total * 3 / 2, "{r}");
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 4);
    let version = r["version"].as_str().unwrap();
    for h in hosts {
        assert_eq!(h["ok"], true, "{h}");
        for key in [
            "host",
            "dc",
            "rack",
            "seconds",
            "bytes_from_origin",
            "bytes_from_peers",
            "bytes_reused",
        ] {
            assert!(!h[key].is_null(), "{key} missing in {h}");
        }
        let got = d.join(format!(
            "hosts/{}/srv/app/releases/{version}/blob",
            h["host"].as_str().unwrap()
        ));
        assert_eq!(std::fs::read(got).unwrap(), noise(6 << 20, 21));
    }
    let fetched: u64 = hosts
        .iter()
        .map(|h| h["bytes_from_origin"].as_u64().unwrap() + h["bytes_from_peers"].as_u64().unwrap())
        .sum();
    assert_eq!(fetched, 4 * total, "{r}");
    // Unchanged artifact: nothing travels.
    let again = run();
    for h in again["hosts"].as_array().unwrap() {
        assert_eq!(h["bytes_reused"], total, "{h}");
        assert_eq!(h["bytes_from_origin"], 0, "{h}");
    }
}

/// Seed 000's point about rsync against scp: a fetch killed half way starts again from
/// the pieces it had verified, not from byte zero.
#[test]
fn a_fetch_killed_half_way_resumes_from_the_pieces_it_verified() {
    let total: u64 = 16 << 20;
    let swarm = Swarm::new(|art| {
        std::fs::write(art.join("blob"), noise(total as usize, 17)).unwrap();
    });
    let _origin = swarm.origin(&[]);
    let mut victim = swarm.fetch("e1a", &["--download-limit", "4MiB/s", "--foreground"]);
    let staging = swarm.path().join("hosts/e1a/releases/.staging-v1/blob");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Half of the blob on disk (512-byte blocks), then SIGKILL: nothing is cleaned up.
    while std::fs::metadata(&staging)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
        < total / 2
    {
        assert!(Instant::now() < deadline, "the fetch never got half way");
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.0.kill().unwrap();
    let _ = victim.0.wait();
    assert!(!swarm.path().join("hosts/e1a/releases/v1").exists());

    let (r, ok) = result(&mut swarm.fetch("e1a", &[]));
    assert!(ok && r["ok"] == true, "{r}");
    let moved = r["bytes_from_origin"].as_u64().unwrap() + r["bytes_from_peers"].as_u64().unwrap();
    let reused = r["bytes_reused"].as_u64().unwrap();
    eprintln!("rerun after the kill: moved {moved}, reused {reused} of {total}");
    // What was verified before the kill stays; a piece or two in flight may travel again.
    assert!(
        reused >= total * 2 / 5,
        "only {reused} of {total} bytes were kept: {r}"
    );
    assert!(
        moved <= total * 3 / 5,
        "the rerun moved {moved} of {total} bytes: {r}"
    );
    assert_eq!(
        std::fs::read(swarm.path().join("hosts/e1a/releases/v1/blob")).unwrap(),
        noise(total as usize, 17)
    );
}

/// A fetch that fails says why in its log on the host, not only in the result line
/// the controller reads.
#[test]
fn a_failed_fetch_logs_why_on_the_host() {
    let swarm = Swarm::new(|art| std::fs::write(art.join("blob"), noise(1 << 20, 8)).unwrap());
    // No origin: nothing can arrive.
    let mut agent = swarm.fetch("e1a", &["--stall-timeout", "2s"]);
    let (r, ok) = result(&mut agent);
    assert!(!ok && r["ok"] == false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("no progress for 2s"),
        "{r}"
    );
    let log =
        std::fs::read_to_string(swarm.path().join("hosts/e1a/.rookery/fetch-v1.log")).unwrap();
    assert!(
        log.contains("the fetch failed: no progress for 2s"),
        "{log}"
    );
}

/// Issue 18 item 11: the controller dies mid-transfer (its tracker and origin with
/// it) and the SSH session drops the foreground half of `agent fetch`. The detached
/// half must not retry dead peers until its stall timeout (10 minutes here): it
/// gives up once the tracker has been silent with nothing arriving, says so in its
/// log, and keeps the partial copy staged for the next run.
#[test]
fn a_fetch_whose_deploy_is_gone_gives_up_instead_of_retrying_dead_peers() {
    let mut swarm = Swarm::new(|art| std::fs::write(art.join("blob"), noise(24 << 20, 5)).unwrap());
    let mut origin = swarm.origin(&["--upload-limit", "2MiB/s"]);
    let mut parent = swarm.fetch("e1a", &["--stall-timeout", "10m"]);
    let staging = swarm.path().join("hosts/e1a/releases/.staging-v1/blob");
    wait_receiving(&staging, "the fetch never started receiving");
    // The controller goes: tracker, origin, and the foreground half of the fetch.
    let _ = swarm._tracker.0.kill();
    let _ = origin.0.kill();
    let _ = parent.0.kill();
    let _ = parent.0.wait();
    let pattern = "agent fetch .*--destination hosts/e1a";
    let alive = || running(pattern);
    let deadline = Instant::now() + Duration::from_secs(90);
    while alive() {
        assert!(
            Instant::now() < deadline,
            "the detached fetch still runs 90 s after its deploy went"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(swarm.path().join("hosts/e1a/.rookery/fetch-v1.log"))
        .unwrap_or_default();
    assert!(
        log.contains("has not answered for 15s and no piece arrived meanwhile"),
        "{log}"
    );
    assert!(staging.exists(), "the partial copy was not kept");
}

/// Issue 18 item 11: a fetch refused after its staging directory was made (here the
/// engine cannot bind its listen address) leaves no staging directory behind, and
/// its log on the host says why.
#[test]
fn a_fetch_refused_at_start_leaves_no_staging_and_logs_why() {
    let swarm = Swarm::new(|art| std::fs::write(art.join("blob"), noise(1 << 20, 4)).unwrap());
    // 192.0.2.1 (TEST-NET-1) is no address of this machine: binding it fails, and
    // nothing is sent anywhere.
    let out = swarm
        .fetch_command("e1a")
        .args([
            "--listen",
            "192.0.2.1:0",
            "--tracker",
            &swarm.announce("e1a"),
        ])
        .args(["--destination", "hosts/e1a", "--version", "v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let result = String::from_utf8_lossy(&out.stdout);
    assert!(result.contains("\"ok\":false"), "{result}");
    let releases = swarm.path().join("hosts/e1a/releases");
    let left: Vec<String> = std::fs::read_dir(&releases)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let log = std::fs::read_to_string(swarm.path().join("hosts/e1a/.rookery/fetch-v1.log"))
        .unwrap_or_default();
    assert!(
        log.contains("the fetch failed: starting the BitTorrent engine on 192.0.2.1:0"),
        "{log}"
    );
}

/// `rookery tracker --withdrawn FILE` withdraws the hosts named in the file, also
/// those added while it runs, as the embedded tracker withdraws a host whose agent
/// failed: `c`, fed by its chain predecessor `b` (and `a`), is fed by `a` alone once
/// `b` is named there.
#[test]
fn a_standalone_tracker_withdraws_the_hosts_named_in_its_file() {
    let cluster = Cluster::local("  east: {racks: {e1: {hosts: {a: {}, b: {}, c: {}}}}}\n").start();
    let d = cluster.dir();
    std::fs::create_dir_all(d.join("art")).unwrap();
    std::fs::write(d.join("art/blob"), noise(1 << 20, 5)).unwrap();
    art_torrent(d);
    let inspect = run_ok(d, &["--json", "torrent", "inspect", "art.torrent"]);
    let hash: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let hash = hash["info_hash"].as_str().unwrap();
    let escaped: String = (0..hash.len())
        .step_by(2)
        .map(|i| format!("%{}", &hash[i..i + 2]))
        .collect();
    std::fs::write(d.join("withdrawn"), "").unwrap();
    let (port, mut tracker) = tracker(d, &["-v", "--withdrawn", "withdrawn"]);
    let log = crate::support::Lines::read(tracker.0.stderr.take().unwrap());
    // Compact peers of an answer: does it name the peer on `peer_port`?
    let names = |answer: &[u8], peer_port: u16| {
        let p = peer_port.to_be_bytes();
        answer.windows(6).any(|w| w == [127, 0, 0, 1, p[0], p[1]])
    };
    let get = |host: &str, peer_port: u16| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let left = if host == "a" { 0 } else { 1 << 20 };
        write!(
            s,
            "GET /announce?info_hash={escaped}&peer_id=-RK0001-{host:0>12}&port={peer_port}&uploaded=0&downloaded=0&left={left}&compact=1&host={host} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).unwrap();
        body
    };
    // a has the copy, b fetches from a, c from b (and a).
    get("a", 7001);
    get("b", 7002);
    let before = get("c", 7003);
    assert!(names(&before, 7002), "c is not fed by b: {}", log.all());
    std::fs::write(d.join("withdrawn"), "b\n").unwrap();
    log.wait_for("withdrawn (named in withdrawn)");
    let after = get("c", 7003);
    assert!(
        names(&after, 7001) && !names(&after, 7002),
        "c is still fed by b: {}",
        log.all()
    );
    assert!(log.all().contains("host=b"), "{}", log.all());
}
