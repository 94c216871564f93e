//! Hostile input (issue 18): files and stores that are damaged or crafted get a clear
//! error with its place and a documented exit code, never a silently shortened file,
//! a panic, an exhausted memory or a path outside the store.

use rookery::torrent::metainfo::Metainfo;

use crate::support::{Test, repo};

fn demo(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap()
}

/// The 1-based line of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap()].matches('\n').count() + 1
}

fn plan_demo() -> Test {
    Test::new().args(["plan", "-i", "inv.yml", "pb.yml"])
}

#[test]
fn a_nul_byte_does_not_cut_a_file_short() {
    let pb = demo("playbooks/demo.yml");
    let line = line_of(&pb, "  web:");
    plan_demo()
        .file("inv.yml", &demo("inventory/local.yml"))
        .file("pb.yml", &pb.replacen("  web:", "\0  web:", 1))
        .status(3)
        .stderr(&format!(
            "error: invalid configuration: 1 problem found\n  pb.yml:{line}:1: a NUL byte (U+0000) is not allowed in a YAML file\n"
        ))
        .run();
    let inv = demo("inventory/local.yml");
    let line = line_of(&inv, "  west:");
    plan_demo()
        .file("inv.yml", &inv.replacen("  west:", "  \0west:", 1))
        .file("pb.yml", &demo("playbooks/demo.yml"))
        .status(3)
        .stderr(&format!(
            "error: invalid configuration: 1 problem found\n  inv.yml:{line}:3: a NUL byte (U+0000) is not allowed in a YAML file\n"
        ))
        .run();
}

#[test]
fn a_byte_that_is_not_utf8_is_placed() {
    let inv = demo("inventory/local.yml");
    let line = line_of(&inv, "east-3:");
    let bad = inv
        .replacen("east-3:", "east-\u{1}3:", 1)
        .replace('\u{1}', "\u{7f}");
    let mut bytes = bad.into_bytes();
    let at = bytes.iter().position(|&b| b == 0x7f).unwrap();
    bytes[at] = 0xff;
    plan_demo()
        .bytes("inv.yml", &bytes)
        .file("pb.yml", &demo("playbooks/demo.yml"))
        .status(3)
        .stderr(&format!(
            "error: invalid configuration: 1 problem found\n  inv.yml:{line}:16: byte 0xFF is not UTF-8: a YAML file must be UTF-8 text\n"
        ))
        .run();
}

#[test]
fn an_alias_bomb_is_refused_in_bounded_memory() {
    let mut bomb = "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "x{i}: &x{i} [*x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}, *x{p}]\n"
        ));
    }
    plan_demo()
        .file("inv.yml", &demo("inventory/local.yml"))
        .file("pb.yml", &format!("{bomb}{}", demo("playbooks/demo.yml")))
        .status(3)
        .stderr(
            "error: invalid configuration: 1 problem found\n  pb.yml:7:10: the document expands to more than 1000000 values (aliases counted at their size): refusing it, an alias bomb would exhaust memory\n",
        )
        .run();
}

const INV: &str = "\
cluster: test
datacenters:
  east:
    racks:
      r1:
        hosts:
          a: {services: [db]}
          b: {services: [db]}
";

const PB: &str =
    "artifact: {source: build, destination: /srv/app}\nservices:\n  db: {start: ./db}\n";

#[test]
fn a_limit_that_leaves_no_host_exits_2_for_every_command() {
    for limit in ["!*", "a,!a", "a,&b"] {
        for cmd in [
            &["plan", "pb.yml"][..],
            &["deploy", "pb.yml"],
            &["distribute", "pb.yml"],
            &["rollout", "pb.yml"],
            &["reconcile", "pb.yml"],
            &["rollback", "pb.yml"],
            &["status"],
        ] {
            Test::new()
                .file("inv.yml", INV)
                .file("pb.yml", PB)
                .args(["-i", "inv.yml", "--limit", limit])
                .args(cmd)
                .status(2)
                .stderr(&format!(
                    "error: --limit `{limit}`: selects no host (every term matches, but together they leave none)\n"
                ))
                .run();
        }
    }
}

/// The local store of the inventory above, in the test's directory.
const LAST: &str = ".rookery/coordination/deploys/last";

#[test]
fn a_damaged_store_is_named_never_read_as_no_deploy() {
    let status = || {
        Test::new()
            .file("inv.yml", INV)
            .file("pb.yml", PB)
            .args(["-i", "inv.yml", "status"])
    };
    status().stdout_has("Last deploy: none").run();
    let pointer = "error: .rookery/coordination/deploys/last: corrupt pointer to the last deploy:";
    status()
        .file(LAST, "")
        .status(1)
        .stderr(&format!("{pointer} empty where a deploy id should be\n"))
        .run();
    status()
        .file(LAST, "../../../etc/passwd")
        .status(1)
        .stderr(&format!("{pointer} `../../../etc/passwd` is not a deploy id (a deploy id may only contain letters, digits, `.`, `_` and `-`, and must start with a letter or digit)\n"))
        .run();
    status()
        .bytes(LAST, b"\x89PNG\r\n\x1a\n")
        .status(1)
        .stderr_has(pointer)
        .run();
    status()
        .file(LAST, "d1")
        .file(".rookery/coordination/deploys/d1", "{\"id\": \"d1\", \"ki")
        .status(1)
        .stderr("error: .rookery/coordination/deploys/d1: corrupt deploy record: EOF while parsing a string at line 1 column 16\n")
        .run();
    status()
        .file(LAST, "d1")
        .file(".rookery/coordination/deploys/d1", "")
        .status(1)
        .stderr(
            "error: .rookery/coordination/deploys/d1: corrupt deploy record: the file is empty\n",
        )
        .run();
    status()
        .file(LAST, "d2")
        .status(1)
        .stderr("error: .rookery/coordination/deploys/d2: missing: .rookery/coordination/deploys/last names deploy `d2`, whose record is gone\n")
        .run();
    // The commands that resume or roll back read the same record, and refuse the same way.
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .file(LAST, "../../../etc/passwd")
        .args(["-i", "inv.yml", "rollback", "pb.yml"])
        .status(1)
        .stderr_has(pointer)
        .run();
}

#[test]
fn a_version_that_is_not_a_name_is_refused() {
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["-i", "inv.yml", "rollout", "pb.yml", "--version", "../../x"])
        .status(2)
        .stderr("error: --version `../../x` may only contain letters, digits, `.`, `_` and `-`, and must start with a letter or digit\n")
        .run();
}

/// A metainfo made by rookery for a small tree, then altered by `craft`.
fn crafted(dir: &std::path::Path, craft: impl FnOnce(&mut Metainfo)) -> Vec<u8> {
    let art = dir.join("art");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(art.join("a"), "a".repeat(100)).unwrap();
    std::fs::write(art.join("b"), "b".repeat(100)).unwrap();
    let mut m = rookery::torrent::metainfo::create(&art, &Default::default()).unwrap();
    craft(&mut m);
    m.to_bytes()
}

#[test]
fn a_piece_length_rookery_does_not_use_is_refused_before_the_engine_sees_it() {
    for (shift, shown) in [
        (32, "4294967296"),
        (62, "4611686018427387904"),
        (13, "8192"),
    ] {
        let t = Test::new();
        let out = t.args(["--version"]).run();
        let bytes = crafted(out.dir.path(), |m| m.info.piece_length = 1 << shift);
        std::fs::write(out.dir.path().join("x.torrent"), bytes).unwrap();
        let refused = format!(
            "invalid metainfo: piece length {shown} is outside what rookery uses (a power of two from 16KiB to 64MiB)"
        );
        let t = Test::new_in(out.dir)
            .args(["torrent", "inspect", "x.torrent"])
            .status(1)
            .stderr(&format!("error: reading x.torrent: {refused}\n"))
            .run();
        // The host side refuses it the same way, before anything is written.
        let t = Test::new_in(t.dir)
            .args([
                "agent",
                "fetch",
                "--torrent",
                "x.torrent",
                "--destination",
                "dest",
            ])
            .args(["--version", "v1", "--host", "h", "--listen", "127.0.0.1:0"])
            .args(["--tracker", "http://127.0.0.1:9/announce"])
            .status(1)
            .stderr_has(&refused)
            .run();
        assert!(!t.dir.path().join("dest").exists());
    }
}

#[test]
fn file_lengths_that_overflow_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crafted(dir.path(), |m| {
        // Bencode integers are i64: three files to pass 2^64.
        let mut third = m.info.files[1].clone();
        third.path = vec!["c".into()];
        third.length = 2;
        m.info.files[0].length = i64::MAX as u64;
        m.info.files[1].length = i64::MAX as u64;
        m.info.files.push(third);
        m.info.pieces.clear();
    });
    let err = Metainfo::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid metainfo: the file lengths add up to more than 2^64 bytes"
    );
}

#[test]
fn deeply_nested_bencode_is_refused_without_overflowing_the_stack() {
    let mut bytes = b"d4:junk".to_vec();
    bytes.extend(std::iter::repeat_n(b'l', 1_000_000));
    bytes.extend(std::iter::repeat_n(b'e', 1_000_001));
    let err = Metainfo::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid metainfo: lists and dictionaries nest deeper than 32 levels"
    );
}

/// The README's "Bad input" block: the command line, then what it prints.
fn readme_bad_input() -> (Vec<String>, String) {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme.find("## Bad input").unwrap()..];
    let block = &section[section.find("```text\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let (command, output) = block.split_once('\n').unwrap();
    let args = command
        .strip_prefix("$ rookery ")
        .unwrap()
        .split(' ')
        .map(str::to_string)
        .collect();
    (args, output.to_string())
}

#[test]
fn the_readme_bad_input_example_is_what_rookery_prints() {
    let (args, output) = readme_bad_input();
    let fixtures = repo().join("tests/fixtures/bad-input");
    let read = |p: &str| std::fs::read_to_string(fixtures.join(p)).unwrap();
    Test::new()
        .file("inventory/prod.yml", &read("inventory/prod.yml"))
        .file("playbooks/api.yml", &read("playbooks/api.yml"))
        .args(args)
        .status(3)
        .stderr(&output)
        .run();
}

#[test]
fn a_bad_duration_does_not_hide_the_cycle_and_quorum_of_the_same_file() {
    let pb = demo("playbooks/demo.yml")
        .replace("seed_window: 5s", "seed_window: 5 s")
        .replace("depends_on: [store]", "depends_on: [store, web]")
        .replace("quorum: 3    ", "quorum: 4    ");
    let at = |needle: &str, col: usize| format!("pb.yml:{}:{col}", line_of(&pb, needle));
    plan_demo()
        .file("inv.yml", &demo("inventory/local.yml"))
        .file("pb.yml", &pb)
        .status(3)
        .stderr(&format!(
            "error: invalid configuration: 3 problems found
  {}: `distribution.seed_window`: `5 s` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)
  {}: dependency cycle: api -> web -> api
  {}: quorum of service `web` is 4 but it runs on 4 hosts: no host could ever restart (quorum must be below the host count)
",
            at("seed_window:", 16),
            at("depends_on: [store, web]", 18),
            at("# of 4 hosts: one at a time", 13),
        ))
        .run();
}

/// The property harness: valid inputs, mutated (bytes flipped, inserted, deleted,
/// slices repeated), fed to the three parsers that read what others write. None may
/// panic, and under nextest (one process per test) the address space is capped, so a
/// parser that balloons fails the test instead of the machine.
mod harness {
    use proptest::prelude::*;
    use std::path::Path;

    use rookery::config::inventory::Inventory;
    use rookery::config::playbook::Playbook;
    use rookery::torrent::metainfo::Metainfo;
    use rookery::tracker::announce::parse_request;

    /// Address space for one harness test: far above what the parsers need.
    const MEMORY_CAP: u64 = 2 << 30;

    fn cap_memory() {
        if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test") {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_CAP,
                rlim_max: MEMORY_CAP,
            };
            // SAFETY: setrlimit on this process, with a valid struct.
            unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
        }
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Flip(usize, u8),
        Insert(usize, u8),
        Delete(usize, usize),
        Repeat(usize, usize, usize),
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        let special = prop_oneof![
            any::<u8>(),
            Just(0u8),
            Just(0xff),
            Just(b'&'),
            Just(b'*'),
            Just(b'['),
            Just(b'l'),
            Just(b'e'),
            Just(b':'),
            Just(b'%'),
            Just(b'\n'),
        ];
        let edit = prop_oneof![
            (any::<usize>(), special.clone()).prop_map(|(at, b)| Edit::Flip(at, b)),
            (any::<usize>(), special).prop_map(|(at, b)| Edit::Insert(at, b)),
            (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), 1usize..64, 2usize..50)
                .prop_map(|(at, n, times)| Edit::Repeat(at, n, times)),
        ];
        proptest::collection::vec(edit, 1..8)
    }

    fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for e in edits {
            let len = b.len().max(1);
            match *e {
                Edit::Flip(at, x) if !b.is_empty() => b[at % len] = x,
                Edit::Flip(..) => {}
                Edit::Insert(at, x) => b.insert(at % (b.len() + 1), x),
                Edit::Delete(at, n) => {
                    let at = at % len;
                    b.drain(at.min(b.len())..(at + n).min(b.len()));
                }
                Edit::Repeat(at, n, times) => {
                    let at = at % len;
                    let piece = b[at.min(b.len())..(at + n).min(b.len())].to_vec();
                    for _ in 0..times {
                        b.splice(at.min(b.len())..at.min(b.len()), piece.iter().copied());
                    }
                }
            }
        }
        b
    }

    fn seed(path: &str) -> Vec<u8> {
        std::fs::read(crate::support::repo().join(path)).unwrap()
    }

    fn torrent() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let art = dir.path().join("art");
        std::fs::create_dir_all(art.join("bin")).unwrap();
        std::fs::write(art.join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::write(art.join("data"), "x".repeat(200_000)).unwrap();
        std::fs::write(art.join("empty"), "").unwrap();
        std::os::unix::fs::symlink("bin/tool", art.join("link")).unwrap();
        rookery::torrent::metainfo::create(&art, &Default::default())
            .unwrap()
            .to_bytes()
    }

    fn yaml(file: &str, bytes: Vec<u8>) {
        if let Ok(text) = rookery::config::yaml::text_of(file, bytes) {
            let _ = Inventory::parse(file, &text, Path::new("/"));
            let _ = Playbook::parse(file, &text, Path::new("/"));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn mutated_inventories_and_playbooks(edits in edits()) {
            cap_memory();
            yaml("inv.yml", mutate(&seed("inventory/local.yml"), &edits));
            yaml("pb.yml", mutate(&seed("playbooks/demo.yml"), &edits));
            yaml("pb.yml", mutate(&seed("tests/fixtures/bad-input/playbooks/api.yml"), &edits));
        }

        #[test]
        fn mutated_metainfo(edits in edits()) {
            cap_memory();
            thread_local!(static SEED: Vec<u8> = torrent());
            let bytes = SEED.with(|s| mutate(s, &edits));
            if let Ok(m) = Metainfo::from_bytes(&bytes) {
                let _ = (m.total_length(), m.piece_count(), m.content_version(), m.info_hash());
            }
        }

        #[test]
        fn mutated_announces(edits in edits()) {
            cap_memory();
            let head = b"GET /announce?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&peer_id=-RK0001-abcdefghijkl&port=6881&uploaded=0&downloaded=10&left=90&event=started&compact=1&numwant=50&host=web-1 HTTP/1.1\r\nHost: t\r\n\r\n";
            let _ = parse_request(&mutate(head, &edits));
            let status = b"GET /status?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&host=web-1 HTTP/1.1\r\n\r\n";
            let _ = parse_request(&mutate(status, &edits));
        }
    }
}
