//! The example files shipped in `inventory/` and `playbooks/` and the complete examples
//! in `docs/` must stay valid: they are what new users copy.

use crate::support::{Test, repo};

/// Every playbook in `playbooks/` names, in its header, the `rookery plan` command
/// that shows it with its inventory; that command succeeds. So every shipped example
/// pair stays valid.
#[test]
fn shipped_examples_plan_cleanly() {
    let root = repo();
    let mut planned = 0;
    for entry in std::fs::read_dir(root.join("playbooks")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let command = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| {
                let at = l.find("rookery plan -i ")?;
                Some(l[at..].trim().to_string())
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: the header names no `rookery plan -i INVENTORY PLAYBOOK` command",
                    path.display()
                )
            });
        let w: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(
            &w[w.len() - 1..],
            [format!(
                "playbooks/{}",
                path.file_name().unwrap().to_string_lossy()
            )]
        );
        let args = w[1..].iter().map(|a| {
            if a.starts_with("inventory/") || a.starts_with("playbooks/") {
                root.join(a).display().to_string()
            } else {
                a.to_string()
            }
        });
        let out = Test::new().args(args).stdout_has("Rollout:").run();
        assert!(out.stdout.contains("Distribution"), "{command}");
        planned += 1;
    }
    assert!(planned >= 5, "{planned} playbooks planned");
}

/// Every ```yaml block whose first line is `# inventory example` or `# playbook example`
/// loads without a problem.
#[test]
fn docs_examples_are_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("```yaml\n") {
            let body = &rest[start + 8..];
            let end = body.find("\n```").expect("closed block");
            let block = &body[..end + 1];
            rest = &body[end + 4..];
            let name = path.file_name().unwrap().to_string_lossy();
            if block.starts_with("# inventory example") {
                rookery::config::inventory::Inventory::from_str(
                    &name,
                    block,
                    std::path::Path::new("/"),
                )
                .unwrap_or_else(|e| panic!("inventory example in {name} is invalid: {e}\n{block}"));
                checked += 1;
            } else if block.starts_with("# playbook example") {
                rookery::config::playbook::Playbook::from_str(
                    &name,
                    block,
                    std::path::Path::new("/"),
                )
                .unwrap_or_else(|e| panic!("playbook example in {name} is invalid: {e}\n{block}"));
                checked += 1;
            }
        }
    }
    assert!(
        checked > 0 || !repo().join("docs/inventory.md").exists(),
        "no example was found in docs/"
    );
}

/// Splits a command line like `sh` would for the simple lines docs use: words, single
/// and double quotes, and a trailing `# comment`.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Every `rookery …` command line in a code block of the README and docs/ parses with
/// the real command-line definition: a renamed flag or command cannot linger in the docs.
#[test]
fn docs_command_lines_parse() {
    use clap::Parser;
    let mut files = vec![repo().join("README.md"), repo().join("vagrant/README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut checked = 0;
    for path in files {
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut in_block = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if !in_block {
                continue;
            }
            let line = line.trim();
            let line = line.strip_prefix("$ ").unwrap_or(line);
            let line = line
                .strip_prefix("cargo run --release -- ")
                .map(|rest| format!("rookery {rest}"))
                .unwrap_or_else(|| line.to_string());
            let w = words(&line);
            if w.first().map(String::as_str) != Some("rookery") || line.contains('…') {
                continue;
            }
            if let Err(e) = rookery::cli::Cli::try_parse_from(&w) {
                panic!(
                    "{}:{}: `{line}` does not parse:\n{e}",
                    path.display(),
                    n + 1
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} command lines found in the docs"
    );
}

/// The exit codes of `Exit` in `src/error.rs`.
fn exit_codes() -> Vec<u32> {
    let src = std::fs::read_to_string(repo().join("src/error.rs")).unwrap();
    let start = src.find("pub enum Exit {").unwrap();
    let body = &src[start..start + src[start..].find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| {
            let (_, n) = l.trim().trim_end_matches(',').split_once(" = ")?;
            n.parse().ok()
        })
        .collect()
}

/// The README, docs/exit-codes.md and `--help` list exactly the codes rookery uses.
#[test]
fn exit_code_tables_match_the_code() {
    let codes = exit_codes();
    assert!(codes.len() >= 9, "{codes:?}");
    for doc in ["README.md", "docs/exit-codes.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        let listed: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(" |").next()?.parse().ok())
            .collect();
        assert_eq!(listed, codes, "the exit code table of {doc}");
    }
    let help = Test::new().args(["--help"]).run().stdout;
    // The paragraph, wrapped to the terminal's width by clap.
    let line = help[help.find("Exit codes:").unwrap()..]
        .split("\n\n")
        .next()
        .unwrap()
        .replace('\n', " ");
    for c in &codes {
        assert!(line.contains(&format!(" {c} ")), "--help: {line}");
    }
    assert!(
        !line.contains(" 6 "),
        "--help lists the retired code 6: {line}"
    );
}

/// `rookery man --dir` writes a page per subcommand an operator runs (and `agent
/// start`, wired at boot, not the other hidden ones), and `rookery man deploy` is the
/// page `rookery deploy --help` summarizes.
#[test]
fn a_man_page_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "rookery.1",
        "rookery-deploy.1",
        "rookery-plan.1",
        "rookery-status.1",
        "rookery-torrent-create.1",
        "rookery-agent-start.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "no {want} in {pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p == "rookery-agent-fetch.1" || p == "rookery-agent.1"),
        "hidden agent commands other than `agent start` got pages: {pages:?}"
    );
    let run = |args: &[&str]| {
        let o = std::process::Command::new(crate::support::BIN)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let page = run(&["man", "deploy"]);
    let help = run(&["deploy", "--help"]);
    let about = help.lines().next().unwrap();
    assert!(
        page.contains(&format!("rookery\\-deploy \\- {about}")),
        "the page's NAME is not `deploy --help`'s summary ({about}):\n{page}"
    );
}
