//! Page-cache care on serving hosts (seed 000): copying gigabytes onto a host must not
//! evict the live service's hot pages, and the service's hot pages stay in memory
//! while it serves (`vmtouch -l`).
//!
//! Options, all off by default:
//! - `drop_after_write`: once the new release is verified, flush it and drop its pages
//!   (`posix_fadvise(DONTNEED)`), so the copy does not linger in memory in place of
//!   the live service's data.
//! - `lock_current`: the release's *hot set*, the files matching these globs. The
//!   supervisor (`agent run`) maps and `mlock`s its release's hot set before it starts
//!   the service and holds it while the service runs; on a switch it locks the new
//!   release's set before the restart and unlocks the old one after (see
//!   `supervisor.rs`). A fetch also locks the current release's set while it copies.
//!   At most `lock_max` bytes are locked ([`DEFAULT_LOCK_MAX`]): whole files in path
//!   order, the rest skipped with a warning; a file that vanished is skipped with a
//!   warning. Locking needs RLIMIT_MEMLOCK (or CAP_IPC_LOCK); a limit too low is an
//!   error that names it, its soft and hard values, and the line to add.
//! - `preload`: read the new release into the cache before the switch (vmtouch
//!   style), so the first requests after the restart do not hit the disk.
//!
//! A fetch keeps the release's hot-set settings beside its logs
//! ([`HotSetSpec::save`]): the switch and the supervisor read them from there, as the
//! playbook is not on the host.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent::release::Layout;
use crate::config::playbook::PageCache;
use crate::torrent::metainfo::Metainfo;

/// How many bytes one hot set locks at most unless `page_cache.lock_max` says.
pub const DEFAULT_LOCK_MAX: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PageCacheError {
    #[error(
        "cannot lock the hot set of {root} in memory: mlock of {bytes} bytes in all failed ({source}); RLIMIT_MEMLOCK is {soft} soft, {hard} hard for user {user}. Raise it: add `{user} soft memlock unlimited` and `{user} hard memlock unlimited` to /etc/security/limits.d/rookery.conf (read at the next login), or set `LimitMEMLOCK=infinity` in the systemd unit that starts rookery; or lock less (distribution.page_cache.lock_current, lock_max)"
    )]
    MemlockLimit {
        root: String,
        bytes: u64,
        soft: String,
        hard: String,
        user: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PageCacheError + '_ {
    move |source| PageCacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which files of a release are its hot set, and how much of it may be locked: what
/// a fetch keeps for the switch and the supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotSetSpec {
    pub globs: Vec<String>,
    pub max: u64,
}

impl HotSetSpec {
    /// The playbook's hot set.
    pub fn of(pc: &PageCache) -> HotSetSpec {
        HotSetSpec {
            globs: pc.lock_current.clone(),
            max: pc.lock_max.map_or(DEFAULT_LOCK_MAX, |b| b.0),
        }
    }

    fn path(layout: &Layout, version: &str) -> PathBuf {
        layout.logs().join(format!("{version}.hot-set.json"))
    }

    /// Keeps it for `version` (removes what was kept when there is no hot set).
    pub fn save(&self, layout: &Layout, version: &str) -> io::Result<()> {
        let path = HotSetSpec::path(layout, version);
        if self.globs.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        std::fs::create_dir_all(layout.logs())?;
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::os::write_atomically(&path, &text, 0o644)
    }

    /// What the fetch of `version` kept; none when it set no hot set.
    pub fn load(layout: &Layout, version: &str) -> HotSetSpec {
        std::fs::read(HotSetSpec::path(layout, version))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// Files of a release mapped and locked in memory until dropped.
pub struct HotSet {
    maps: Vec<(*mut libc::c_void, usize)>,
    /// The bytes locked.
    pub bytes: u64,
    /// What was left out: vanished files, files past `lock_max`.
    pub warnings: Vec<String>,
}

// The mappings are only unlocked and unmapped, from whichever thread drops the set.
unsafe impl Send for HotSet {}

impl Drop for HotSet {
    fn drop(&mut self) {
        for &(ptr, len) in &self.maps {
            // SAFETY: each (ptr, len) is a live mapping created in `HotSet::lock`.
            unsafe {
                libc::munlock(ptr, len);
                libc::munmap(ptr, len);
            }
        }
    }
}

impl HotSet {
    /// Maps and locks the files under `root` that match the globs, in path order,
    /// whole files up to `spec.max` bytes (reading them in as it goes).
    pub fn lock(root: &Path, spec: &HotSetSpec) -> Result<HotSet, PageCacheError> {
        let root = std::fs::canonicalize(root).map_err(io_err(root))?;
        let mut files = Vec::new();
        walk(&root, Path::new(""), &mut files).map_err(io_err(&root))?;
        files.retain(|rel| {
            let rel = rel.to_string_lossy();
            spec.globs.iter().any(|g| glob(g, &rel))
        });
        files.sort();
        let mut set = HotSet {
            maps: Vec::new(),
            bytes: 0,
            warnings: Vec::new(),
        };
        let (mut over, mut over_bytes) = (0usize, 0u64);
        for rel in files {
            let path = root.join(&rel);
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    set.warnings
                        .push(format!("{}: vanished; not locked", path.display()));
                    continue;
                }
                Err(e) => return Err(io_err(&path)(e)),
            };
            let len = f.metadata().map_err(io_err(&path))?.len();
            if len == 0 {
                continue;
            }
            if set.bytes + len > spec.max {
                (over, over_bytes) = (over + 1, over_bytes + len);
                continue;
            }
            set.add(&root, &path, &f, len as usize)?;
        }
        if over > 0 {
            set.warnings.push(format!(
                "page_cache.lock_max ({} bytes) reached: {over} matching files ({over_bytes} bytes) of {} not locked",
                spec.max,
                root.display()
            ));
        }
        Ok(set)
    }

    /// Maps one file and locks it.
    fn add(
        &mut self,
        root: &Path,
        path: &Path,
        f: &File,
        len: usize,
    ) -> Result<(), PageCacheError> {
        let ptr = map(f, len).map_err(io_err(path))?;
        // SAFETY: ptr/len is the mapping just created.
        if unsafe { libc::mlock(ptr, len) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: as above; nothing else refers to it.
            unsafe { libc::munmap(ptr, len) };
            return Err(match err.raw_os_error() {
                Some(libc::ENOMEM) | Some(libc::EPERM) => {
                    memlock_error(root, self.bytes + len as u64, err)
                }
                _ => io_err(path)(err),
            });
        }
        self.maps.push((ptr, len));
        self.bytes += len as u64;
        Ok(())
    }
}

/// The page-cache care a host gives a copy, as the playbook sets it.
pub trait Care {
    /// Locks the matching files of the current release; `None` when nothing to lock.
    fn lock_hot_set(&self, layout: &Layout) -> Result<Option<HotSet>, PageCacheError>;
    /// Drops the new release's pages, or reads them in, once it is written.
    fn after_write(&self, root: &Path, m: &Metainfo) -> io::Result<()>;
}

impl Care for PageCache {
    /// Locks the matching files of the current release; `None` when nothing to lock.
    fn lock_hot_set(&self, layout: &Layout) -> Result<Option<HotSet>, PageCacheError> {
        if self.lock_current.is_empty() {
            return Ok(None);
        }
        let current = layout.current();
        if std::fs::canonicalize(&current).is_err() {
            return Ok(None); // first deploy: nothing is live yet
        }
        let set = HotSet::lock(&current, &HotSetSpec::of(self))?;
        for w in &set.warnings {
            tracing::warn!("{w}");
        }
        Ok(Some(set))
    }

    /// Applied to the verified release before it is installed.
    fn after_write(&self, root: &Path, m: &Metainfo) -> io::Result<()> {
        if self.drop_after_write {
            for f in &m.info.files {
                let path = root.join(f.path.iter().collect::<PathBuf>());
                // A file linked from an installed release shares its pages with it:
                // they are the live release's, which this care is meant to keep.
                if std::fs::metadata(&path)?.nlink() == 1 {
                    drop_pages(&path)?;
                }
            }
        }
        if self.preload {
            preload(root, m)?;
        }
        Ok(())
    }
}

/// Flushes a file and drops its pages from the cache.
pub fn drop_pages(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    f.sync_data()?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain advice on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "page_cache.drop_after_write needs Linux (posix_fadvise DONTNEED)",
    ))
}

/// Reads every file of the release once, so its pages are cached.
pub fn preload(root: &Path, m: &Metainfo) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for f in &m.info.files {
        let mut file = File::open(root.join(f.path.iter().collect::<PathBuf>()))?;
        while io::Read::read(&mut file, &mut buf)? > 0 {}
    }
    Ok(())
}

/// Fraction of a file's pages in the page cache (mincore), for tests and reports.
#[cfg(test)]
pub fn resident_fraction(path: &Path) -> io::Result<f64> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0.0);
    }
    let ptr = map(&f, len)?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    let rc = unsafe { libc::mincore(ptr, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    unsafe { libc::munmap(ptr, len) };
    if rc != 0 {
        return Err(err);
    }
    Ok(vec.iter().filter(|b| *b & 1 == 1).count() as f64 / vec.len() as f64)
}

/// A read-only shared mapping of the first `len` bytes of `f`; the caller unmaps it.
fn map(f: &File, len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh read-only mapping of an open descriptor; nothing aliases it.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr)
}

/// The error of an `mlock` that RLIMIT_MEMLOCK refused, with the limits as they are.
fn memlock_error(root: &Path, bytes: u64, source: io::Error) -> PageCacheError {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    let limit = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{v} bytes")
        }
    };
    PageCacheError::MemlockLimit {
        root: root.display().to_string(),
        bytes,
        soft: limit(r.rlim_cur),
        hard: limit(r.rlim_max),
        user: user_name(),
        source,
    }
}

/// The effective user's name, else its uid.
fn user_name() -> String {
    // SAFETY: geteuid cannot fail; getpwuid returns null or a record valid until the
    // next call, read at once.
    unsafe {
        let uid = libc::geteuid();
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            return uid.to_string();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(root.join(rel)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.as_os_str().is_empty() => {
            return Ok(()); // a directory that vanished: its files are skipped
        }
        r => r?,
    };
    for entry in entries {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let Ok(ty) = entry.file_type() else {
            continue; // vanished since it was listed
        };
        if ty.is_dir() {
            walk(root, &child, out)?;
        } else if ty.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

/// `*` matches within a path component, `**` across components, `?` one character.
pub fn glob(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [b'?', rest @ ..] => !s.is_empty() && s[0] != b'/' && go(rest, &s[1..]),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("data/*.idx", "data/a.idx"));
        assert!(!glob("data/*.idx", "data/sub/a.idx"));
        assert!(glob("data/**.idx", "data/sub/a.idx"));
        assert!(glob("**", "anything/at/all"));
        assert!(glob("bin/?pp", "bin/app"));
        assert!(!glob("bin/?pp", "bin/pp"));
    }

    fn spec(globs: &[&str], max: u64) -> HotSetSpec {
        HotSetSpec {
            globs: globs.iter().map(|g| g.to_string()).collect(),
            max,
        }
    }

    #[test]
    fn a_hot_set_locks_whole_files_in_path_order_up_to_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("index")).unwrap();
        for (name, len) in [("index/a", 40_000), ("index/b", 40_000), ("index/c", 4_000)] {
            std::fs::write(dir.path().join(name), vec![1u8; len]).unwrap();
        }
        std::fs::write(dir.path().join("cold"), vec![1u8; 4_000]).unwrap();
        let set = HotSet::lock(dir.path(), &spec(&["index/*"], 50_000)).unwrap();
        // a fits, b would pass the cap and is left out, c still fits; `cold` is no
        // hot file.
        assert_eq!(set.bytes, 44_000);
        assert_eq!(set.maps.len(), 2);
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
        assert!(
            set.warnings[0]
                .contains("lock_max (50000 bytes) reached: 1 matching files (40000 bytes)"),
            "{:?}",
            set.warnings
        );
    }

    /// `linux/capability.h`.
    const CAP_IPC_LOCK: libc::c_ulong = 14;

    /// Run by the test below in a child process whose RLIMIT_MEMLOCK is lowered (and
    /// CAP_IPC_LOCK dropped, for root): prints the error locking fails with.
    #[test]
    fn memlock_child() {
        let Some(dir) = std::env::var_os("ROOKERY_MEMLOCK_CHILD") else {
            return;
        };
        let dir = PathBuf::from(dir);
        std::fs::write(dir.join("hot"), vec![1u8; 1 << 20]).unwrap();
        match HotSet::lock(&dir, &spec(&["**"], DEFAULT_LOCK_MAX)) {
            Err(e @ PageCacheError::MemlockLimit { .. }) => println!("MEMLOCK_ERROR {e}"),
            Err(e) => println!("OTHER_ERROR {e}"),
            Ok(set) => println!("LOCKED {}", set.bytes),
        }
    }

    #[test]
    fn a_memlock_limit_too_low_names_rlimit_memlock_its_values_and_the_line_to_add() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "agent::page_cache::tests::memlock_child",
            "--nocapture",
        ])
        .env("ROOKERY_MEMLOCK_CHILD", dir.path());
        // SAFETY: only system calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Root locks whatever the limit says (CAP_IPC_LOCK): drop it from the
                // bounding set, so that the test binary runs without it.
                libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0);
                let r = libc::rlimit {
                    rlim_cur: 64 << 10,
                    rlim_max: 128 << 10,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| {
                l.starts_with("MEMLOCK_ERROR")
                    || l.ends_with("_ERROR")
                    || l.starts_with("LOCKED")
                    || l.starts_with("OTHER_ERROR")
            })
            .unwrap_or_else(|| panic!("the child printed no outcome: {stdout}"));
        for want in [
            "RLIMIT_MEMLOCK is 65536 bytes soft, 131072 bytes hard",
            "soft memlock unlimited` and `",
            "hard memlock unlimited` to /etc/security/limits.d/rookery.conf",
            "LimitMEMLOCK=infinity",
            "page_cache.lock_current",
        ] {
            assert!(line.contains(want), "no `{want}` in: {line}");
        }
        assert!(line.starts_with("MEMLOCK_ERROR"), "{line}");
    }

    #[test]
    fn drop_pages_empties_the_cache_for_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 8 << 20]).unwrap();
        drop_pages(&p).unwrap();
        let after = resident_fraction(&p).unwrap();
        assert!(after < 0.5, "{after} of the pages are still cached");
    }
}
