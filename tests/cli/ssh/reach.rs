//! Reaching hosts over real sshd: the bootstrap, a host that is down or never
//! answers, host keys changed or unknown, a failing command, a jump host, the
//! inventory's address against the ssh config, keys from the config and the agent.

use super::*;

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
