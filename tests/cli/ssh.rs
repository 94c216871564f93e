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

mod deploy;
mod platforms;
mod reach;
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
