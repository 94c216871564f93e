//! The ssh config's HostName over real sshd, and the texts of the login problems an
//! operator can fix: a key file that is not there, an agent socket that is empty,
//! dead, or holds no keys.

use std::path::Path;
use std::process::Command;

use super::{Artifact, Cluster, distribute, distribute_env, host};

/// The user the loopback cluster's sshd accepts, as its inventory names it.
fn user(c: &Cluster) -> String {
    let env = std::fs::read_to_string(c.dir().join("cluster.env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix("user="))
        .unwrap()
        .to_string()
}

/// The inventory without its key: logins rely on the agent and the ssh config.
fn drop_inventory_key(c: &Cluster) {
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    let key = c.dir().join("id_ed25519");
    let inv = inv.replace(&format!(", key: {}", key.display()), "");
    assert!(!inv.contains("id_ed25519"), "{inv}");
    std::fs::write(c.inventory(), inv).unwrap();
}

#[test]
fn an_address_that_names_a_host_block_goes_to_its_hostname() {
    let c = Cluster::ssh(2, "127.0.59").start();
    // Names instead of addresses: only the ssh config says where web-a and web-b are.
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    let inv = inv
        .replace("address: 127.0.59.2,", "address: web-a,")
        .replace("address: 127.0.59.3,", "address: web-b,");
    assert!(!inv.contains("address: 127."), "{inv}");
    std::fs::write(c.inventory(), inv).unwrap();
    // As with ssh: the first HostName obtained wins (so `Host *` does not move web-a),
    // patterns take wildcards and negation, and the Host match uses the name as given.
    std::fs::create_dir_all(c.dir().join(".ssh")).unwrap();
    std::fs::write(
        c.dir().join(".ssh/config"),
        "Host web-* !web-a\n    HostName 127.0.59.3\n\nHost web-a\n    HostName 127.0.59.2\n\nHost *\n    HostName 127.0.59.99\n",
    )
    .unwrap();
    let a = Artifact::new(1 << 20);
    // No --accept-new-host-keys: known_hosts records the HostNames, [127.0.59.2]:2222
    // and [127.0.59.3]:2222, and that is where the keys are looked up.
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    for k in ["h1", "h2"] {
        assert_eq!(host(&r, k)["ok"], true, "{}", r.json);
        let version = r.json["version"].as_str().unwrap();
        let blob = c
            .root(k)
            .join("srv/app/releases")
            .join(version)
            .join("blob");
        assert!(blob.exists(), "{}", blob.display());
    }
}

#[test]
fn a_missing_key_file_is_named_with_the_setting_to_fix() {
    let c = Cluster::ssh(1, "127.0.60").start();
    let key = c.dir().join("id_ed25519");
    let missing = c.dir().join("id_missing");
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    let inv = inv.replace(
        &format!("key: {}", key.display()),
        &format!("key: {}", missing.display()),
    );
    std::fs::write(c.inventory(), inv).unwrap();
    let a = Artifact::new(1 << 16);
    let r = distribute(&c, &a, &[]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    let h1 = host(&r, "h1");
    assert_eq!(h1["stage"], "auth", "{h1}");
    assert_eq!(
        h1["error"].as_str().unwrap(),
        format!(
            "auth: key file {} (inventory `defaults.ssh.key`) does not exist: fix the path, or remove the setting to use ssh-agent and the ssh config's IdentityFile",
            missing.display()
        )
    );
}

#[test]
fn an_empty_dead_or_keyless_agent_socket_says_what_to_do() {
    let c = Cluster::ssh(1, "127.0.62").start();
    drop_inventory_key(&c);
    let a = Artifact::new(1 << 16);
    let who = format!("{}@127.0.62.2:2222", user(&c));
    let error = |env: &[(&str, &Path)]| {
        let r = distribute_env(&c, &a, &[], env);
        assert_ne!(r.code, 0, "{}", r.stderr);
        let h1 = host(&r, "h1");
        assert_eq!(h1["stage"], "auth", "{h1}");
        h1["error"].as_str().unwrap().to_string()
    };

    assert_eq!(
        error(&[("SSH_AUTH_SOCK", Path::new(""))]),
        format!(
            "auth: {who}: no key to offer: SSH_AUTH_SOCK is set but empty: unset it, or start ssh-agent and add a key with ssh-add"
        )
    );

    // A socket file nobody listens on any more: the agent that made it is gone.
    let sock = c.dir().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert_eq!(
        error(&[("SSH_AUTH_SOCK", &sock)]),
        format!(
            "auth: {who}: no key to offer: SSH_AUTH_SOCK={}: no agent listens there (connection refused): start ssh-agent and point SSH_AUTH_SOCK at its socket, or unset SSH_AUTH_SOCK",
            sock.display()
        )
    );

    // A live agent without keys.
    let sock = c.dir().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        error(&[("SSH_AUTH_SOCK", &sock)]),
        format!(
            "auth: {who}: no key to offer: ssh-agent (SSH_AUTH_SOCK={}) holds no keys: add one with ssh-add",
            sock.display()
        )
    );
}
