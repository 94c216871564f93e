//! `rookery torrent create|inspect`, checked against other BitTorrent clients: the
//! metainfo must mean the same thing to Debian's transmission-show and aria2c.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;

use crate::support::Test;

/// Runs a Debian tool the suite depends on; a missing tool fails the test with the fix.
fn tool(name: &str, package: &str, args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(name).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run `{name}` ({e}): install Debian's `{package}` package (scripts/test does)")
    });
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn artifact(t: Test) -> Test {
    t.file("art/bin/tool", "#!/bin/sh\necho hi\n")
        .file("art/data/blob", &"x".repeat(300_000))
        .file("art/zero", "")
}

fn finish_tree(dir: &std::path::Path) {
    let art = dir.join("art");
    std::fs::set_permissions(art.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(art.join("empty/dir")).unwrap();
    symlink("bin/tool", art.join("link")).unwrap();
}

#[test]
fn other_clients_read_the_same_torrent() {
    // Build the tree, then create the torrent in a second run in the same directory.
    let out = artifact(Test::new())
        .args(["--version"])
        .stdout_has("rookery")
        .run();
    let dir = out.dir.path();
    finish_tree(dir);
    let bin = env!("CARGO_BIN_EXE_rookery");
    let created = Command::new(bin)
        .args([
            "--json",
            "torrent",
            "create",
            "art",
            "-o",
            "art.torrent",
            "--tracker",
            "http://127.0.0.1:6969/announce",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let hash = summary["info_hash"].as_str().unwrap().to_string();
    assert_eq!(summary["total_bytes"], 300_000 + 18);
    assert_eq!(summary["file_count"], 2);
    assert_eq!(summary["empty_files"], 1);
    assert_eq!(summary["symlinks"], 1);
    assert_eq!(summary["private"], true);

    let transmission = tool(
        "transmission-show",
        "transmission-cli",
        &["art.torrent"],
        dir,
    );
    assert!(
        transmission.contains(&format!("Hash: {hash}")),
        "{transmission}"
    );
    assert!(
        transmission.contains("Privacy: Private torrent"),
        "{transmission}"
    );
    assert!(
        transmission.contains("art/bin/tool") && transmission.contains("art/data/blob"),
        "{transmission}"
    );

    let aria = tool("aria2c", "aria2", &["--show-files", "art.torrent"], dir);
    assert!(aria.contains(&format!("Info Hash: {hash}")), "{aria}");
    assert!(aria.contains("./art/data/blob"), "{aria}");

    // Same tree, same bytes: creating again gives the same hash.
    let again = Command::new(bin)
        .args(["--json", "torrent", "create", "art", "-o", "again.torrent"])
        .current_dir(dir)
        .output()
        .unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["info_hash"], hash.as_str());

    let inspect = Command::new(bin)
        .args(["torrent", "inspect", "art.torrent"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains(&format!("info hash   {hash}")), "{text}");
    assert!(text.contains("symlink  link -> bin/tool"), "{text}");
}

#[test]
fn links_leaving_the_tree_are_refused() {
    let out = artifact(Test::new()).args(["--version"]).run();
    symlink("../../etc/passwd", out.dir.path().join("art/bin/escape")).unwrap();
    Test::new_in(out.dir)
        .args(["torrent", "create", "art"])
        .status(1)
        .stderr("error: creating metainfo for art: symlink `bin/escape` (-> `../../etc/passwd`) resolves outside the tree: only links that stay within it can be shipped\n")
        .run();
}

#[test]
fn crafted_paths_are_refused_on_read() {
    // A hand-written metainfo whose only file is `../evil`.
    let pieces = "p".repeat(20);
    let torrent = format!(
        "d4:infod5:filesld6:lengthi1e4:pathl2:..4:evileee4:name3:art12:piece lengthi65536e6:pieces20:{pieces}7:privatei1eee"
    );
    Test::new()
        .file("evil.torrent", &torrent)
        .args(["torrent", "inspect", "evil.torrent"])
        .status(1)
        .stderr(
            "error: reading evil.torrent: metainfo path `../evil` would escape the destination\n",
        )
        .run();
}

#[test]
fn empty_artifacts_are_refused() {
    Test::new()
        .file("art/zero", "")
        .args(["torrent", "create", "art"])
        .status(1)
        .stderr(
            "error: creating metainfo for art: the artifact `art` holds no bytes to distribute\n",
        )
        .run();
}

/// `--reuse` keeps what it hashed beside the output; the next run over the unchanged
/// tree reads no file and makes the same metainfo.
#[test]
fn create_with_reuse_reads_nothing_the_second_time() {
    let args = [
        "-v",
        "torrent",
        "create",
        "art",
        "-o",
        "art.torrent",
        "--reuse",
    ];
    let first = artifact(Test::new())
        .args(args)
        .stderr_has("piece_bytes_reused=0")
        .run();
    let made = std::fs::read(first.dir.path().join("art.torrent")).unwrap();
    assert!(first.dir.path().join("art.torrent.stats.json").exists());
    let again = Test::new_in(first.dir)
        .args(args)
        .stderr_has("file_bytes_read=0 piece_bytes_read=0")
        .run();
    assert_eq!(
        std::fs::read(again.dir.path().join("art.torrent")).unwrap(),
        made
    );
    Test::new_in(again.dir)
        .args(["torrent", "create", "art", "--reuse"])
        .status(2)
        .stderr_has("--reuse needs --output FILE")
        .run();
}
