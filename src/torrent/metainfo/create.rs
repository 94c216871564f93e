//! Making the metainfo of a release tree: the walk (files, modes, empty
//! directories, links), the layout of the pieces, and their hashes (see
//! [`super::hash`]), reused from the previous release for files whose path, size and
//! mtime are the same.

use super::hash::{hash_files, hash_pieces};
use super::*;

/// A scanned tree: files in torrent order plus the manifest.
pub(super) struct Scan {
    pub(super) files: Vec<(String, PathBuf, u64)>,
    pub(super) manifest: Manifest,
    /// What each file of `files` looked like when scanned, by path.
    pub(super) stats: Stats,
}

/// What a file looked like when it was hashed. A file that looks the same at the next
/// release (same size, modification and change times, inode and device) is taken to
/// hold the same bytes, and its hashes are reused: writing a file changes its change
/// time, which no unprivileged tool sets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileStat {
    fn of(meta: &std::fs::Metadata) -> FileStat {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileStat {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// [`FileStat`] of every file of a release, by path.
pub type Stats = std::collections::BTreeMap<String, FileStat>;

/// Keeps `stats` at `path`, for the next metainfo made from the same tree to reuse
/// ([`CreateOptions::reuse`]); readable by the owner only (it names the build's files).
pub fn save_stats(path: &Path, stats: &Stats) -> std::io::Result<()> {
    let text = serde_json::to_vec(stats).map_err(std::io::Error::other)?;
    crate::os::write_atomically(path, &text, 0o600)
}

/// The stats [`save_stats`] kept at `path`, if they are there and readable.
pub fn load_stats(path: &Path) -> Option<Stats> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The release before this one as it was hashed: its metainfo and its files' stats.
#[derive(Debug, Clone)]
pub struct Hashed {
    pub metainfo: Metainfo,
    pub stats: Stats,
}

/// What [`create_with_stats`] read, and what it took from the previous release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashWork {
    /// Bytes read to hash whole files (their digests).
    pub file_bytes_read: u64,
    /// Bytes read to hash pieces.
    pub piece_bytes_read: u64,
    /// Bytes whose piece hashes were the previous release's.
    pub piece_bytes_reused: u64,
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MetainfoError + '_ {
    move |source| MetainfoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn rel_string(rel: &Path) -> Result<String> {
    rel.to_str()
        .map(str::to_string)
        .ok_or_else(|| MetainfoError::NotUtf8(rel.to_string_lossy().into_owned()))
}

pub(super) fn scan(root: &Path, keep_special_bits: bool) -> Result<Scan> {
    let mut scan = Scan {
        files: Vec::new(),
        manifest: Manifest::default(),
        stats: Stats::new(),
    };
    walk(root, Path::new(""), keep_special_bits, &mut scan)?;
    scan.manifest.check_links()?;
    Ok(scan)
}

/// Depth-first, entries sorted by name bytes, so the order never depends on the
/// filesystem.
pub(super) fn walk(
    root: &Path,
    rel: &Path,
    keep_special_bits: bool,
    scan: &mut Scan,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(io_err(&dir))?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let abs = root.join(&rel_path);
        let meta = std::fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
        let path = rel_string(&rel_path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        // setuid and setgid would arrive on every host: only by decision.
        if !keep_special_bits && !ft.is_symlink() && mode & 0o6000 != 0 {
            let what = if mode & 0o4000 != 0 {
                "setuid"
            } else {
                "setgid"
            };
            return Err(MetainfoError::SpecialBits { path, mode, what });
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&abs).map_err(io_err(&abs))?;
            let target_str = rel_string(&target)?;
            // Checked against each other once the whole tree is scanned.
            scan.manifest.symlinks.push(Link {
                path,
                target: target_str,
            });
        } else if ft.is_dir() {
            scan.manifest.dirs.push(Entry {
                path,
                mode,
                sha1: Vec::new(),
            });
            walk(root, &rel_path, keep_special_bits, scan)?;
        } else if ft.is_file() {
            if meta.size() == 0 {
                scan.manifest.empty.push(Entry {
                    path,
                    mode,
                    sha1: Vec::new(),
                });
            } else {
                scan.manifest.files.push(Entry {
                    path: path.clone(),
                    mode,
                    sha1: Vec::new(),
                });
                scan.stats.insert(path.clone(), FileStat::of(&meta));
                scan.files.push((path, abs, meta.size()));
            }
        } else {
            return Err(MetainfoError::Special(path));
        }
    }
    Ok(())
}

/// Options for [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `None`: [`auto_piece_size`].
    pub piece_size: Option<u64>,
    pub announce: Option<String>,
    /// The torrent's `name` (the top directory clients create); default: the
    /// directory's own name.
    pub name: Option<String>,
    /// Ship setuid and setgid bits as they are; otherwise a file or directory that
    /// has one is refused (`artifact.special_bits`).
    pub keep_special_bits: bool,
    /// The release before this one: files whose content it already had keep its
    /// order, and the rest go after them (see [`create`]).
    pub previous: Option<Manifest>,
    /// The release before this one as it was hashed: the digests of files that look
    /// unchanged, and the hashes of pieces made only of such files at the same
    /// offsets, are taken from it instead of read again.
    pub reuse: Option<Hashed>,
}

/// Scans `root` and hashes its files into metainfo.
pub fn create(root: &Path, opts: &CreateOptions) -> Result<Metainfo> {
    create_with_stats(root, opts).map(|(m, _, _)| m)
}

/// [`create_with_stats`], saying at `info` level how long it took, what it read and
/// what it reused (`-v`).
pub fn create_logged(root: &Path, opts: &CreateOptions) -> Result<(Metainfo, Stats)> {
    let began = std::time::Instant::now();
    let (m, stats, work) = create_with_stats(root, opts)?;
    tracing::info!(
        elapsed = ?began.elapsed(),
        file_bytes_read = work.file_bytes_read,
        piece_bytes_read = work.piece_bytes_read,
        piece_bytes_reused = work.piece_bytes_reused,
        "hashed the artifact"
    );
    Ok((m, stats))
}

/// [`create`], with the stats of the files hashed (for the next release's
/// [`CreateOptions::reuse`]) and what was read.
pub fn create_with_stats(root: &Path, opts: &CreateOptions) -> Result<(Metainfo, Stats, HashWork)> {
    let meta = std::fs::metadata(root).map_err(io_err(root))?;
    if !meta.is_dir() {
        return Err(MetainfoError::Invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut scan = scan(root, opts.keep_special_bits)?;
    let total: u64 = scan.files.iter().map(|f| f.2).sum();
    if total == 0 {
        return Err(MetainfoError::Empty(root.to_path_buf()));
    }
    let mut work = HashWork::default();
    let reuse = opts.reuse.as_ref();
    let unchanged = unchanged_files(&scan, reuse);
    digest_files(&mut scan, reuse, &unchanged, &mut work)?;
    if let Some(previous) = &opts.previous {
        // With the previous metainfo at hand, a file changed in place (same path,
        // same size) keeps its slot too, so the files after it keep their offsets
        // and their pieces' hashes can be reused.
        let sizes: Option<std::collections::HashMap<String, u64>> = reuse.map(|prev| {
            prev.metainfo
                .info
                .files
                .iter()
                .map(|f| (f.path.join("/"), f.length))
                .collect()
        });
        order_like(&mut scan, previous, sizes.as_ref());
    }
    let piece_length = opts.piece_size.unwrap_or_else(|| auto_piece_size(total));
    let reused = match reuse {
        Some(prev) => reusable_pieces(&scan.files, piece_length, &prev.metainfo, &unchanged),
        None => Vec::new(),
    };
    let pieces = hash_pieces(&scan.files, piece_length, &reused, &mut work)?;
    let name = opts.name.clone().unwrap_or_else(|| {
        root.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "artifact".into())
    });
    let files = scan
        .files
        .iter()
        .map(|(path, _, len)| InfoFile {
            length: *len,
            path: path.split('/').map(str::to_string).collect(),
        })
        .collect();
    let m = Metainfo {
        announce: opts.announce.clone(),
        info: Info {
            files,
            name,
            piece_length,
            pieces,
            private: 1,
        },
        rookery: scan.manifest,
    };
    Ok((m, scan.stats, work))
}

/// Files that look as they did when the previous release was hashed (none without
/// one).
fn unchanged_files(scan: &Scan, reuse: Option<&Hashed>) -> std::collections::HashSet<String> {
    match reuse {
        Some(prev) => scan
            .stats
            .iter()
            .filter(|(path, st)| prev.stats.get(*path) == Some(st))
            .map(|(path, _)| path.clone())
            .collect(),
        None => Default::default(),
    }
}

/// Sets each file's digest in the manifest: the previous release's for files in
/// `unchanged`, else read and hashed (counted in `work`).
fn digest_files(
    scan: &mut Scan,
    reuse: Option<&Hashed>,
    unchanged: &std::collections::HashSet<String>,
    work: &mut HashWork,
) -> Result<()> {
    let known: std::collections::HashMap<&str, &[u8]> = reuse
        .map(|prev| {
            prev.metainfo
                .rookery
                .files
                .iter()
                .filter(|e| e.sha1.len() == 20 && unchanged.contains(&e.path))
                .map(|e| (e.path.as_str(), e.sha1.as_slice()))
                .collect()
        })
        .unwrap_or_default();
    let to_hash: Vec<usize> = (0..scan.files.len())
        .filter(|&i| !known.contains_key(scan.files[i].0.as_str()))
        .collect();
    let subset: Vec<(String, PathBuf, u64)> =
        to_hash.iter().map(|&i| scan.files[i].clone()).collect();
    work.file_bytes_read = subset.iter().map(|f| f.2).sum();
    let digests = hash_files(&subset)?;
    for (&i, digest) in to_hash.iter().zip(digests) {
        scan.manifest.files[i].sha1 = digest.to_vec();
    }
    for (i, entry) in scan.manifest.files.iter_mut().enumerate() {
        if let Some(d) = known.get(scan.files[i].0.as_str()) {
            entry.sha1 = d.to_vec();
        }
    }
    Ok(())
}

/// For each piece of `files` laid end to end: the previous release's hash of it,
/// when the piece is made only of unchanged files at the offsets they had there (so
/// its bytes are the same), else `None`.
pub(super) fn reusable_pieces(
    files: &[(String, PathBuf, u64)],
    piece_length: u64,
    prev: &Metainfo,
    unchanged: &std::collections::HashSet<String>,
) -> Vec<Option<[u8; 20]>> {
    let total: u64 = files.iter().map(|f| f.2).sum();
    let count = total.div_ceil(piece_length.max(1)) as usize;
    let mut out = vec![None; count];
    if prev.info.piece_length != piece_length {
        return out;
    }
    let prev_total = prev.total_length();
    let mut prev_offset: std::collections::HashMap<String, u64> = Default::default();
    let mut at = 0u64;
    for f in &prev.info.files {
        prev_offset.insert(f.path.join("/"), at);
        at = at.saturating_add(f.length);
    }
    // Each file's offset here, and whether it is where it was and unchanged.
    let mut same = Vec::with_capacity(files.len());
    let mut starts = Vec::with_capacity(files.len());
    let mut at = 0u64;
    for (path, _, len) in files {
        starts.push(at);
        same.push(unchanged.contains(path) && prev_offset.get(path) == Some(&at));
        at += len;
    }
    let mut f = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        let a = i as u64 * piece_length;
        let b = (a + piece_length).min(total);
        if b != (a + piece_length).min(prev_total) || i >= prev.piece_count() {
            continue;
        }
        while f < files.len() && starts[f] + files[f].2 <= a {
            f += 1;
        }
        let mut g = f;
        let mut ok = true;
        while g < files.len() && starts[g] < b {
            ok &= same[g];
            g += 1;
        }
        if ok {
            let mut h = [0u8; 20];
            h.copy_from_slice(&prev.info.pieces[i * 20..i * 20 + 20]);
            *slot = Some(h);
        }
    }
    out
}

/// Lays the files out after `previous`: first every file whose content `previous`
/// held (under any name), in `previous`'s order, then the others by path. A file
/// that changed, or is new, then sits beside the other changes instead of in the
/// middle of unchanged neighbours, so the pieces that differ from the last release
/// hold little but changed bytes; a renamed file keeps its place. Hosts rebuild the
/// unchanged part from the files they have (`release::seed_from_previous`). With no
/// change at all the order, and so the info hash, is `previous`'s.
pub(super) fn order_like(
    scan: &mut Scan,
    previous: &Manifest,
    sizes: Option<&std::collections::HashMap<String, u64>>,
) {
    let rank: std::collections::HashMap<&[u8], usize> = previous
        .files
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.sha1.is_empty())
        .map(|(i, e)| (e.sha1.as_slice(), i))
        .rev()
        .collect();
    if rank.is_empty() {
        return;
    }
    // A path of the previous release, where the file there had the size it has now.
    let by_path: std::collections::HashMap<&str, usize> = match sizes {
        Some(_) => previous
            .files
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.as_str(), i))
            .collect(),
        None => Default::default(),
    };
    let same_slot = |i: usize| {
        let (path, _, len) = &scan.files[i];
        let r = *by_path.get(path.as_str())?;
        (sizes?.get(path) == Some(len)).then_some(r)
    };
    // Keys: (0, rank in previous) for known content, (1, position by path) for the
    // rest; the scan is in path order, so a stable sort keeps ties by path.
    let mut order: Vec<usize> = (0..scan.files.len()).collect();
    order.sort_by_key(
        |&i| match rank.get(scan.manifest.files[i].sha1.as_slice()) {
            Some(&r) => (0, r),
            None => match same_slot(i) {
                Some(r) => (0, r),
                None => (1, i),
            },
        },
    );
    let files = std::mem::take(&mut scan.files);
    let entries = std::mem::take(&mut scan.manifest.files);
    let mut files: Vec<_> = files.into_iter().map(Some).collect();
    let mut entries: Vec<_> = entries.into_iter().map(Some).collect();
    for i in order {
        scan.files.push(files[i].take().expect("each file once"));
        scan.manifest
            .files
            .push(entries[i].take().expect("each entry once"));
    }
}
