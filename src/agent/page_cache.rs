//! Page-cache care on serving hosts (seed 000): copying gigabytes onto a host must not
//! evict the live service's hot pages.
//!
//! Three independent options, all off by default:
//! - `drop_after_write`: once the new release is verified, flush it and drop its pages
//!   (`posix_fadvise(DONTNEED)`), so the copy does not linger in memory in place of
//!   the live service's data.
//! - `lock_current`: while the fetch runs, `mlock` the files of the current release
//!   that match these globs, so the copy cannot push them out. Needs RLIMIT_MEMLOCK
//!   (or CAP_IPC_LOCK); a limit too low is an error that names it.
//! - `preload`: read the new release into the cache before the switch (vmtouch
//!   style), so the first requests after the restart do not hit the disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::agent::release::Layout;
use crate::config::playbook::PageCache;
use crate::torrent::metainfo::Metainfo;

#[derive(Debug, thiserror::Error)]
pub enum PageCacheError {
    #[error(
        "cannot lock {bytes} bytes of the current release in memory: RLIMIT_MEMLOCK is {limit} bytes; raise it (ulimit -l, LimitMEMLOCK= in systemd) or shorten distribution.page_cache.lock_current"
    )]
    MemlockLimit { bytes: u64, limit: u64 },
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

/// Files of the current release held in memory until dropped.
pub struct HotSet {
    maps: Vec<(*mut libc::c_void, usize)>,
}

// The mappings are only unlocked and unmapped, from whichever thread drops the set.
unsafe impl Send for HotSet {}

impl Drop for HotSet {
    fn drop(&mut self) {
        for &(ptr, len) in &self.maps {
            // SAFETY: each (ptr, len) is a live mapping created in `lock_hot_set`.
            unsafe {
                libc::munlock(ptr, len);
                libc::munmap(ptr, len);
            }
        }
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
        let Ok(root) = std::fs::canonicalize(&current) else {
            return Ok(None); // first deploy: nothing is live yet
        };
        let mut files = Vec::new();
        walk(&root, Path::new(""), &mut files).map_err(io_err(&root))?;
        files.retain(|rel| {
            let rel = rel.to_string_lossy();
            self.lock_current.iter().any(|g| glob(g, &rel))
        });
        let mut set = HotSet { maps: Vec::new() };
        let mut total = 0u64;
        for rel in files {
            let path = root.join(&rel);
            let f = File::open(&path).map_err(io_err(&path))?;
            let len = f.metadata().map_err(io_err(&path))?.len() as usize;
            if len == 0 {
                continue;
            }
            let ptr = map(&f, len).map_err(io_err(&path))?;
            total += len as u64;
            // SAFETY: ptr/len is the mapping just created.
            if unsafe { libc::mlock(ptr, len) } != 0 {
                let err = io::Error::last_os_error();
                unsafe { libc::munmap(ptr, len) };
                return Err(match err.raw_os_error() {
                    Some(libc::ENOMEM) | Some(libc::EPERM) => PageCacheError::MemlockLimit {
                        bytes: total,
                        limit: memlock_limit(),
                    },
                    _ => io_err(&path)(err),
                });
            }
            set.maps.push((ptr, len));
        }
        Ok(Some(set))
    }

    /// Applied to the verified release before it is installed.
    fn after_write(&self, root: &Path, m: &Metainfo) -> io::Result<()> {
        if self.drop_after_write {
            for f in &m.info.files {
                drop_pages(&root.join(f.path.iter().collect::<PathBuf>()))?;
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
    // SAFETY: plain advice on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
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

fn memlock_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    r.rlim_cur
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        let ty = entry.file_type()?;
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
