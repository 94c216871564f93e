//! `scripts/loopback-cluster up` ends with commands to try: each one is run here
//! exactly as printed, from the directory the script was run in, as a new user would
//! paste it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::repo;

use super::BIN;

/// A loopback cluster started the way a user starts one, taken down when dropped.
struct Up {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    printed: String,
}

impl Up {
    /// `scripts/loopback-cluster up ARGS...` from the top of the repository.
    fn run(args: &[&str], net: &str) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut up = Up {
            dir,
            home,
            printed: String::new(),
        };
        let out = up
            .command("scripts/loopback-cluster")
            .arg("up")
            .args(args)
            .args(["--net", net, "--port", "2222", "--dir"])
            .arg(up.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        up.printed = String::from_utf8(out.stdout).unwrap();
        up
    }

    /// A command run as the user would: from the repository, with `rookery` on PATH
    /// (this build), no ssh config or agent of the user running the tests.
    fn command(&self, program: &str) -> Command {
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = std::env::join_paths(
            std::iter::once(bin_dir.to_path_buf())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        let mut cmd = Command::new(program);
        cmd.current_dir(repo())
            .env("PATH", path)
            .env("HOME", self.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("ROOKERY")
            .env_remove("ROOKERY_LOG")
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// The indented lines after `try:`.
    fn commands(&self) -> Vec<String> {
        self.printed
            .lines()
            .skip_while(|l| *l != "try:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// Runs every printed command in order; each must succeed.
    fn run_what_it_prints(&self) -> Vec<String> {
        let commands = self.commands();
        assert!(
            commands.last().is_some_and(|c| c.contains(" down ")),
            "the last command takes the cluster down:\n{}",
            self.printed
        );
        for c in &commands {
            let out = self.command("bash").arg("-c").arg(c).output().unwrap();
            assert!(
                out.status.success(),
                "`{c}` failed as printed by\n{}\n{}",
                self.printed,
                text(&out)
            );
        }
        commands
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.yml")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self
            .command("scripts/loopback-cluster")
            .args(["down", "--dir"])
            .arg(self.dir.path())
            .output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn up_4_with_zookeeper_prints_commands_that_work_as_printed() {
    let up = Up::run(&["4", "--zookeeper"], "127.0.61");
    let commands = up.run_what_it_prints();
    for word in [
        "ssh -F",
        "rookery plan",
        "rookery distribute",
        "rookery deploy",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(word)),
            "no `{word}` in\n{}",
            up.printed
        );
    }
    // The deploy ran: every host has a current release.
    for k in 1..=4 {
        let current = up
            .dir
            .path()
            .join(format!("hosts/h{k}/root/srv/loopback/current"));
        assert!(
            std::fs::read_link(&current).is_ok(),
            "{}",
            current.display()
        );
    }
    assert!(up.inventory().exists());
}

#[test]
fn up_with_the_default_count_and_with_one_host_prints_commands_that_work_as_printed() {
    let up = Up::run(&[], "127.0.63");
    assert!(
        up.printed.contains(": 8 host(s)"),
        "the default is 8 hosts:\n{}",
        up.printed
    );
    let commands = up.run_what_it_prints();
    assert!(commands.iter().any(|c| c.starts_with("rookery plan")));
    drop(up);

    // One host: every service of the playbook still has a host to run on.
    let up = Up::run(&["1"], "127.0.64");
    up.run_what_it_prints();
}
