//! The SSH transport against real sshd processes: `scripts/loopback-cluster` starts
//! one Debian sshd per host on its own 127.0.N.x address (`Cluster::ssh`), and
//! `rookery distribute` reaches them with russh, bootstraps its own binary, and runs
//! real agents.
//!
//! Each test uses its own /24 of loopback addresses so tests can run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    BIN, Cluster, Lines, Proc, Run, ctrl_c, host_states, noise, spawn_in_group, succeed, write_exec,
};

mod platforms;
mod script;
mod settings;

/// A host whose sshd is stopped with SIGSTOP: it accepts TCP connections (the kernel
/// does) and never answers. SIGCONT when dropped, so the cluster can be taken down.
struct Frozen(i32);

impl Frozen {
    fn sshd(c: &Cluster, host: &str) -> Frozen {
        let pid = c.sshd_pid(host);
        // SAFETY: kill(2) on a pid the script started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A playbook with a small random artifact, in its own directory.
struct Artifact {
    dir: tempfile::TempDir,
}

impl Artifact {
    fn new(bytes: usize) -> Artifact {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("art/bin")).unwrap();
        std::fs::write(d.join("art/blob"), noise(bytes, 7)).unwrap();
        write_exec(&d.join("art/bin/run"), "#!/bin/sh\necho hi\n");
        std::fs::write(
            d.join("pb.yml"),
            "name: t\nartifact: {source: art, destination: /srv/app}\ndistribution: {seed_window: 6s, piece_size: 64KiB}\nservices:\n  store: {start: \"true\"}\n  api: {start: \"true\"}\n  web: {start: \"true\"}\n",
        )
        .unwrap();
        Artifact { dir }
    }

    fn playbook(&self) -> PathBuf {
        self.dir.path().join("pb.yml")
    }
}

fn distribute(c: &Cluster, a: &Artifact, extra: &[&str]) -> Run {
    distribute_env(c, a, extra, &[])
}

fn distribute_env(c: &Cluster, a: &Artifact, extra: &[&str], env: &[(&str, &Path)]) -> Run {
    let pb = a.playbook();
    let mut args = vec!["distribute", pb.to_str().unwrap()];
    args.extend(extra);
    rookery(c, &args, env)
}

/// `rookery --json ARGS` against the cluster (every command here reports in JSON),
/// with `env` set.
fn rookery(c: &Cluster, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let args = [&["--json"], args].concat();
    let out = c.command(&args).envs(env.iter().copied()).output().unwrap();
    Run::from(out, &args)
}

fn host<'a>(r: &'a Run, name: &str) -> &'a serde_json::Value {
    r.json["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no report: {}", r.stderr))
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("{name} missing: {}", r.json))
}

#[test]
fn distribute_over_ssh_reaches_every_host_and_bootstraps_once() {
    let c = Cluster::ssh(4, "127.0.41").start();
    let a = Artifact::new(3 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    let version = r.json["version"].as_str().unwrap().to_string();
    for k in 1..=4 {
        let name = format!("h{k}");
        let h = host(&r, &name);
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["bootstrap"], "uploaded", "{h}");
        let rel = c.root(&name).join("srv/app/releases").join(&version);
        assert_eq!(
            std::fs::read(rel.join("blob")).unwrap(),
            noise(3 << 20, 7),
            "{name}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(rel.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o111,
            0o111,
            "{name}: bin/run lost its executable bits"
        );
        // The bootstrapped binary is this build.
        let agent = c.root(&name).join(".rookery/bin/rookery");
        assert_eq!(std::fs::read(agent).unwrap(), std::fs::read(BIN).unwrap());
    }
    // Again: the binary is there and not sent; the release is there and not fetched.
    let again = distribute(&c, &a, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for k in 1..=4 {
        let h = host(&again, &format!("h{k}"));
        assert_eq!(h["ok"], true, "{h}");
        assert_eq!(h["bootstrap"], "present", "{h}");
        assert_eq!(h["bytes_from_origin"], 0, "{h}");
        assert_eq!(h["bytes_from_peers"], 0, "{h}");
    }

    // A new file, with the binary in place on every host: the agents start together
    // (on the first run, the uploads of the binary could stagger them by more than
    // the 6 s seed window on a loaded machine, and a host that found its feeder gone
    // rightly fell back to the origin). Hosts feed each other: the origin sends
    // fewer than 3 of the 4 copies.
    let new = 3 << 20;
    std::fs::write(a.dir.path().join("art/more"), noise(new, 8)).unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    let uploaded = r.json["origin_uploaded_bytes"].as_u64().unwrap();
    assert!(
        uploaded < 3 * new as u64,
        "origin sent {uploaded} of {new} x 4: {}",
        r.json
    );
    for k in 1..=4 {
        let h = host(&r, &format!("h{k}"));
        assert_eq!(h["bootstrap"], "present", "{h}");
        assert_eq!(h["bytes_reused"], 3 << 20, "{h}");
    }
}

#[test]
fn an_unreachable_host_is_named_and_the_others_succeed() {
    let c = Cluster::ssh(3, "127.0.42").start();
    c.stop_sshd("h2");
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "exit 4 = some hosts failed\n{}", r.stderr);
    let h2 = host(&r, "h2");
    assert_eq!(h2["ok"], false);
    assert_eq!(h2["stage"], "connect");
    let err = h2["error"].as_str().unwrap();
    assert!(err.starts_with("connect: 127.0.42.3:2222: "), "{err}");
    assert!(err.contains("refused"), "{err}");
    for k in [1, 3] {
        assert_eq!(host(&r, &format!("h{k}"))["ok"], true);
    }
    assert!(
        r.stderr.contains("h2") && r.stderr.contains("FAILED"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_host_that_accepts_but_never_answers_is_named_after_the_connect_timeout() {
    let c = Cluster::ssh(3, "127.0.55").start();
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    let known = inv
        .lines()
        .find(|l| l.trim_start().starts_with("known_hosts: "))
        .unwrap()
        .to_string();
    let inv = inv.replacen(&known, &format!("{known}\n    connect_timeout: 2s"), 1);
    std::fs::write(c.inventory(), inv).unwrap();
    let _frozen = Frozen::sshd(&c, "h2");
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "exit 4 = some hosts failed\n{}", r.stderr);
    let h2 = host(&r, "h2");
    assert_eq!(h2["ok"], false, "{h2}");
    assert_eq!(h2["stage"], "connect", "{h2}");
    let err = h2["error"].as_str().unwrap();
    assert!(
        err.ends_with("@127.0.55.3:2222 did not complete the SSH handshake within 2s"),
        "{err}"
    );
    for k in [1, 3] {
        assert_eq!(host(&r, &format!("h{k}"))["ok"], true, "{}", r.json);
    }
}

#[test]
fn a_changed_host_key_stops_the_run_before_any_command() {
    let c = Cluster::ssh(3, "127.0.43").start();
    // Record another key for h2 on line 2.
    let kh = c.dir().join("known_hosts");
    let text = std::fs::read_to_string(&kh).unwrap();
    let other = std::fs::read_to_string(c.dir().join("hosts/h3/ssh_host_ed25519_key.pub")).unwrap();
    let other_key: Vec<&str> = other.split_whitespace().take(2).collect();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("[127.0.43.3]:2222 ") {
                format!("[127.0.43.3]:2222 {}", other_key.join(" "))
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        lines.iter().position(|l| l.starts_with("[127.0.43.3]")),
        Some(1)
    );
    std::fs::write(&kh, lines.join("\n") + "\n").unwrap();

    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &["--accept-new-host-keys"]);
    assert_eq!(r.code, 7, "exit 7 = host key mismatch\n{}", r.stderr);
    let expected = "error: h2: host key: HOST KEY CHANGED for [127.0.43.3]:2222: the server presented ssh-ed25519";
    assert!(r.stderr.contains(expected), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{}:2 records another ssh-ed25519 key",
            kh.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Nothing was run on any host"),
        "{}",
        r.stderr
    );
    // Not one command ran: no host got the binary.
    for k in 1..=3 {
        assert!(
            !c.root(&format!("h{k}")).join(".rookery").exists(),
            "h{k} was touched"
        );
    }
    assert_eq!(r.json, serde_json::Value::Null, "no report on stdout");
}

#[test]
fn unknown_hosts_are_refused_unless_accept_new() {
    let c = Cluster::ssh(2, "127.0.44").start();
    let kh = c.dir().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    for k in 1..=2 {
        let h = host(&r, &format!("h{k}"));
        assert_eq!(h["stage"], "host_key", "{h}");
        let e = h["error"].as_str().unwrap();
        assert!(e.contains("is not in known_hosts"), "{e}");
        assert!(e.contains("--accept-new-host-keys"), "{e}");
    }
    let r = distribute(&c, &a, &["--accept-new-host-keys"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let learned = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(learned.lines().count(), 2, "{learned}");
    assert!(
        learned.contains("[127.0.44.2]:2222 ssh-ed25519 "),
        "{learned}"
    );
    // Learned keys are then trusted without the flag.
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_failing_command_reports_its_exit_status_and_stderr() {
    let c = Cluster::ssh(2, "127.0.45").start();
    // h2's destination cannot be created: /srv is a file there.
    std::fs::write(c.root("h2").join("srv"), "not a directory").unwrap();
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let h2 = host(&r, "h2");
    assert_eq!(h2["ok"], false);
    let err = h2["error"].as_str().unwrap();
    // The metainfo upload is the first thing that writes under the destination.
    assert!(
        err.starts_with("upload: metainfo to ") && err.contains("exit status 1: mkdir: "),
        "{err}"
    );
    assert!(err.contains("Not a directory"), "{err}");
    assert_eq!(host(&r, "h1")["ok"], true);
}

#[test]
fn west_hosts_are_reached_through_a_jump_host() {
    let c = Cluster::ssh(4, "127.0.46").start();
    // west (h3, h4) through h1 (east).
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    let inv = inv.replacen("  west:\n", "  west:\n    ssh: {jump: h1}\n", 1);
    std::fs::write(c.inventory(), inv).unwrap();
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    // Only jumped hosts: nothing says where they can reach this machine.
    let r = distribute(&c, &a, &["--limit", "dc:west"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no host was reached directly"),
        "{}",
        r.stderr
    );
    let r = distribute(&c, &a, &["--limit", "dc:west", "--advertise", "127.0.0.1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A jump host that is down is named as such.
    c.stop_sshd("h1");
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4);
    let e = host(&r, "h3")["error"].as_str().unwrap().to_string();
    assert!(
        e.starts_with("connect: 127.0.46.2:2222 (jump host h1): "),
        "{e}"
    );
}

#[test]
fn an_address_in_the_inventory_wins_over_the_ssh_configs_hostname() {
    let c = Cluster::ssh(2, "127.0.58").start();
    // A `Host` block that matches h1's address and sends it nowhere: the inventory
    // wrote that address, so it is where h1 is (HostName is for names only).
    std::fs::create_dir_all(c.dir().join(".ssh")).unwrap();
    std::fs::write(
        c.dir().join(".ssh/config"),
        "Host 127.0.58.2\n    HostName 127.0.58.99\n",
    )
    .unwrap();
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &["-v"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(host(&r, "h1")["ok"], true, "{}", r.json);
    // -v: the controller's steps on stderr, with their times.
    assert!(r.stderr.contains("metainfo ready"), "{}", r.stderr);
}

#[test]
fn keys_come_from_the_ssh_config_and_from_ssh_agent() {
    let c = Cluster::ssh(2, "127.0.47").start();
    let key = c.dir().join("id_ed25519");
    // No key in the inventory: h1 gets it from ~/.ssh/config, h2 from the agent.
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    let inv = inv.replace(&format!(", key: {}", key.display()), "");
    assert!(!inv.contains("id_ed25519"), "{inv}");
    std::fs::write(c.inventory(), inv).unwrap();
    std::fs::create_dir_all(c.dir().join(".ssh")).unwrap();
    std::fs::write(
        c.dir().join(".ssh/config"),
        format!(
            "Host 127.0.47.2\n    IdentityFile {}\n\nHost *\n    ServerAliveInterval 10\n",
            key.display()
        ),
    )
    .unwrap();
    let a = Artifact::new(1 << 20);
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(host(&r, "h1")["ok"], true, "{}", r.json);
    let h2 = host(&r, "h2");
    assert_eq!(h2["stage"], "auth");
    let e = h2["error"].as_str().unwrap();
    assert!(
        e.contains("@127.0.47.3:2222 refused every key; tried no key"),
        "{e}"
    );

    // Now with an agent that holds the key.
    let sock = c.dir().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    let _agent = Proc(agent);
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    succeed(
        Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock),
    );
    let r = distribute_env(&c, &a, &[], &[("SSH_AUTH_SOCK", &sock)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
}

#[test]
fn an_inventory_host_can_be_the_origin() {
    let c = Cluster::ssh(4, "127.0.48").start();
    // h1 is the build host: it makes the metainfo, runs the tracker and seeds.
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    std::fs::write(
        c.inventory(),
        inv.replacen("cluster: loopback\n", "cluster: loopback\norigin: h1\n", 1),
    )
    .unwrap();
    let a = Artifact::new(2 << 20);
    let src = a.dir.path().join("art");
    let pb = std::fs::read_to_string(a.playbook()).unwrap();
    std::fs::write(
        a.playbook(),
        pb.replace("source: art", &format!("source: {}", src.display())),
    )
    .unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    let total = r.json["artifact_bytes"].as_u64().unwrap();
    let uploaded = r.json["origin_uploaded_bytes"].as_u64().unwrap();
    assert!(
        uploaded >= total,
        "the origin on h1 reported {uploaded} of {total}: {}",
        r.json
    );
    let from_origin: u64 = (1..=4)
        .map(|k| {
            host(&r, &format!("h{k}"))["bytes_from_origin"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(
        from_origin > 0,
        "no host counted bytes from h1's seeder: {}",
        r.json
    );
    let version = r.json["version"].as_str().unwrap();
    for k in 1..=4 {
        let rel = c
            .root(&format!("h{k}"))
            .join("srv/app/releases")
            .join(version);
        assert_eq!(std::fs::read(rel.join("blob")).unwrap(), noise(2 << 20, 7));
    }
    // The tracker and the seeder on h1 are gone with the run.
    let exe = c.root("h1").join(".rookery/bin/rookery");
    for pattern in [
        format!("{} --json", exe.display()),
        format!("{} agent seed", exe.display()),
    ] {
        let mut gone = false;
        for _ in 0..100 {
            let out = Command::new("pgrep")
                .arg("-f")
                .arg(&pattern)
                .output()
                .unwrap();
            if !out.status.success() {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(gone, "still running on h1: {pattern}");
    }
    // A host whose agent fails is named to the tracker on h1, through the file that
    // tracker follows, as the embedded tracker is told directly.
    std::fs::write(src.join("more"), noise(1 << 16, 3)).unwrap();
    let releases = c.root("h3").join("srv/app/releases");
    std::fs::rename(&releases, c.root("h3").join("srv/app/releases.away")).unwrap();
    std::fs::write(&releases, "not a directory").unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "{}\n{}", r.stderr, r.json);
    assert_eq!(host(&r, "h3")["ok"], false, "{}", r.json);
    let withdrawn = c
        .root("h1")
        .join(".rookery/origin/artifact.torrent.withdrawn");
    assert_eq!(std::fs::read_to_string(&withdrawn).unwrap(), "h3\n");

    // A relative source cannot name a path on the origin host.
    std::fs::write(a.playbook(), pb).unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "`artifact.source` is `art`: with `origin: h1` it is a path on h1 and must be absolute"
        ),
        "{}",
        r.stderr
    );
}

/// An artifact whose services stay up until stopped (quorum 1); their command line
/// names the cluster's directory, so that the cluster stops them when dropped.
fn serving_artifact(c: &Cluster) -> Artifact {
    let a = Artifact::new(1 << 20);
    let serve = a.dir.path().join("art/bin/serve");
    write_exec(&serve, "#!/bin/sh\nwhile :; do sleep 1; done\n");
    let start = format!("exec /bin/sh {{release}}/bin/serve {}", c.dir().display());
    let pb = std::fs::read_to_string(a.playbook()).unwrap().replace(
        "{start: \"true\"}",
        &format!("{{start: \"{start}\", quorum: 1, min_healthy_time: 300ms}}"),
    );
    std::fs::write(a.playbook(), pb).unwrap();
    a
}

#[test]
fn a_deploy_over_ssh_installs_rookery_starts_every_service_and_registers_it() {
    let c = Cluster::ssh(4, "127.0.49").start();
    let a = serving_artifact(&c);

    // Fresh hosts: the distribution installs the binary, the rollout finds it.
    let r = rookery(&c, &["deploy", a.playbook().to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    // With the playbook, status also asks each host what `current` points to.
    let s = rookery(&c, &["status", a.playbook().to_str().unwrap()], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    let version = s.json["last_deploy"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version in {}", s.json))
        .to_string();
    // The loopback inventory: store and api on every host, web on the even ones.
    for (service, hosts) in [("store", 4), ("api", 4), ("web", 2)] {
        let st = s.json["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == service)
            .unwrap_or_else(|| panic!("{service} missing: {}", s.json));
        assert_eq!(st["live"], hosts, "{st}");
        for h in st["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], version.as_str(), "{h}");
            assert_eq!(h["current"], version.as_str(), "{h}");
        }
    }
    for k in 1..=4 {
        let current = c.root(&format!("h{k}")).join("srv/app/current");
        assert!(
            std::fs::read_link(&current)
                .unwrap()
                .ends_with(format!("releases/{version}")),
            "{}",
            current.display()
        );
    }
}

#[test]
fn a_host_that_cannot_take_the_binary_is_left_out_and_the_others_roll() {
    let c = Cluster::ssh(4, "127.0.50").start();
    let a = serving_artifact(&c);
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let r = rookery(&c, &["distribute", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    let version = r.json["version"].as_str().unwrap().to_string();
    // h2 loses its rookery binary, and a file where its directory was stops the
    // upload of a new one.
    let bin = c.root("h2").join(".rookery/bin");
    std::fs::remove_dir_all(&bin).unwrap();
    std::fs::write(&bin, "not a directory").unwrap();

    let r = rookery(&c, &["rollout", pb], &[]);
    assert_eq!(
        r.code, 4,
        "exit 4 = some hosts did not switch\n{}\n{}",
        r.stderr, r.json
    );
    assert!(
        r.stderr
            .contains("h2: bootstrap: uploading the rookery binary to "),
        "{}",
        r.stderr
    );
    for service in r.json["services"].as_array().unwrap() {
        for h in service["hosts"].as_array().unwrap() {
            if h["host"] == "h2" {
                assert_eq!(h["state"], "unreachable", "{h}");
                let err = h["error"].as_str().unwrap();
                assert!(err.starts_with("h2: bootstrap: "), "{err}");
            } else {
                assert_eq!(h["state"], "done", "{h}");
            }
        }
    }
    for (k, switched) in [(1, true), (2, false), (3, true), (4, true)] {
        let current = c.root(&format!("h{k}")).join("srv/app/current");
        assert_eq!(
            std::fs::read_link(&current).is_ok_and(|t| t.ends_with(format!("releases/{version}"))),
            switched,
            "h{k}: {}",
            current.display()
        );
    }
}

/// Runs `deploy` to the end and returns the version it deployed.
fn deployed(c: &Cluster, pb: &str) -> String {
    let r = rookery(c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    r.json["distribution"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version in {}", r.json))
        .to_string()
}

/// What `current` points to on each host of the cluster: the release's name.
fn currents(c: &Cluster, n: usize) -> Vec<String> {
    (1..=n)
        .map(|k| {
            let link = c.root(&format!("h{k}")).join("srv/app/current");
            let target =
                std::fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
            target.file_name().unwrap().to_string_lossy().into_owned()
        })
        .collect()
}

/// [`serving_artifact`] with a health check that passes while the host has no
/// `sick` file in the destination, and always for the first release (it carries a
/// file `first`, which [`second_release`] removes): a switch back comes up healthy.
/// `extra` goes into every service's settings.
fn sickly_artifact(c: &Cluster, extra: &str) -> Artifact {
    let a = serving_artifact(c);
    std::fs::write(a.dir.path().join("art/first"), "").unwrap();
    let text = std::fs::read_to_string(a.playbook()).unwrap().replace(
        "min_healthy_time: 300ms}",
        &format!("min_healthy_time: 300ms, health: \"test -e {{release}}/first -o ! -e {{destination}}/sick\", health_deadline: 2s{extra}}}"),
    );
    std::fs::write(a.playbook(), text).unwrap();
    a
}

/// Makes the artifact of [`sickly_artifact`] a new release, unhealthy where `sick` is.
fn second_release(a: &Artifact) {
    std::fs::remove_file(a.dir.path().join("art/first")).unwrap();
    std::fs::write(a.dir.path().join("art/second"), "").unwrap();
}

#[test]
fn a_failing_health_check_over_ssh_switches_the_host_back_and_the_next_run_finishes() {
    let c = Cluster::ssh(4, "127.0.51").start();
    let a = sickly_artifact(&c, "");
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    assert_eq!(currents(&c, 4), [v1.as_str(); 4]);

    // The second release fails its health check on every host while `sick` is there.
    second_release(&a);
    for k in 1..=4 {
        std::fs::write(c.root(&format!("h{k}")).join("srv/app/sick"), "").unwrap();
    }
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(
        r.code, 8,
        "exit 8 = the deploy stopped\n{}\n{}",
        r.stderr, r.json
    );
    let v2 = r.version();
    assert_ne!(v1, v2);
    let rec = &r.json["rollout"];
    assert_eq!(rec["state"], "failed", "{rec}");
    assert!(
        rec["message"].as_str().unwrap().starts_with(
            "store: 1 host(s) failed, more than its failure budget of 0; the deploy stopped"
        ),
        "{rec}"
    );
    let store = r.states("store");
    let failed: Vec<&String> = store
        .iter()
        .filter(|(_, s)| *s == "failed")
        .map(|(h, _)| h)
        .collect();
    assert_eq!(failed.len(), 1, "{store:?}");
    assert!(
        r.stderr.contains(&format!(
            "{}: FAILED: store {v2} did not become healthy",
            failed[0]
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("; switched back to {v1}")),
        "{}",
        r.stderr
    );
    // No host is left on the second release, and every instance is live on the first.
    assert_eq!(currents(&c, 4), [v1.as_str(); 4]);
    let s = rookery(&c, &["status", pb], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    for (service, hosts) in [("store", 4), ("api", 4), ("web", 2)] {
        let st = s.json["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == service)
            .unwrap_or_else(|| panic!("{service} missing: {}", s.json));
        assert_eq!(st["live"], hosts, "{st}");
        for h in st["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], v1.as_str(), "{h}");
        }
    }

    // Fixed: the same command resumes the deploy and every host ends on the second.
    for k in 1..=4 {
        std::fs::remove_file(c.root(&format!("h{k}")).join("srv/app/sick")).unwrap();
    }
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(r.stderr.contains("resuming deploy "), "{}", r.stderr);
    assert_eq!(r.json["distribution"]["version"], v2.as_str(), "{}", r.json);
    for service in ["store", "api", "web"] {
        let st = r.states(service);
        assert!(st.values().all(|s| s == "done"), "{service}: {st:?}");
    }
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn hosts_that_fail_within_the_failure_budget_are_switched_back_and_the_others_roll() {
    let c = Cluster::ssh(4, "127.0.56").start();
    let a = sickly_artifact(&c, ", failure_budget: 1");
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    second_release(&a);
    let sick = c.root("h3").join("srv/app/sick");
    std::fs::write(&sick, "").unwrap();

    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(
        r.code, 4,
        "exit 4 = some hosts did not switch\n{}\n{}",
        r.stderr, r.json
    );
    let v2 = r.version();
    let rec = &r.json["rollout"];
    assert_eq!(rec["state"], "done", "{rec}");
    // h3 runs store and api (web runs on h2 and h4).
    assert_eq!(
        rec["message"],
        "2 host(s) did not switch (within the failure budget): run `rookery reconcile` once they are fixed",
        "{rec}"
    );
    for service in ["store", "api", "web"] {
        for (host, state) in r.states(service) {
            let want = if host == "h3" { "failed" } else { "done" };
            assert_eq!(state, want, "{service} on {host}");
        }
    }
    assert!(
        r.stderr
            .contains(&format!("h3: FAILED: api {v2} did not become healthy")),
        "{}",
        r.stderr
    );
    assert_eq!(currents(&c, 4), [&v2, &v2, &v1, &v2].map(String::as_str));
    let s = rookery(&c, &["status", pb], &[]);
    for st in s.json["services"].as_array().unwrap() {
        for h in st["hosts"].as_array().unwrap() {
            let want = if h["host"] == "h3" { &v1 } else { &v2 };
            assert_eq!(h["live"], want.as_str(), "{h}");
        }
    }

    // Fixed: reconcile switches h3 to the version the others run.
    std::fs::remove_file(&sick).unwrap();
    let r = rookery(&c, &["reconcile", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(r.json["kind"], "reconcile", "{}", r.json);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn hooks_run_on_the_controller_around_distribution_and_on_each_host_around_its_restart() {
    let c = Cluster::ssh(4, "127.0.57").start();
    let a = serving_artifact(&c);
    let log = c.dir().join("controller.log");
    let pb_text = |before_distribute: &str, before_restart: &str| {
        format!(
            r#"name: t
artifact: {{source: art, destination: /srv/app}}
distribution: {{seed_window: 6s, piece_size: 64KiB}}
hooks:
  before_distribute: "{before_distribute}"
  after_distribute: ["echo after {{version}} >> {log}"]
services:
  store:
    start: "exec /bin/sh {{release}}/bin/serve {dir}"
    quorum: 1
    min_healthy_time: 300ms
    hooks:
      before_restart: "{before_restart}"
      after_restart: ["echo {{host}} after $(readlink {{current}}) >> {{destination}}/hooks.log"]
  api: {{start: "exec /bin/sh {{release}}/bin/serve {dir}", quorum: 1, min_healthy_time: 300ms}}
  web: {{start: "exec /bin/sh {{release}}/bin/serve {dir}", quorum: 1, min_healthy_time: 300ms}}
"#,
            log = log.display(),
            dir = c.dir().display()
        )
    };
    let before = format!("echo before {{version}} >> {}", log.display());
    let before_restart = "echo {host} before $(readlink {current}) >> {destination}/hooks.log";
    std::fs::write(a.playbook(), pb_text(&before, before_restart)).unwrap();
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    std::fs::write(a.dir.path().join("art/second"), "").unwrap();
    let v2 = deployed(&c, pb);

    // On the controller: before and after each distribution, with its version.
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        said,
        format!("before {v1}\nafter {v1}\nbefore {v2}\nafter {v2}\n"),
        "{said}"
    );
    // On each host of store, around its restart: before it with the old release
    // current, after it with the new one.
    for k in 1..=4 {
        let h = format!("h{k}");
        let said = std::fs::read_to_string(c.root(&h).join("srv/app/hooks.log")).unwrap();
        let second: Vec<&str> = said.lines().skip(2).collect();
        assert_eq!(
            second,
            [
                format!("{h} before releases/{v1}"),
                format!("{h} after releases/{v2}")
            ],
            "{said}"
        );
    }

    // A failing `before_distribute` stops the deploy before any host fetches.
    std::fs::write(a.playbook(), pb_text("exit 3", before_restart)).unwrap();
    std::fs::write(a.dir.path().join("art/third"), "").unwrap();
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stderr, r.json);
    assert!(
        r.stderr.contains(
            "error: before_distribute hook `exit 3`: exit status 3; no host was asked to fetch"
        ),
        "{}",
        r.stderr
    );
    for k in 1..=4 {
        let releases = c.root(&format!("h{k}")).join("srv/app/releases");
        assert_eq!(std::fs::read_dir(&releases).unwrap().count(), 2, "h{k}");
    }
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);

    // A failing `before_restart` fails its host before anything is switched there:
    // it keeps running what it ran, and the deploy stops.
    std::fs::write(a.playbook(), pb_text(&before, "exit 4")).unwrap();
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 8, "{}\n{}", r.stderr, r.json);
    let v3 = r.json["distribution"]["version"].as_str().unwrap();
    let failed = r
        .states("store")
        .into_iter()
        .find(|(_, s)| s == "failed")
        .unwrap_or_else(|| panic!("{}", r.json))
        .0;
    assert!(
        r.stderr.contains(&format!(
            "  {failed}: FAILED: before_restart hook `exit 4`: exit status 4; nothing was switched"
        )),
        "{}",
        r.stderr
    );
    assert_ne!(v3, v2);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

/// A second deploy (the artifact changed), started as a terminal would start it, with
/// its output read as it comes, on a 4-host cluster where the first deploy (`v1`) of
/// services that stay up went through: returned with the first Ctrl-C sent, once its
/// first `store` batch (one host, `moved`) has begun. Bind every field when taking
/// it apart: with `..`, the artifact would be deleted at once.
struct Interrupted {
    child: std::process::Child,
    stderr: Lines,
    stdout: Lines,
    moved: String,
    v1: String,
    pb: String,
    _artifact: Artifact,
    c: Cluster,
}

fn interrupted_second_deploy(loopback: &str) -> Interrupted {
    let c = Cluster::ssh(4, loopback).start();
    let a = serving_artifact(&c);
    let pb = a.playbook().to_str().unwrap().to_string();
    let v1 = deployed(&c, &pb);
    std::fs::write(a.dir.path().join("art/second"), "").unwrap();
    let mut child = spawn_in_group(c.command(&["--json", "deploy", &pb]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    let stdout = Lines::read(child.stdout.take().unwrap());
    stderr.wait_for("store: batch 1/4: ");
    let moved = stderr
        .all()
        .lines()
        .find_map(|l| l.strip_prefix("store: batch 1/4: "))
        .unwrap()
        .to_string();
    ctrl_c(&child);
    Interrupted {
        child,
        stderr,
        stdout,
        moved,
        v1,
        pb,
        _artifact: a,
        c,
    }
}

#[test]
fn the_first_ctrl_c_over_ssh_finishes_the_batch_in_flight_and_the_next_run_resumes() {
    let Interrupted {
        mut child,
        stderr,
        stdout,
        moved,
        v1,
        pb,
        c,
        _artifact,
    } = interrupted_second_deploy("127.0.52");
    let pb = pb.as_str();
    let status = child.wait().unwrap();
    let said = stderr.finish();
    let json: serde_json::Value = serde_json::from_str(&stdout.finish()).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{said}\n{json}");
    let rec = &json["rollout"];
    assert_eq!(rec["state"], "interrupted", "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .starts_with("interrupted before store batch 2/4"),
        "{rec}"
    );
    let v2 = json["distribution"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    // The batch in flight finished: its one host runs the second release, the others
    // the first, and every instance is live.
    assert!(
        said.contains(&format!("  {moved}: {v1} -> {v2} in ")),
        "{said}"
    );
    let states = host_states(&json["rollout"], "store");
    for (host, state) in &states {
        let want = if *host == moved { "done" } else { "pending" };
        assert_eq!(state, want, "{states:?}");
    }
    let s = rookery(&c, &["status", pb], &[]);
    let st = &s.json["services"][0];
    assert_eq!(st["name"], "store", "{}", s.json);
    assert_eq!(st["live"], 4, "{st}");

    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(r.stderr.contains("resuming deploy "), "{}", r.stderr);
    // The batch that finished in the interrupted run is not restarted again.
    assert!(r.stderr.contains("store: batch 2/4: "), "{}", r.stderr);
    assert!(!r.stderr.contains("store: batch 1/4: "), "{}", r.stderr);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn a_second_ctrl_c_over_ssh_aborts_and_the_hosts_finish_their_switch() {
    let Interrupted {
        mut child,
        stderr,
        stdout,
        moved,
        v1,
        pb,
        c,
        _artifact,
    } = interrupted_second_deploy("127.0.54");
    let pb = pb.as_str();
    // The second Ctrl-C lands in the middle of the host's switch: `current` has moved
    // (after the old instance stopped), the new one is starting or not yet healthy.
    let link = c.root(&moved).join("srv/app/current");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_link(&link).is_ok_and(|t| t.ends_with(&v1)) {
        assert!(
            std::time::Instant::now() < until,
            "{moved} never began its switch:\n{}",
            stderr.all()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    ctrl_c(&child);
    let status = child.wait().unwrap();
    let said = stderr.finish();
    let out = stdout.finish();
    assert_eq!(status.code(), Some(130), "{said}\n{out}");
    // Aborted, not stopped cleanly: neither the host's result nor a record was printed.
    assert!(!said.contains(&format!("  {moved}: ")), "{said}\n{out}");
    assert!(!out.contains("interrupted before"), "{said}\n{out}");
    // The SSH sessions went with the controller, but the switch on the host does not
    // depend on them: it ends with the new release live there, and every other
    // `store` instance live on the old one. (`status` reads the store, then the hosts:
    // a switch between the two reads shows for a moment as a disagreement, so wait
    // for the settled state.)
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let s = rookery(&c, &["status", pb], &[]);
        let st = s.json["services"][0].clone();
        assert_eq!(st["name"], "store", "{}", s.json);
        let settled = st["hosts"].as_array().unwrap().iter().all(|h| {
            h["live"] == h["current"] && (h["host"] == moved.as_str()) == (h["live"] != v1.as_str())
        });
        seen.push(st.to_string());
        if st["live"] == 4 && settled {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "store did not settle with {moved} on the new release:\n{}",
            seen.join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(r.stderr.contains("resuming deploy "), "{}", r.stderr);
    let v2 = r.version();
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn a_rollback_over_ssh_returns_every_host_to_the_previous_release() {
    let c = Cluster::ssh(4, "127.0.53").start();
    let a = serving_artifact(&c);
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    std::fs::write(a.dir.path().join("art/second"), "").unwrap();
    let v2 = deployed(&c, pb);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);

    let r = rookery(&c, &["rollback", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(r.json["kind"], "rollback", "{}", r.json);
    assert_eq!(r.json["state"], "done", "{}", r.json);
    assert_eq!(currents(&c, 4), [v1.as_str(); 4]);
    // Both releases stay on disk: a rollback switches, it does not delete.
    for k in 1..=4 {
        let releases = c.root(&format!("h{k}")).join("srv/app/releases");
        for v in [&v1, &v2] {
            assert!(releases.join(v).is_dir(), "h{k} lost {v}");
        }
    }
    let s = rookery(&c, &["status", pb], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    for st in s.json["services"].as_array().unwrap() {
        for h in st["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], v1.as_str(), "{h}");
            assert_eq!(h["current"], v1.as_str(), "{h}");
        }
    }
    // --limit: only h2's rows (and only h2 is asked); the live counts stay the
    // services'.
    let s = rookery(&c, &["status", pb, "--limit", "h2"], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    for (st, live) in s.json["services"].as_array().unwrap().iter().zip([4, 4, 2]) {
        let hosts: Vec<&str> = st["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["h2"], "{st}");
        assert_eq!(st["live"], live, "{st}");
        assert_eq!(st["hosts"][0]["current"], v1.as_str(), "{st}");
    }
    // `agent switch` ignores SIGHUP to finish whatever happens to its session; the
    // services it starts must not inherit that.
    for k in 1..=4 {
        let run = c
            .root(&format!("h{k}"))
            .join("srv/app/.rookery/run/store.json");
        let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
        let pid = run["service"].as_u64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(ignored & 1 << (libc::SIGHUP - 1), 0, "h{k}: {status}");
    }
}
