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
mod hash;

pub use create::{
    CreateOptions, FileStat, HashWork, Hashed, Stats, create, create_logged, create_with_stats,
    load_stats, save_stats,
};

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
mod tests;
