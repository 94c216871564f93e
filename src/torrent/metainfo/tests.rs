//! Metainfo made from trees on disk: the same tree gives the same hash, unchanged
//! files are not read again, and what could escape the tree is refused.

use super::create::*;
use super::*;
use std::os::unix::fs::symlink;

#[test]
fn unhex_inverts_hex_and_refuses_anything_else() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(&hex(&bytes)), Some(bytes));
    assert_eq!(unhex("0A"), Some(vec![10]));
    for bad in ["abc", "+a", "zz", "0 "] {
        assert_eq!(unhex(bad), None, "{bad}");
    }
}

fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::create_dir_all(r.join("empty/dir")).unwrap();
    std::fs::write(r.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(r.join("data"), vec![7u8; 200_000]).unwrap();
    std::fs::write(r.join("zero"), b"").unwrap();
    symlink("bin/tool", r.join("link")).unwrap();
    t
}

#[test]
fn same_tree_same_hash() {
    let a = tree();
    let b = tree();
    let opts = CreateOptions {
        name: Some("x".into()),
        ..Default::default()
    };
    let ma = create(a.path(), &opts).unwrap();
    let mb = create(b.path(), &opts).unwrap();
    assert_eq!(ma.to_bytes(), mb.to_bytes());
    assert_eq!(ma.info_hash(), mb.info_hash());
    assert_eq!(ma.info.private, 1);
    let paths: Vec<String> = ma.info.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(paths, ["bin/tool", "data"]);
    assert_eq!(
        ma.rookery.empty,
        [Entry {
            path: "zero".into(),
            mode: ma.rookery.empty[0].mode,
            sha1: Vec::new(),
        }]
    );
    assert_eq!(
        ma.rookery.symlinks,
        [Link {
            path: "link".into(),
            target: "bin/tool".into()
        }]
    );
    assert!(ma.rookery.dirs.iter().any(|d| d.path == "empty/dir"));
    assert_eq!(ma.rookery.files[0].mode, 0o755);
    assert_eq!(
        ma.rookery.files[1].sha1,
        Sha1::digest(vec![7u8; 200_000]).to_vec()
    );
    assert_eq!(Metainfo::from_bytes(&ma.to_bytes()).unwrap(), ma);
}

/// After a previous release, known content keeps its order (renamed or not) and
/// changed or new files go last; the version does not depend on the order.
#[test]
fn a_release_is_laid_out_after_the_previous_one() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    for (name, byte) in [("a", 1u8), ("b", 2), ("c", 3), ("d", 4)] {
        std::fs::write(r.join(name), vec![byte; 1000]).unwrap();
    }
    let opts = CreateOptions {
        name: Some("x".into()),
        ..Default::default()
    };
    let v1 = create(r, &opts).unwrap();
    // b grows, c is renamed to z, e is new.
    std::fs::write(r.join("b"), vec![2u8; 1500]).unwrap();
    std::fs::rename(r.join("c"), r.join("z")).unwrap();
    std::fs::write(r.join("e"), vec![5u8; 10]).unwrap();
    let after = CreateOptions {
        previous: Some(v1.rookery.clone()),
        ..opts.clone()
    };
    let v2 = create(r, &after).unwrap();
    let order: Vec<String> = v2.info.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(order, ["a", "z", "d", "b", "e"]);
    let paths: Vec<&str> = v2.rookery.files.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["a", "z", "d", "b", "e"],
        "manifest in torrent order"
    );
    let sorted = create(r, &opts).unwrap();
    assert_ne!(sorted.info_hash(), v2.info_hash());
    assert_eq!(sorted.content_version(), v2.content_version());
    assert_ne!(v1.content_version(), v2.content_version());
    // Nothing changed since: the previous order, so the same info hash.
    let again = create(
        r,
        &CreateOptions {
            previous: Some(v2.rookery.clone()),
            ..opts
        },
    )
    .unwrap();
    assert_eq!(again.info_hash(), v2.info_hash());
}

/// A release whose hashes reuse the previous one's equals one hashed from
/// scratch, and reads only what changed: a new file; then a file appended to and
/// one rewritten in place with its modification time put back (its change time
/// moves, so it is read again).
#[test]
fn unchanged_files_are_not_read_again_and_the_result_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write_a_to_d(r);
    let opts = CreateOptions {
        name: Some("x".into()),
        piece_size: Some(65_536),
        ..Default::default()
    };
    let next = |prev: &Metainfo, stats: Stats| CreateOptions {
        previous: Some(prev.rookery.clone()),
        reuse: Some(Hashed {
            metainfo: prev.clone(),
            stats,
        }),
        ..opts.clone()
    };
    let from_scratch = |prev: &Metainfo| from_scratch(r, &opts, prev);
    let (v1, stats, work) = create_with_stats(r, &opts).unwrap();
    assert_eq!(work.piece_bytes_reused, 0);
    assert_eq!(work.file_bytes_read, 1_070_000);

    // A new file only: a to d are where they were, so every piece made only of
    // them is reused (16 whole pieces); the one they share with e is read.
    std::fs::write(r.join("e"), vec![5u8; 10_000]).unwrap();
    let (v2, stats, work) = create_with_stats(r, &next(&v1, stats)).unwrap();
    assert_eq!(v2.to_bytes(), from_scratch(&v1).to_bytes());
    assert_eq!(work.file_bytes_read, 10_000);
    assert_eq!(work.piece_bytes_reused, 16 * 65_536);
    assert_eq!(
        work.piece_bytes_read + work.piece_bytes_reused,
        v2.total_length()
    );

    grow_b_and_rewrite_d_in_place(r);
    let again = next(&v2, stats);
    let (v3, _, work) = create_with_stats(r, &again).unwrap();
    assert_eq!(v3.to_bytes(), from_scratch(&v2).to_bytes());
    // Digests read: b and d only (d's content changed, though its mtime did not).
    assert_eq!(work.file_bytes_read, 201_000 + 70_000);
    // a kept its place (4 whole pieces); b grew, so it went to the end and c
    // moved up behind a: c's pieces are read. d, changed in place at its size,
    // keeps its slot after c.
    assert_eq!(work.piece_bytes_reused, 4 * 65_536);
    let order: Vec<String> = v3.info.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(order, ["a", "c", "d", "e", "b"]);

    // Another piece size: nothing to reuse, the same answer as from scratch.
    let other = CreateOptions {
        piece_size: Some(32_768),
        ..again.clone()
    };
    let (v4, _, work) = create_with_stats(r, &other).unwrap();
    assert_eq!(work.piece_bytes_reused, 0);
    let fresh = create(
        r,
        &CreateOptions {
            reuse: Some(Hashed {
                metainfo: v2.clone(),
                stats: Stats::new(),
            }),
            ..other
        },
    )
    .unwrap();
    assert_eq!(v4.to_bytes(), fresh.to_bytes());
    // In place at the same size, everything after keeps its offset.
    let (v5, stats, _) = create_with_stats(r, &next(&v2, Stats::new())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(r.join("a"), vec![8u8; 300_000]).unwrap();
    let (v6, _, work) = create_with_stats(r, &next(&v5, stats)).unwrap();
    assert_eq!(v6.to_bytes(), from_scratch(&v5).to_bytes());
    assert_eq!(work.file_bytes_read, 300_000);
    // Only the pieces holding a's bytes (0 to 300,000: 5 pieces) are read.
    assert_eq!(work.piece_bytes_read, 5 * 65_536);
}

/// Files a to d under `r`: 1,070,000 bytes, each of one byte value.
fn write_a_to_d(r: &Path) {
    for (name, len, byte) in [
        ("a", 300_000, 1u8),
        ("b", 200_000, 2),
        ("c", 500_000, 3),
        ("d", 70_000, 4),
    ] {
        std::fs::write(r.join(name), vec![byte; len]).unwrap();
    }
}

/// The metainfo of `r` laid out after `prev`, every byte read: no file's stats to
/// trust.
fn from_scratch(r: &Path, opts: &CreateOptions, prev: &Metainfo) -> Metainfo {
    create(
        r,
        &CreateOptions {
            previous: Some(prev.rookery.clone()),
            reuse: Some(Hashed {
                metainfo: prev.clone(),
                stats: Stats::new(),
            }),
            ..opts.clone()
        },
    )
    .unwrap()
}

/// b grows, d is rewritten in place with its mtime put back.
fn grow_b_and_rewrite_d_in_place(r: &Path) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(r.join("b"))
        .unwrap()
        .write_all(&[9u8; 1000])
        .unwrap();
    let d_mtime = std::fs::metadata(r.join("d")).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(r.join("d"), vec![7u8; 70_000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(r.join("d"))
        .unwrap()
        .set_modified(d_mtime)
        .unwrap();
}

fn with_64k_pieces(dir: &Path) -> Metainfo {
    create(
        dir,
        &CreateOptions {
            piece_size: Some(65_536),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn piece_count_is_exact_at_boundaries() {
    for size in [1u64, 65_535, 65_536, 65_537, 131_072] {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), vec![1u8; size as usize]).unwrap();
        std::fs::write(t.path().join("g-empty-last"), b"").unwrap();
        let m = with_64k_pieces(t.path());
        assert_eq!(m.piece_count() as u64, size.div_ceil(65_536), "size {size}");
    }
}

#[test]
fn pieces_span_files() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a"), vec![1u8; 40_000]).unwrap();
    std::fs::write(t.path().join("b"), vec![2u8; 40_000]).unwrap();
    let m = with_64k_pieces(t.path());
    let mut all = vec![1u8; 40_000];
    all.extend(vec![2u8; 40_000]);
    assert_eq!(
        &m.info.pieces[..20],
        Sha1::digest(&all[..65_536]).as_slice()
    );
    assert_eq!(
        &m.info.pieces[20..],
        Sha1::digest(&all[65_536..]).as_slice()
    );
}

/// Many pieces over files of awkward sizes, hashed in parallel, still come out in
/// order and equal to hashing the concatenation piece by piece.
#[test]
fn parallel_hashing_keeps_piece_order_across_files() {
    let t = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 65_535, 65_537, 300_001, 3, 131_072, 0, 1_000_000];
    let mut all = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let bytes: Vec<u8> = (0..*size).map(|b| (b * 31 + i * 7) as u8).collect();
        std::fs::write(t.path().join(format!("f{i:02}")), &bytes).unwrap();
        all.extend(bytes);
    }
    let m = with_64k_pieces(t.path());
    let want: Vec<u8> = all
        .chunks(65_536)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    assert_eq!(m.piece_count(), all.len().div_ceil(65_536));
    assert!(
        m.info.pieces == want,
        "piece hashes differ from a serial hash"
    );
}

#[test]
fn links_outside_the_tree_are_refused() {
    let t = tree();
    symlink("../../etc/passwd", t.path().join("bin/escape")).unwrap();
    let err = create(t.path(), &CreateOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "symlink `bin/escape` (-> `../../etc/passwd`) resolves outside the tree: only links that stay within it can be shipped"
    );
}

#[test]
fn setuid_and_setgid_are_refused_unless_kept() {
    let t = tree();
    let tool = t.path().join("bin/tool");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let err = create(t.path(), &CreateOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("`bin/tool` has the setuid bit set (mode 4755)"),
        "{err}"
    );
    let kept = CreateOptions {
        keep_special_bits: true,
        ..Default::default()
    };
    let m = create(t.path(), &kept).unwrap();
    let entry = m
        .rookery
        .files
        .iter()
        .find(|e| e.path == "bin/tool")
        .unwrap();
    assert_eq!(entry.mode, 0o4755);
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        t.path().join("bin"),
        std::fs::Permissions::from_mode(0o2755),
    )
    .unwrap();
    let err = create(t.path(), &CreateOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("`bin` has the setgid bit"),
        "{err}"
    );
}

/// Each link's text stays inside; followed through each other they climb out.
#[test]
fn a_chain_of_links_that_resolves_outside_is_refused_when_made_and_when_read() {
    let t = tree();
    symlink("..", t.path().join("bin/up")).unwrap();
    let m = create(t.path(), &CreateOptions::default()).unwrap();
    symlink("up/..", t.path().join("bin/esc")).unwrap();
    symlink("esc/../..", t.path().join("bin/esc2")).unwrap();
    let err = create(t.path(), &CreateOptions::default()).unwrap_err();
    assert!(err.to_string().contains("`bin/esc`"), "{err}");
    // A metainfo made elsewhere with the same chain is refused by a host.
    let mut crafted = m.clone();
    for (path, target) in [("bin/esc", "up/.."), ("bin/esc2", "esc/../..")] {
        crafted.rookery.symlinks.push(Link {
            path: path.into(),
            target: target.into(),
        });
    }
    let err = Metainfo::from_bytes(&crafted.to_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("resolves outside the tree"),
        "{err}"
    );
    Metainfo::from_bytes(&m.to_bytes()).unwrap();
}

#[test]
fn crafted_paths_are_refused() {
    let t = tree();
    let mut m = create(t.path(), &CreateOptions::default()).unwrap();
    m.info.files[0].path = vec!["..".into(), "evil".into()];
    let err = Metainfo::from_bytes(&m.to_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "metainfo path `../evil` would escape the destination"
    );
    let mut m = create(t.path(), &CreateOptions::default()).unwrap();
    m.rookery.empty[0].path = "/etc/x".into();
    assert!(matches!(
        Metainfo::from_bytes(&m.to_bytes()),
        Err(MetainfoError::UnsafePath(_))
    ));
    let mut m = create(t.path(), &CreateOptions::default()).unwrap();
    m.info.pieces.truncate(20 * (m.piece_count() - 1));
    assert_eq!(
        Metainfo::from_bytes(&m.to_bytes()).unwrap_err().to_string(),
        "invalid metainfo: 3 piece hashes for 4 pieces"
    );
}

#[test]
fn auto_piece_sizes() {
    assert_eq!(auto_piece_size(1 << 20), 64 << 10);
    assert_eq!(auto_piece_size(512 << 20), 512 << 10);
    assert_eq!(auto_piece_size(10 << 30), 8 << 20);
    assert_eq!(auto_piece_size(1 << 40), 16 << 20);
}
