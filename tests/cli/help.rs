//! What each subcommand's `--help` offers: only the flags that apply to it, each with
//! a description, and the shared flags accepted before the subcommand or after it.

use crate::support::{BIN, Test, repo};

/// The long flags `rookery ARGS --help` lists.
fn flags(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('-')
                .filter(|_| !l.starts_with("--"))
                .map_or(l, |rest| {
                    // `-i, --inventory <FILE>`: the long form after the short one.
                    rest.split_once(", ").map_or(rest, |(_, long)| long)
                });
            let name = l.strip_prefix("--")?;
            Some(name.split([' ', '.', '=']).next()?.to_string())
        })
        .collect();
    flags.sort();
    flags
}

/// A subcommand's `--help` lists the flags that do something there and none of the
/// others: no `--inventory` for `torrent create`, no `--json` for `completions`.
#[test]
fn each_subcommand_lists_only_the_flags_that_apply_to_it() {
    let hosts = ["inventory", "limit"];
    let output = ["json", "verbose", "quiet"];
    let remote = ["forks", "accept-new-host-keys", "advertise"];
    let cases: &[(&[&str], Vec<&str>)] = &[
        (
            &["plan"],
            [&hosts[..], &output, &["artifact-size"]].concat(),
        ),
        (&["deploy"], [&hosts[..], &output, &remote].concat()),
        (&["distribute"], [&hosts[..], &output, &remote].concat()),
        (
            &["prepare"],
            [&["inventory"][..], &output, &remote].concat(),
        ),
        (
            &["rollout"],
            [&hosts[..], &output, &remote, &["version", "promote"]].concat(),
        ),
        (
            &["reconcile"],
            [&hosts[..], &output, &remote, &["dry-run"]].concat(),
        ),
        (
            &["rollback"],
            [&hosts[..], &output, &remote, &["service", "dry-run"]].concat(),
        ),
        (&["status"], [&hosts[..], &output, &remote].concat()),
        (
            &["torrent", "create"],
            [
                &output[..],
                &[
                    "output",
                    "piece-size",
                    "tracker",
                    "keep-special-bits",
                    "previous",
                    "reuse",
                ],
            ]
            .concat(),
        ),
        (&["torrent", "inspect"], output.to_vec()),
        (
            &["tracker"],
            [
                &["inventory"][..],
                &output,
                &[
                    "listen",
                    "torrent",
                    "sharing",
                    "stripes",
                    "interval",
                    "host",
                    "withdrawn",
                    "until-stdin-closes",
                ],
            ]
            .concat(),
        ),
        (&["completions"], vec![]),
        (&["man"], vec!["dir"]),
    ];
    for (args, want) in cases {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.push("help".into());
        want.sort();
        assert_eq!(flags(args), want, "rookery {} --help", args.join(" "));
    }
}

/// Every argument of every subcommand an operator runs has a description in its
/// `--help` (a bare `<DIR>` says nothing).
#[test]
fn every_argument_is_described() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.get_help().is_none() && !arg.is_hide_set() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&rookery::cli::Cli::command(), "rookery", &mut missing);
    assert!(missing.is_empty(), "arguments without help: {missing:?}");
}

/// The shared flags may come before the subcommand or after it, with the same
/// effect; before a subcommand they do not apply to, they are refused as they would
/// be after it (exit 2).
#[test]
fn shared_flags_before_or_after_the_subcommand() {
    let inventory = repo().join("inventory/local.yml");
    let playbook = repo().join("playbooks/demo.yml");
    let (inventory, playbook) = (inventory.to_str().unwrap(), playbook.to_str().unwrap());
    let before = Test::new()
        .args(["--json", "-i", inventory, "-l", "dc:east", "plan", playbook])
        .run()
        .stdout;
    let after = Test::new()
        .args([
            "plan", playbook, "-i", inventory, "--limit", "dc:east", "--json",
        ])
        .run()
        .stdout;
    assert!(before.contains("\"schema\""), "{before}");
    assert_eq!(before, after);
    Test::new()
        .args(["--json", "completions", "bash"])
        .status(2)
        .stderr_has("`--json` does not apply to `rookery completions`")
        .run();
    Test::new()
        .args(["-i", inventory, "torrent", "inspect", "x.torrent"])
        .status(2)
        .stderr_has("`--inventory` does not apply to `rookery torrent inspect`")
        .run();
    Test::new()
        .args(["torrent", "inspect", "x.torrent", "-i", inventory])
        .status(2)
        .stderr_has("unexpected argument '-i'")
        .run();
    Test::new()
        .args(["-q", "plan", playbook, "-i", inventory, "-v"])
        .status(2)
        .stderr_has("`--verbose` and `--quiet` cannot be used together")
        .run();
}
