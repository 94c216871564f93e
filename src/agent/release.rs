//! The release directories on a host, and how a verified download becomes one.
//!
//! ```text
//! <destination>/
//!   releases/<version>/            complete, verified, installed releases
//!   releases/.staging-<version>/   a download in progress (same filesystem, hidden)
//!   current -> releases/<version>  switched by the rollout, never by the fetch
//!   .rookery/                      agent logs
//! ```
//!
//! A release directory exists only once its copy is complete: the staging directory
//! is verified, pruned of anything the metainfo does not list, given the manifest's
//! modes, empty files, empty directories and symlinks, and then renamed into place
//! in one `rename(2)`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::torrent::metainfo::Metainfo;

#[derive(Debug, Clone)]
pub struct Layout {
    pub destination: PathBuf,
}

impl Layout {
    pub fn new(destination: &Path) -> Layout {
        Layout {
            destination: destination.to_path_buf(),
        }
    }

    pub fn releases(&self) -> PathBuf {
        self.destination.join("releases")
    }

    pub fn release(&self, version: &str) -> PathBuf {
        self.releases().join(version)
    }

    pub fn staging(&self, version: &str) -> PathBuf {
        self.releases().join(format!(".staging-{version}"))
    }

    pub fn current(&self) -> PathBuf {
        self.destination.join("current")
    }

    pub fn logs(&self) -> PathBuf {
        self.destination.join(".rookery")
    }

    /// The release to start an incremental fetch from: what `current` points to, else
    /// the most recently installed release other than `version`.
    pub fn previous(&self, version: &str) -> Option<PathBuf> {
        if let Ok(target) = fs::read_link(self.current()) {
            let p = self.destination.join(target);
            if p.is_dir() && p != self.release(version) {
                return Some(p);
            }
        }
        let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
        for entry in fs::read_dir(self.releases()).ok()?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == version {
                continue;
            }
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                best = Some((modified, entry.path()));
            }
        }
        best.map(|(_, p)| p)
    }
}

/// Copies into `staging` what the new release can take from `previous` (an
/// installed release, `previous_meta` its metainfo if the host still has it), so the
/// engine's check finds those pieces done and only the rest travels:
///
/// 1. a file whose content `previous` held under any name (by the manifest's
///    digests): a renamed or moved file travels no more;
/// 2. a file at the same path with the same length (releases without digests);
/// 3. a file at the same path with another length, cut or extended to the new
///    length: a file that was appended to keeps its unchanged pieces.
///
/// A wrong guess costs only bandwidth: every piece is verified. Copies, not hard
/// links: the engine writes into staged files, and a link would let it write into a
/// live release. (`std::fs::copy` uses `copy_file_range`, which clones extents on
/// filesystems that can.) A file already staged at its length (an interrupted
/// fetch) is left as it is. Returns the bytes copied.
pub fn seed_from_previous(
    staging: &Path,
    previous: &Path,
    previous_meta: Option<&Metainfo>,
    m: &Metainfo,
) -> io::Result<u64> {
    let by_digest: std::collections::HashMap<&[u8], &str> = previous_meta
        .map(|p| {
            p.rookery
                .files
                .iter()
                .filter(|e| !e.sha1.is_empty())
                .map(|e| (e.sha1.as_slice(), e.path.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let regular = |p: &Path| fs::symlink_metadata(p).ok().filter(|md| md.is_file());
    let mut copied = 0;
    for (i, f) in m.info.files.iter().enumerate() {
        let rel: PathBuf = f.path.iter().collect();
        let dst = staging.join(&rel);
        if regular(&dst).is_some_and(|md| md.len() == f.length) {
            continue;
        }
        let same_content = m
            .rookery
            .files
            .get(i)
            .and_then(|e| by_digest.get(e.sha1.as_slice()))
            .map(|p| previous.join(p))
            .filter(|p| regular(p).is_some_and(|md| md.len() == f.length));
        let same_path = previous.join(&rel);
        let Some(src) = same_content.or_else(|| regular(&same_path).map(|_| same_path)) else {
            continue;
        };
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        let _ = fs::remove_file(&dst);
        let len = fs::copy(&src, &dst)?;
        // The engine opens staged files read-write.
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))?;
        if len != f.length {
            fs::OpenOptions::new()
                .write(true)
                .open(&dst)?
                .set_len(f.length)?;
        }
        copied += len.min(f.length);
    }
    Ok(copied)
}

/// Every path the release holds, relative, with all parent directories.
fn expected_paths(m: &Metainfo) -> HashSet<PathBuf> {
    let mut set = HashSet::new();
    let mut add = |p: PathBuf| {
        // Parents first, and no further once a parent is known (its own parents are).
        for parent in p.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()) {
            if !set.insert(parent.to_path_buf()) {
                break;
            }
        }
        set.insert(p);
    };
    for f in &m.info.files {
        add(f.path.iter().collect());
    }
    let r = &m.rookery;
    for p in r
        .dirs
        .iter()
        .chain(&r.empty)
        .chain(&r.files)
        .map(|e| &e.path)
    {
        add(PathBuf::from(p));
    }
    for l in &r.symlinks {
        add(PathBuf::from(&l.path));
    }
    set
}

/// Removes from `root` everything the metainfo does not list, and every symlink
/// (they are recreated from the manifest), so a reused staging directory cannot
/// smuggle stale files into a release; what stays is made writable for the engine.
pub fn prune(root: &Path, m: &Metainfo) -> io::Result<()> {
    let expected = expected_paths(m);
    prune_dir(root, Path::new(""), &expected)
}

fn prune_dir(root: &Path, rel: &Path, expected: &HashSet<PathBuf>) -> io::Result<()> {
    let entries = match fs::read_dir(root.join(rel)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let ty = entry.file_type()?;
        if ty.is_symlink() || !expected.contains(&child) {
            if ty.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        } else if ty.is_dir() {
            // A failed earlier install may have left read-only modes behind.
            set_mode_bits(&entry.path(), 0o700)?;
            prune_dir(root, &child, expected)?;
        } else {
            set_mode_bits(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

fn set_mode_bits(path: &Path, bits: u32) -> io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & bits != bits {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | bits))?;
    }
    Ok(())
}

/// Gives the verified tree under `root` what BitTorrent cannot carry: empty
/// directories and files, symlinks, and modes. Directory modes go last, deepest first,
/// so a read-only directory does not block what goes inside it.
pub fn restore_manifest(root: &Path, m: &Metainfo) -> io::Result<()> {
    let r = &m.rookery;
    for d in &r.dirs {
        fs::create_dir_all(root.join(&d.path))?;
    }
    for e in &r.empty {
        let p = root.join(&e.path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::File::create(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(e.mode))?;
    }
    for l in &r.symlinks {
        let p = root.join(&l.path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        let _ = fs::remove_file(&p);
        symlink(&l.target, &p)?;
    }
    for f in &r.files {
        fs::set_permissions(root.join(&f.path), fs::Permissions::from_mode(f.mode))?;
    }
    let mut dirs: Vec<_> = r.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.matches('/').count()));
    for d in dirs {
        fs::set_permissions(root.join(&d.path), fs::Permissions::from_mode(d.mode))?;
    }
    Ok(())
}

/// Moves the staging directory into place in one rename.
pub fn install(layout: &Layout, version: &str) -> io::Result<PathBuf> {
    let target = layout.release(version);
    fs::rename(layout.staging(version), &target)?;
    Ok(target)
}
