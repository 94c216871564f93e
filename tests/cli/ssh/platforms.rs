//! Agents per host platform over real sshd. One loopback host is made an aarch64
//! host: its `uname -sm` says `Linux aarch64` (a `uname` first on the PATH its sshd
//! sets), and the kernel runs aarch64 binaries there through qemu-user
//! (binfmt_misc). The controller reads the platform in the bootstrap's round trip
//! and gives that host the static aarch64 agent of `scripts/build-agents`; the
//! others get the controller's own binary; one deploy covers both.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Cluster, noise, rookery, serving_artifact};
use crate::support::{BIN, succeed};

/// Where `scripts/build-agents` puts agents by default: `agents/` of the target
/// directory this test binary was built in.
fn agents_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("agents")
}

/// The aarch64 agent, and the kernel's way to run it; the test fails saying how to
/// get either when it is missing.
fn aarch64_agent() -> PathBuf {
    let agent = agents_dir().join("rookery-aarch64-linux");
    assert!(
        agent.exists(),
        "no {}: build it with `scripts/build-agents aarch64-linux` (scripts/test does)",
        agent.display()
    );
    assert!(
        Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "the kernel cannot run aarch64 binaries: install qemu-user-static and register \
         it with binfmt_misc (scripts/test does: see its `qemu-aarch64` step)"
    );
    agent
}

/// Makes `host` of the cluster an aarch64 host as far as anything run over its sshd
/// can tell: `uname -sm` says `Linux aarch64`. Restarts its sshd with that PATH.
fn make_host_say(c: &Cluster, host: &str, uname_sm: &str) {
    let hd = c.path(&format!("hosts/{host}"));
    let bin = hd.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    crate::support::write_exec(
        &bin.join("uname"),
        &format!(
            "#!/bin/sh\n[ \"$*\" = -sm ] && {{ echo '{uname_sm}'; exit 0; }}\nexec /bin/uname \"$@\"\n"
        ),
    );
    c.stop_sshd(host);
    let config = hd.join("sshd_config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin\n",
        bin.display()
    ));
    std::fs::write(&config, text).unwrap();
    succeed(
        Command::new("/usr/sbin/sshd")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(hd.join("sshd.log")),
    );
}

#[test]
fn an_aarch64_host_gets_the_aarch64_agent_and_one_deploy_covers_both() {
    let agent = aarch64_agent();
    // The agent is a static aarch64 binary, and runs under qemu-user.
    let bytes = std::fs::read(&agent).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        0xb7,
        "EM_AARCH64"
    );
    let version = succeed(
        Command::new("qemu-aarch64-static")
            .arg(&agent)
            .arg("--version"),
    );
    assert_eq!(
        version.trim(),
        format!("rookery {}", env!("CARGO_PKG_VERSION"))
    );

    let c = Cluster::ssh(4, "127.0.65").start();
    make_host_say(&c, "h2", "Linux aarch64");
    let a = serving_artifact(&c);
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    // An agent directory with the aarch64 agent only: the x86_64 hosts get the
    // controller's own binary (a static x86_64 agent, if one was built, would win).
    let only = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&agent, only.path().join("rookery-aarch64-linux")).unwrap();
    let agents = only.path().to_path_buf();
    let env = [("ROOKERY_AGENTS", agents.as_path())];
    let r = rookery(&c, &["deploy", pb], &env);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);

    // Each host got the agent for its platform.
    let own = std::fs::read(BIN).unwrap();
    for (host, want) in [("h1", &own), ("h2", &bytes), ("h3", &own), ("h4", &own)] {
        let got = std::fs::read(c.root(host).join(".rookery/bin/rookery")).unwrap();
        assert!(got == *want, "{host} has the wrong agent");
    }
    // h2's copy was fetched and verified by the aarch64 agent, from the x86_64
    // origin and peers, and its services run under that agent's supervisors.
    let s = rookery(&c, &["status", pb], &env);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    let version = s.json["last_deploy"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    for k in 1..=4 {
        let rel = c
            .root(&format!("h{k}"))
            .join("srv/app/releases")
            .join(&version);
        assert_eq!(std::fs::read(rel.join("blob")).unwrap(), noise(1 << 20, 7));
    }
    for service in s.json["services"].as_array().unwrap() {
        for h in service["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], version.as_str(), "{h}");
        }
    }
    let h2_agent = c.root("h2").join(".rookery/bin/rookery");
    let supervisors = supervisors_of(&h2_agent);
    assert!(!supervisors.is_empty(), "no supervisor runs h2's agent");
    for pid in supervisors {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(
            exe.to_string_lossy().contains("qemu"),
            "supervisor {pid} of h2 runs {} natively, not the aarch64 agent under qemu",
            exe.display()
        );
    }

    // A host of a platform without an agent fails at bootstrap, named, with the
    // platform and where to put one; the others go on.
    make_host_say(&c, "h3", "Linux riscv64");
    std::fs::remove_file(c.root("h3").join(".rookery/bin/rookery")).unwrap();
    std::fs::write(a.dir.path().join("art/more"), noise(1 << 16, 9)).unwrap();
    let r = rookery(&c, &["distribute", pb], &env);
    assert_eq!(r.code, 4, "{}\n{}", r.stderr, r.json);
    let h3 = super::host(&r, "h3");
    assert_eq!(h3["stage"], "bootstrap", "{h3}");
    assert!(
        h3.get("bootstrap").is_none(),
        "a failed bootstrap is not `present`: {h3}"
    );
    let err = h3["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("bootstrap: no rookery agent for this host's platform `riscv64-linux`")
            && err.contains(&format!("{}/rookery-riscv64-linux", agents.display())),
        "{h3}"
    );
    for ok in ["h1", "h2", "h4"] {
        assert_eq!(super::host(&r, ok)["ok"], true, "{}", r.json);
    }
}

/// Pids of `agent run` supervisors started from `agent`.
fn supervisors_of(agent: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let runs_agent = args.iter().any(|a| Path::new(a) == agent);
        let is_run = args.windows(2).any(|w| w[0] == "agent" && w[1] == "run");
        if runs_agent && is_run {
            pids.push(pid);
        }
    }
    pids
}
