//! BitTorrent v1 metainfo for an artifact tree, and the manifest of what BitTorrent
//! cannot carry.
//!
//! The same tree always gives the same bytes and the same info hash: paths are sorted
//! (or laid out after a given previous release, deterministically), nothing records a
//! time, and the piece size depends only on the total size. The content version does
//! not depend on the layout. The torrent is private (no DHT, no PEX outside the
//! tracker's swarm).
//!
//! BitTorrent carries file bytes only. File modes, empty files, empty directories and
//! symlinks travel in a manifest stored under the top-level `rookery` key of the same
//! file (other clients ignore it); hosts restore them after verification. Symlinks that
//! point outside the tree, and special files, are refused when the torrent is created,
//! and paths that could escape the destination are refused when one is read.
//!
//! rookery writes its own metainfo instead of using librqbit's `create_torrent`, which
//! in 9.1.0 writes an extra piece hash when the size is an exact multiple of the piece
//! length and drops the last one when the last file is empty.

mod create;

pub use create::{CreateOptions, FileStat, HashWork, Hashed, Stats, create, create_with_stats};

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Link(#[from] crate::torrent::links::Escape),
    #[error("`{0}` is not a regular file, directory or symlink; it cannot be shipped")]
    Special(String),
    #[error(
        "`{path}` has the {what} bit set (mode {mode:04o}); set `artifact.special_bits: keep` in the playbook (`--keep-special-bits` for `torrent create`) to ship it to every host as it is, or clear the bit in the build"
    )]
    SpecialBits {
        path: String,
        mode: u32,
        what: &'static str,
    },
    #[error("path `{0}` is not valid UTF-8")]
    NotUtf8(String),
    #[error("the artifact `{0}` holds no bytes to distribute")]
    Empty(PathBuf),
    #[error("invalid metainfo: {0}")]
    Invalid(String),
    #[error("metainfo path `{0}` would escape the destination")]
    UnsafePath(String),
}

type Result<T> = std::result::Result<T, MetainfoError>;

/// The `info` dictionary (BEP 3, multi-file mode). Field names are the wire keys;
/// serde_bencode writes dictionary keys sorted, as bencode requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub files: Vec<InfoFile>,
    pub name: String,
    #[serde(rename = "piece length")]
    pub piece_length: u64,
    #[serde(with = "serde_bytes")]
    pub pieces: Vec<u8>,
    #[serde(default)]
    pub private: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoFile {
    pub length: u64,
    pub path: Vec<String>,
}

/// What BitTorrent does not carry. Paths are relative, `/`-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every directory (empty or not) and its permission bits.
    pub dirs: Vec<Entry>,
    /// Permission bits of every file in the torrent, in torrent order.
    pub files: Vec<Entry>,
    /// Zero-length files, created by the host rather than transferred.
    pub empty: Vec<Entry>,
    pub symlinks: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    /// SHA-1 of a file's whole content (files only): how a host finds a file it
    /// already has under another name, and how the next release is laid out.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Vec::is_empty")]
    pub sha1: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub path: String,
    pub target: String,
}

impl Manifest {
    /// Every symlink resolves inside the tree, following the others.
    fn check_links(&self) -> Result<()> {
        crate::torrent::links::check(
            self.symlinks
                .iter()
                .map(|l| (l.path.as_str(), l.target.as_str())),
        )?;
        Ok(())
    }
}

/// A whole metainfo file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metainfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<String>,
    pub info: Info,
    #[serde(default)]
    pub rookery: Manifest,
}

/// Piece size for `total` bytes: about 1,000 to 2,000 pieces, between 64 KiB and
/// 16 MiB, always a power of two.
pub fn auto_piece_size(total: u64) -> u64 {
    (total / 1500).next_power_of_two().clamp(64 << 10, 16 << 20)
}

/// Piece sizes rookery accepts from a playbook or `--piece-size`: a power of two from
/// 16 KiB to 64 MiB.
pub fn valid_piece_size(n: u64) -> bool {
    n.is_power_of_two() && (16 << 10..=64 << 20).contains(&n)
}

impl Metainfo {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_bencode::to_bytes(self).expect("metainfo always serializes")
    }

    /// Parses and checks a metainfo file: piece count, and paths that cannot escape the
    /// destination (no `..`, no absolute or empty components) in files and manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo> {
        check_nesting(bytes)?;
        let m: Metainfo =
            serde_bencode::from_bytes(bytes).map_err(|e| MetainfoError::Invalid(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// Bytes in the torrent. Saturates rather than wraps: a crafted metainfo whose
    /// lengths overflow is refused by [`Metainfo::from_bytes`], never summed to junk.
    pub fn total_length(&self) -> u64 {
        self.checked_total_length().unwrap_or(u64::MAX)
    }

    fn checked_total_length(&self) -> Option<u64> {
        self.info
            .files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.length))
    }

    pub fn piece_count(&self) -> usize {
        self.info.pieces.len() / 20
    }

    /// SHA-1 of the bencoded `info` dictionary.
    pub fn info_hash(&self) -> [u8; 20] {
        let bytes = serde_bencode::to_bytes(&self.info).expect("info always serializes");
        Sha1::digest(&bytes).into()
    }

    pub fn info_hash_hex(&self) -> String {
        hex(&self.info_hash())
    }

    /// A version label derived from the content: the first 12 hex digits of the SHA-1
    /// of every path with its mode and, for files, length and content digest, in path
    /// order, and the empty files, directories and symlinks. A mode change is a new
    /// version; the layout in pieces is not (the same tree laid out after different
    /// previous releases is one version).
    pub fn content_version(&self) -> String {
        let m = &self.rookery;
        let mut files: Vec<(&Entry, u64)> = m
            .files
            .iter()
            .zip(&self.info.files)
            .map(|(e, f)| (e, f.length))
            .collect();
        files.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        // A metainfo made before files carried digests (or by another tool): its
        // layout names the content. Hashed once, not once per file.
        let layout = files
            .iter()
            .any(|(e, _)| e.sha1.is_empty())
            .then(|| self.info_hash());
        let mut h = Sha1::new();
        for (e, len) in files {
            h.update(format!("f {} {:o} {len} ", e.path, e.mode));
            match (&layout, e.sha1.is_empty()) {
                (Some(layout), true) => h.update(layout),
                _ => h.update(&e.sha1),
            }
            h.update(b"\n");
        }
        for (kind, list) in [("d", &m.dirs), ("e", &m.empty)] {
            let mut list: Vec<&Entry> = list.iter().collect();
            list.sort_by(|a, b| a.path.cmp(&b.path));
            for e in list {
                h.update(format!("{kind} {} {:o}\n", e.path, e.mode));
            }
        }
        let mut links: Vec<&Link> = m.symlinks.iter().collect();
        links.sort_by(|a, b| a.path.cmp(&b.path));
        for l in links {
            h.update(format!("l {} {}\n", l.path, l.target));
        }
        hex(&h.finalize())[..12].to_string()
    }

    fn check(&self) -> Result<()> {
        let i = &self.info;
        check_component(&i.name)?;
        // Only the sizes rookery makes: the engine's length arithmetic divides by
        // piece sizes in u32, and 2^32 made `agent fetch` panic.
        if !valid_piece_size(i.piece_length) {
            return Err(MetainfoError::Invalid(format!(
                "piece length {} is outside what rookery uses (a power of two from 16KiB to 64MiB)",
                i.piece_length
            )));
        }
        if !i.pieces.len().is_multiple_of(20) {
            return Err(MetainfoError::Invalid(
                "`pieces` is not a list of 20-byte hashes".into(),
            ));
        }
        let total = self.checked_total_length().ok_or_else(|| {
            MetainfoError::Invalid("the file lengths add up to more than 2^64 bytes".into())
        })?;
        let expected = total.div_ceil(i.piece_length);
        if self.piece_count() as u64 != expected {
            return Err(MetainfoError::Invalid(format!(
                "{} piece hashes for {} pieces",
                self.piece_count(),
                expected
            )));
        }
        for f in &i.files {
            if f.path.is_empty() {
                return Err(MetainfoError::UnsafePath(String::new()));
            }
            for c in &f.path {
                check_component(c).map_err(|_| MetainfoError::UnsafePath(f.path.join("/")))?;
            }
        }
        let m = &self.rookery;
        for p in m
            .dirs
            .iter()
            .chain(&m.files)
            .chain(&m.empty)
            .map(|e| &e.path)
            .chain(m.symlinks.iter().map(|l| &l.path))
        {
            check_relative(p)?;
        }
        m.check_links()
    }
}

/// Deepest nesting of bencode lists and dictionaries accepted; rookery's own
/// metainfo nests five deep.
const MAX_NESTING: usize = 32;

/// Refuses bencode nested deeper than [`MAX_NESTING`] before serde_bencode sees it:
/// its decoder recurses once per level, even in keys it ignores, so a megabyte of `l`
/// overflowed the stack. Anything malformed is left to the decoder to name.
fn check_nesting(bytes: &[u8]) -> Result<()> {
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'l' | b'd' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(MetainfoError::Invalid(format!(
                        "lists and dictionaries nest deeper than {MAX_NESTING} levels"
                    )));
                }
                i += 1;
            }
            b'e' => {
                depth = depth.saturating_sub(1);
                i += 1;
                if depth == 0 {
                    return Ok(());
                }
            }
            b'i' => match bytes[i..].iter().position(|&b| b == b'e') {
                Some(end) => i += end + 1,
                None => return Ok(()),
            },
            b'0'..=b'9' => {
                let Some(colon) = bytes[i..].iter().position(|&b| b == b':') else {
                    return Ok(());
                };
                let len = std::str::from_utf8(&bytes[i..i + colon])
                    .ok()
                    .and_then(|t| t.parse::<usize>().ok());
                match len {
                    Some(len) => i = (i + colon + 1).saturating_add(len),
                    None => return Ok(()),
                }
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn check_component(c: &str) -> Result<()> {
    if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\0']) {
        return Err(MetainfoError::UnsafePath(c.to_string()));
    }
    Ok(())
}

fn check_relative(path: &str) -> Result<()> {
    if path.split('/').all(|c| check_component(c).is_ok()) {
        Ok(())
    } else {
        Err(MetainfoError::UnsafePath(path.to_string()))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex text; `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
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
        std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
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
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for (name, len, byte) in [
            ("a", 300_000, 1u8),
            ("b", 200_000, 2),
            ("c", 500_000, 3),
            ("d", 70_000, 4),
        ] {
            std::fs::write(r.join(name), vec![byte; len]).unwrap();
        }
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
        // The same layout, every byte read: no file's stats to trust.
        let from_scratch = |prev: &Metainfo| {
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
        };
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

        // b grows, d is rewritten in place with its mtime put back.
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
}
