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

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// What a file of an installed release looked like once it was verified and
/// installed. A file that still looks the same holds the same bytes: writing a file
/// moves its modification time, and only a tool that sets it back on purpose hides a
/// change (rsync's quick check trusts the same). The change time is left out: linking
/// the file into the next release, or removing an older release that links it,
/// moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Look {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Look {
    fn of(md: &fs::Metadata) -> Look {
        Look {
            size: md.len(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

/// How recent a modification time is too recent to record: longer than a tick of
/// the coarse clock filesystems stamp files with (1 to 10 ms).
const RACY_NS: i128 = 20_000_000;

/// [`Look`] of every file of a release, by its path in the release.
pub type Looks = BTreeMap<String, Look>;

impl Layout {
    /// Where release `version`'s metainfo is kept (the controller puts it there).
    pub fn metainfo(&self, version: &str) -> PathBuf {
        self.logs().join(format!("{version}.torrent"))
    }

    /// Where the looks of release `version`'s files are kept, beside its metainfo.
    pub fn looks(&self, version: &str) -> PathBuf {
        self.logs().join(format!("{version}.files.json"))
    }
}

/// Records the installed release `version` for the next release to link the files
/// it shares ([`seed_from_previous`]): its metainfo (`torrent`, unless the controller
/// put it there already) and what every file looks like.
pub fn record_installed(
    layout: &Layout,
    version: &str,
    torrent: &[u8],
    m: &Metainfo,
) -> io::Result<()> {
    let meta = layout.metainfo(version);
    if fs::read(&meta).ok().as_deref() != Some(torrent) {
        crate::os::write_atomically(&meta, torrent, 0o644)?;
    }
    let release = layout.release(version);
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128)
    };
    let look_all = || -> io::Result<Looks> {
        m.rookery
            .files
            .iter()
            .map(|f| {
                Ok((
                    f.path.clone(),
                    Look::of(&fs::symlink_metadata(release.join(&f.path))?),
                ))
            })
            .collect()
    };
    // A file written in the last moments before this record could be written again
    // within the same tick of the filesystem's clock (a few milliseconds) and still
    // look unchanged. So the record waits until the newest write is older than a
    // tick, looks again, and leaves out a file written meanwhile (it is copied and
    // checked next time).
    let mut looks = look_all()?;
    let newest = looks.values().map(|l| l.mtime_ns).max().unwrap_or(0);
    // At most a little more than one wait: a modification time in the future (a
    // clock set back) is left out below, not waited for.
    let wait = (newest + RACY_NS - now_ns()).min(RACY_NS) + 2_000_000;
    if wait > 2_000_000 {
        std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
        let settled = now_ns() - RACY_NS;
        looks = look_all()?;
        looks.retain(|_, l| l.mtime_ns < settled);
    }
    let text = serde_json::to_vec(&looks).map_err(io::Error::other)?;
    crate::os::write_atomically(&layout.looks(version), &text, 0o644)
}

/// The looks recorded when release `version` was installed, if they are there.
pub fn recorded_looks(layout: &Layout, version: &str) -> Option<Looks> {
    let bytes = fs::read(layout.looks(version)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What [`seed_from_previous`] placed in the staging directory.
#[derive(Debug, Default)]
pub struct Seeded {
    /// Bytes copied from the previous release.
    pub copied: u64,
    /// For each file of the new metainfo, whether it is a hard link to a file of the
    /// previous release that is unchanged since that release was verified: its pieces
    /// need no check, and nothing may write it (it is live).
    pub linked: Vec<bool>,
}

impl Seeded {
    /// Bytes hard-linked to the previous release, of `m`'s files.
    pub fn linked_bytes(&self, m: &Metainfo) -> u64 {
        m.info
            .files
            .iter()
            .zip(&self.linked)
            .filter(|(_, l)| **l)
            .map(|(f, _)| f.length)
            .sum()
    }
}

/// Places into `staging` what the new release can take from `previous` (an
/// installed release, `previous_meta` its metainfo and `looks` its files' looks when
/// installed, if the host still has them), so that only the rest travels:
///
/// 1. a file whose content `previous` held under any name (by the manifest's
///    digests), unchanged since `previous` was installed ([`Look`]) and with the
///    same mode, is hard-linked: nothing is read or written, and its pieces are
///    known good. A renamed or moved file travels no more;
/// 2. any other file with content in `previous` (changed since, another mode, or
///    on a filesystem without links), or at the same path with the same length
///    (releases without digests), is copied;
/// 3. a file at the same path with another length is copied and cut or extended
///    to the new length: a file that was appended to keeps its unchanged pieces.
///
/// Copies are checked by the engine; a wrong guess costs only bandwidth. Links are
/// never written: the engine opens them read-only and drops writes to them
/// ([`crate::torrent::storage::SealableFactory::with_linked`]), which only a piece
/// that straddles a linked file and another one makes, with bytes the link holds
/// already. (`std::fs::copy` uses `copy_file_range`, which clones extents on
/// filesystems that can.) A file already staged at its length (an interrupted
/// fetch) is left as it is, and counts as linked if it is such a link.
pub fn seed_from_previous(
    staging: &Path,
    previous: &Path,
    previous_meta: Option<&Metainfo>,
    looks: Option<&Looks>,
    m: &Metainfo,
) -> io::Result<Seeded> {
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
    let mut seeded = Seeded {
        linked: vec![false; m.info.files.len()],
        ..Seeded::default()
    };
    for (i, f) in m.info.files.iter().enumerate() {
        let rel: PathBuf = f.path.iter().collect();
        let dst = staging.join(&rel);
        let entry = m.rookery.files.get(i);
        let same_content = entry
            .and_then(|e| by_digest.get(e.sha1.as_slice()))
            .and_then(|p| {
                let src = previous.join(p);
                regular(&src)
                    .filter(|md| md.len() == f.length)
                    .map(|md| (src, *p, md))
            });
        // Unchanged since `previous` was verified, and with the mode the new
        // release gives it: linking it changes nothing there.
        let intact = same_content.as_ref().filter(|(_, p, md)| {
            looks.and_then(|l| l.get(*p)) == Some(&Look::of(md))
                && entry.is_some_and(|e| e.mode & 0o7777 == md.mode() & 0o7777)
        });
        if let Some(staged) = regular(&dst).filter(|md| md.len() == f.length) {
            if let Some((_, _, md)) = intact
                && (staged.dev(), staged.ino()) == (md.dev(), md.ino())
            {
                seeded.linked[i] = true;
                continue;
            }
            // A staged file with other links was linked by an interrupted fetch to
            // a file that has changed since: the engine would write into it, and so
            // into the release it is linked from. It goes, and is placed again below.
            if staged.nlink() == 1 {
                continue;
            }
            fs::remove_file(&dst)?;
        }
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        if let Some((src, _, _)) = intact {
            let _ = fs::remove_file(&dst);
            if fs::hard_link(src, &dst).is_ok() {
                seeded.linked[i] = true;
                continue;
            }
        }
        let same_path = previous.join(&rel);
        let Some(src) = same_content
            .map(|(src, _, _)| src)
            .or_else(|| regular(&same_path).map(|_| same_path))
        else {
            continue;
        };
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
        seeded.copied += len.min(f.length);
    }
    Ok(seeded)
}

/// The pieces of `m` that lie wholly in files `linked` ([`Seeded::linked`]), as a
/// bitfield for the engine ([`crate::torrent::engine::Options::verified`]). A piece
/// that touches any other file is checked.
pub fn linked_pieces(m: &Metainfo, linked: &[bool]) -> Vec<u8> {
    let piece = m.info.piece_length;
    let count = m.piece_count();
    // Per piece: whether every byte seen so far is linked.
    let mut good = vec![true; count];
    let mut offset = 0u64;
    for (f, &l) in m.info.files.iter().zip(linked) {
        if !l && f.length > 0 {
            let first = (offset / piece) as usize;
            let last = ((offset + f.length - 1) / piece) as usize;
            for g in &mut good[first..=last.min(count - 1)] {
                *g = false;
            }
        }
        offset += f.length;
    }
    crate::torrent::engine::bitfield(count, |i| good[i])
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
        } else if entry.metadata()?.nlink() == 1 {
            set_mode_bits(&entry.path(), 0o600)?;
        }
        // A file with other links is linked from an installed release: the engine
        // opens it read-only, and its mode is that release's.
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
        // Not even the same mode again on a file linked from an installed release.
        let path = root.join(&f.path);
        if fs::metadata(&path)?.mode() & 0o7777 != f.mode & 0o7777 {
            fs::set_permissions(&path, fs::Permissions::from_mode(f.mode))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch interrupted after linking a file, resumed after that file changed in
    /// the previous release: the link goes, and the file is copied (and checked by
    /// the engine), never left linked for the engine to write into.
    #[test]
    fn a_link_to_a_file_changed_since_is_replaced_by_a_copy() {
        let d = tempfile::tempdir().unwrap();
        let (prev, staging) = (d.path().join("prev"), d.path().join("staging"));
        fs::create_dir_all(&prev).unwrap();
        fs::create_dir_all(&staging).unwrap();
        fs::write(prev.join("a"), vec![1u8; 50_000]).unwrap();
        let m = crate::torrent::metainfo::create(&prev, &Default::default()).unwrap();
        let looks: Looks = [(
            "a".to_string(),
            Look::of(&fs::metadata(prev.join("a")).unwrap()),
        )]
        .into_iter()
        .collect();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let s = seed_from_previous(&staging, &prev, Some(&m), Some(&looks), &m).unwrap();
        assert_eq!(s.linked, [true]);
        assert_eq!(ino(&staging.join("a")), ino(&prev.join("a")));
        // Again, unchanged: still linked, nothing copied.
        let s = seed_from_previous(&staging, &prev, Some(&m), Some(&looks), &m).unwrap();
        assert_eq!((s.linked.as_slice(), s.copied), ([true].as_slice(), 0));
        // The previous release's file is written (same length, later time).
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs::write(prev.join("a"), vec![2u8; 50_000]).unwrap();
        let s = seed_from_previous(&staging, &prev, Some(&m), Some(&looks), &m).unwrap();
        assert_eq!(s.linked, [false]);
        assert_ne!(ino(&staging.join("a")), ino(&prev.join("a")));
        assert_eq!(s.copied, 50_000);
    }

    /// Pieces wholly inside linked files are vouched for; a piece that touches any
    /// other file is not.
    #[test]
    fn only_pieces_wholly_in_linked_files_are_vouched_for() {
        let d = tempfile::tempdir().unwrap();
        // Laid out a, b, c: pieces of 16 KiB are [a] [a b] [b] [b c].
        for (name, len) in [("a", 20_000), ("b", 30_000), ("c", 10_000)] {
            fs::write(d.path().join(name), vec![7u8; len]).unwrap();
        }
        let m = crate::torrent::metainfo::create(
            d.path(),
            &crate::torrent::metainfo::CreateOptions {
                piece_size: Some(16 << 10),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.piece_count(), 4);
        assert_eq!(linked_pieces(&m, &[true, true, false]), [0b1110_0000]);
        assert_eq!(linked_pieces(&m, &[true, false, true]), [0b1000_0000]);
        assert_eq!(linked_pieces(&m, &[false, true, false]), [0b0010_0000]);
        assert_eq!(linked_pieces(&m, &[true, true, true]), [0b1111_0000]);
    }
}
