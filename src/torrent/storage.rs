//! The librqbit storages rookery uses: one that serves an existing tree and never
//! writes to it, and one that receives a download and is then sealed read-only.
//!
//! Neither holds a descriptor per file. A build tree has 10^4 to 10^5 files, and a
//! process under SSH usually may open 1,024: librqbit's own storage opens every file of
//! the torrent at once and fails with `EMFILE` there. Both storages here go through
//! [`OpenFiles`], which keeps at most [`OPEN_FILES`] descriptors and closes the least
//! recently used one first. Pieces are read and written mostly in order, so a file is
//! opened about once per pass over the tree.
//!
//! librqbit's filesystem storage also opens every file read-write, which fails on
//! read-only files (`0555` binaries) for anyone but root, and would let a bug write
//! into the operator's build tree or a live release. The origin seeds its artifact
//! through [`ReadOnlyFactory`], and a host seeds an installed release through it.
//!
//! Every error names the file it happened to.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use librqbit::storage::{BoxStorageFactory, StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{ManagedTorrentShared, TorrentMetadata};

/// Descriptors one storage keeps open at most (a little more while that many reads or
/// writes are in flight). Enough for the engine's concurrency; small beside 1,024.
pub const OPEN_FILES: usize = 128;

/// How [`OpenFiles`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    /// Read-write, created if missing (the download's side).
    Write,
}

/// The files of one torrent by index, opened on demand, at most `cap` at a time.
///
/// Files are opened relative to a descriptor of the tree's root directory, which
/// survives a rename: a host keeps seeding its release after the staging directory
/// has been renamed into `releases/<version>`.
struct OpenFiles {
    root: File,
    /// For messages only: where the root was when it was opened.
    root_path: PathBuf,
    /// Relative paths; `None` for padding files, which have no bytes on disk.
    paths: Vec<Option<PathBuf>>,
    cap: usize,
    /// Files (by index) opened read-only whatever the access.
    read_only: Vec<bool>,
    state: Mutex<Cache>,
}

struct Cache {
    access: Access,
    open: HashMap<usize, (Arc<File>, u64)>,
    clock: u64,
}

impl OpenFiles {
    fn of_torrent(
        root: &Path,
        metadata: &TorrentMetadata,
        access: Access,
    ) -> anyhow::Result<OpenFiles> {
        let paths = metadata
            .file_infos
            .iter()
            .map(|i| (!i.attrs.padding).then(|| i.relative_filename.clone()))
            .collect();
        OpenFiles::new(root, paths, access, OPEN_FILES)
    }

    fn new(
        root: &Path,
        paths: Vec<Option<PathBuf>>,
        access: Access,
        cap: usize,
    ) -> anyhow::Result<OpenFiles> {
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)
            .with_context(|| format!("opening {}", root.display()))?;
        Ok(OpenFiles {
            root: dir,
            root_path: root.to_path_buf(),
            paths,
            cap: cap.max(1),
            read_only: Vec::new(),
            state: Mutex::new(Cache {
                access,
                open: HashMap::new(),
                clock: 0,
            }),
        })
    }

    /// File `id`'s path relative to the root.
    fn relative(&self, id: usize) -> anyhow::Result<&Path> {
        self.paths
            .get(id)
            .and_then(Option::as_deref)
            .with_context(|| format!("the torrent has no file {id}"))
    }

    /// File `id`'s path for a message.
    fn display(&self, id: usize) -> String {
        match self.relative(id) {
            Ok(rel) => self.root_path.join(rel).display().to_string(),
            Err(_) => format!("file {id}"),
        }
    }

    /// Opens file `id` relative to the root.
    fn open(&self, id: usize, access: Access) -> anyhow::Result<File> {
        let rel = self.relative(id)?;
        let c = std::ffi::CString::new(rel.as_os_str().as_bytes())
            .with_context(|| format!("{} holds a NUL byte", rel.display()))?;
        let flags = libc::O_CLOEXEC
            | match access {
                Access::Read => libc::O_RDONLY,
                Access::Write => libc::O_RDWR | libc::O_CREAT,
            };
        // SAFETY: `c` is a NUL-terminated path; openat returns a new descriptor we own.
        let fd = unsafe { libc::openat(self.root.as_raw_fd(), c.as_ptr(), flags, 0o666) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("opening {}", self.display(id)));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// File `id`'s length, checked to be a regular file, without opening it.
    fn length(&self, id: usize) -> anyhow::Result<u64> {
        let rel = self.relative(id)?;
        let c = std::ffi::CString::new(rel.as_os_str().as_bytes())
            .with_context(|| format!("{} holds a NUL byte", rel.display()))?;
        // SAFETY: an all-zero `stat` is a valid value for fstatat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` is ours to fill.
        if unsafe { libc::fstatat(self.root.as_raw_fd(), c.as_ptr(), &mut st, 0) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("opening {}", self.display(id)));
        }
        anyhow::ensure!(
            st.st_mode & libc::S_IFMT == libc::S_IFREG,
            "{} is not a regular file",
            self.display(id)
        );
        Ok(st.st_size as u64)
    }

    /// Runs `f` on file `id`, opening it (and closing the least recently used file
    /// when `cap` are open). The I/O itself runs outside the lock.
    fn with<T>(
        &self,
        id: usize,
        what: &str,
        f: impl FnOnce(&File) -> std::io::Result<T>,
    ) -> anyhow::Result<T> {
        let file = {
            let mut c = self.state.lock().expect("open files lock");
            c.clock += 1;
            let now = c.clock;
            if let Some((file, used)) = c.open.get_mut(&id) {
                *used = now;
                file.clone()
            } else {
                if c.open.len() >= self.cap
                    && let Some(oldest) = c.open.iter().min_by_key(|(_, (_, used))| *used)
                {
                    let oldest = *oldest.0;
                    c.open.remove(&oldest);
                }
                let access = if self.read_only(id) {
                    Access::Read
                } else {
                    c.access
                };
                let file = Arc::new(self.open(id, access)?);
                c.open.insert(id, (file.clone(), now));
                file
            }
        };
        f(&file).with_context(|| format!("{what} {}", self.display(id)))
    }

    /// Whether file `id` is opened read-only whatever the access.
    fn read_only(&self, id: usize) -> bool {
        self.read_only.get(id).is_some_and(|r| *r)
    }

    /// Closes every file and opens later ones with `access`.
    fn reopen_as(&self, access: Access) {
        let mut c = self.state.lock().expect("open files lock");
        c.open.clear();
        c.access = access;
    }

    /// Forgets file `id` (about to be removed).
    fn close(&self, id: usize) {
        self.state.lock().expect("open files lock").open.remove(&id);
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.state.lock().unwrap().open.len()
    }
}

/// Raises this process's soft limit on open files to its hard limit. The storages
/// work within any limit; sockets (one per peer, one per SSH host on the controller)
/// are what a higher one helps. Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    r.rlim_cur
}

/// Opens the torrent's files under `root`, read-only.
#[derive(Clone)]
pub struct ReadOnlyFactory {
    pub root: PathBuf,
}

impl ReadOnlyFactory {
    pub fn boxed_factory(root: &Path) -> BoxStorageFactory {
        ReadOnlyFactory {
            root: root.to_path_buf(),
        }
        .boxed()
    }
}

impl StorageFactory for ReadOnlyFactory {
    type Storage = ReadOnlyTree;

    fn create(
        &self,
        _: &ManagedTorrentShared,
        metadata: &TorrentMetadata,
    ) -> anyhow::Result<ReadOnlyTree> {
        Ok(ReadOnlyTree {
            files: Arc::new(OpenFiles::of_torrent(&self.root, metadata, Access::Read)?),
        })
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

pub struct ReadOnlyTree {
    files: Arc<OpenFiles>,
}

impl TorrentStorage for ReadOnlyTree {
    fn init(&mut self, _: &ManagedTorrentShared, _: &TorrentMetadata) -> anyhow::Result<()> {
        // Every file is there and a regular file: a missing one fails now, named,
        // rather than when a peer first asks for it.
        for (id, rel) in self.files.paths.iter().enumerate() {
            if rel.is_some() {
                self.files.length(id)?;
            }
        }
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        self.files
            .with(file_id, "reading", |f| f.read_exact_at(buf, offset))
    }

    fn pwrite_all(&self, _: usize, _: u64, _: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("this tree is served read-only")
    }

    fn remove_file(&self, _: usize, _: &Path) -> anyhow::Result<()> {
        anyhow::bail!("this tree is served read-only")
    }

    fn remove_directory_if_empty(&self, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn ensure_file_length(&self, file_id: usize, length: u64) -> anyhow::Result<()> {
        let actual = self.files.length(file_id)?;
        anyhow::ensure!(
            actual == length,
            "{} is {actual} bytes, the metainfo says {length}",
            self.files.display(file_id)
        );
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(ReadOnlyTree {
            files: self.files.clone(),
        }))
    }
}

/// The storage of a download: read-write while pieces arrive, then *sealed*: every
/// file closed, reopened read-only when next read, and writes refused, before the
/// release is installed.
///
/// The fetch keeps seeding the installed release for its seed window. With
/// librqbit's own storage, the files stay open for writing all that time, and the
/// kernel refuses to execute a file open for writing (`ETXTBSY`, "Text file busy"):
/// a service started from the new release during the window would fail to start.
#[derive(Clone)]
pub struct SealableFactory {
    shared: Arc<Shared>,
}

struct Shared {
    root: PathBuf,
    /// Files (by index) hard-linked from an installed release, for the storage it
    /// creates to open read-only and never write (see [`SealableFactory::with_linked`]).
    linked: Vec<bool>,
    /// Set when the engine creates the storage (it knows the files then).
    files: Mutex<Option<Arc<OpenFiles>>>,
    sealed: AtomicBool,
}

impl SealableFactory {
    pub fn new(root: &Path) -> SealableFactory {
        SealableFactory::with_linked(root, Vec::new())
    }

    /// Files `linked` (by index, [`crate::agent::release::Seeded::linked`]) are hard
    /// links to an installed, verified release that hold the right bytes already:
    /// they are opened read-only (a running program of the live release may be one:
    /// opening it for writing fails with `ETXTBSY`), and writes to them are dropped.
    /// The engine writes to one only for a piece that also covers a file it
    /// downloads, and then with bytes the link holds, or with a bad peer's bytes,
    /// which would otherwise land in the live release.
    pub fn with_linked(root: &Path, linked: Vec<bool>) -> SealableFactory {
        SealableFactory {
            shared: Arc::new(Shared {
                root: root.to_path_buf(),
                linked,
                files: Mutex::new(None),
                sealed: AtomicBool::new(false),
            }),
        }
    }

    pub fn boxed_factory(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }

    /// Closes every file: later reads reopen them read-only, writes are refused. Call
    /// once the copy is verified; the tree may then be renamed (files are opened
    /// relative to a descriptor of its root).
    pub fn seal(&self) {
        self.shared.sealed.store(true, Ordering::SeqCst);
        if let Some(files) = &*self.shared.files.lock().expect("storage lock") {
            files.reopen_as(Access::Read);
        }
    }
}

impl StorageFactory for SealableFactory {
    type Storage = SealableTree;

    fn create(
        &self,
        _: &ManagedTorrentShared,
        metadata: &TorrentMetadata,
    ) -> anyhow::Result<SealableTree> {
        std::fs::create_dir_all(&self.shared.root)
            .with_context(|| format!("creating {}", self.shared.root.display()))?;
        let mut files = OpenFiles::of_torrent(&self.shared.root, metadata, Access::Write)?;
        files.read_only = self.shared.linked.clone();
        let files = Arc::new(files);
        *self.shared.files.lock().expect("storage lock") = Some(files.clone());
        let fresh = Arc::new(
            (0..files.paths.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        Ok(SealableTree {
            files,
            shared: self.shared.clone(),
            fresh,
        })
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

pub struct SealableTree {
    files: Arc<OpenFiles>,
    shared: Arc<Shared>,
    /// Files that did not exist when the download began and have not been written
    /// since: the engine's initial check has nothing to read there, and their
    /// length comes from the writes. Each is created by its first write.
    fresh: Arc<Vec<AtomicBool>>,
}

impl SealableTree {
    fn writable(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.shared.sealed.load(Ordering::SeqCst),
            "the release is sealed read-only"
        );
        Ok(())
    }
}

impl TorrentStorage for SealableTree {
    fn init(&mut self, _: &ManagedTorrentShared, metadata: &TorrentMetadata) -> anyhow::Result<()> {
        // Each directory once; files are created by their first write, so a fresh
        // tree costs one lookup per file here instead of an open.
        let mut made = std::collections::HashSet::new();
        for info in metadata.file_infos.iter().filter(|i| !i.attrs.padding) {
            if let Some(dir) = info.relative_filename.parent()
                && made.insert(dir.to_path_buf())
            {
                let dir = self.shared.root.join(dir);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
        }
        for (id, rel) in self.files.paths.iter().enumerate() {
            if rel.is_some() && self.files.length(id).is_err() {
                self.fresh[id].store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        if self
            .fresh
            .get(file_id)
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            anyhow::bail!("not downloaded yet");
        }
        self.files
            .with(file_id, "reading", |f| f.read_exact_at(buf, offset))
    }

    fn pwrite_all(&self, file_id: usize, offset: u64, buf: &[u8]) -> anyhow::Result<()> {
        self.writable()?;
        // A linked file (read-only here) holds these bytes already.
        if self.files.read_only(file_id) {
            return Ok(());
        }
        self.files
            .with(file_id, "writing", |f| f.write_all_at(buf, offset))?;
        if let Some(f) = self.fresh.get(file_id) {
            f.store(false, Ordering::Release);
        }
        Ok(())
    }

    fn remove_file(&self, file_id: usize, filename: &Path) -> anyhow::Result<()> {
        self.writable()?;
        self.files.close(file_id);
        let path = self.shared.root.join(filename);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    fn remove_directory_if_empty(&self, path: &Path) -> anyhow::Result<()> {
        let path = self.shared.root.join(path);
        if path.is_dir() && std::fs::read_dir(&path)?.next().is_none() {
            std::fs::remove_dir(&path)?;
        }
        Ok(())
    }

    fn ensure_file_length(&self, file_id: usize, length: u64) -> anyhow::Result<()> {
        // A fresh file gets its length from the writes that fill it.
        if self
            .fresh
            .get(file_id)
            .is_some_and(|f| f.load(Ordering::Acquire))
            || self.files.length(file_id)? == length
        {
            return Ok(());
        }
        self.writable()?;
        self.files
            .with(file_id, "setting the length of", |f| f.set_len(length))
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(SealableTree {
            files: self.files.clone(),
            shared: self.shared.clone(),
            fresh: self.fresh.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: usize) -> (tempfile::TempDir, Vec<Option<PathBuf>>) {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..n {
            let rel = PathBuf::from(format!("d{}/f{i}", i % 7));
            std::fs::create_dir_all(dir.path().join(rel.parent().unwrap())).unwrap();
            std::fs::write(dir.path().join(&rel), format!("file {i}")).unwrap();
            paths.push(Some(rel));
        }
        (dir, paths)
    }

    /// This process's descriptors open on `dir` or anything under it: other tests
    /// may run on other threads of the same process (`cargo test`), opening files of
    /// their own meanwhile.
    fn open_descriptors(dir: &Path) -> usize {
        let dir = dir.canonicalize().unwrap();
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|target| target.starts_with(&dir))
            .count()
    }

    #[test]
    fn never_more_files_open_than_the_cap() {
        let (dir, paths) = tree(1000);
        let before = open_descriptors(dir.path());
        let files = OpenFiles::new(dir.path(), paths, Access::Read, 8).unwrap();
        for pass in 0..2 {
            for id in 0..1000 {
                let mut buf = vec![0u8; format!("file {id}").len()];
                files
                    .with(id, "reading", |f| f.read_exact_at(&mut buf, 0))
                    .unwrap();
                assert_eq!(buf, format!("file {id}").as_bytes(), "pass {pass}");
                assert!(files.open_count() <= 8);
            }
        }
        // The root's descriptor and at most 8 files.
        let open = open_descriptors(dir.path());
        assert!(open <= before + 9, "{open} open under the tree");
        assert!(open > before, "nothing open under the tree: {open}");
    }

    #[test]
    fn reads_go_on_after_the_root_is_renamed() {
        let (dir, paths) = tree(20);
        let root = dir.path().join("staging");
        std::fs::create_dir(&root).unwrap();
        for p in paths.iter().flatten() {
            std::fs::create_dir_all(root.join(p.parent().unwrap())).unwrap();
            std::fs::rename(dir.path().join(p), root.join(p)).unwrap();
        }
        let files = OpenFiles::new(&root, paths, Access::Write, 4).unwrap();
        files
            .with(3, "writing", |f| f.write_all_at(b"FILE", 0))
            .unwrap();
        files.reopen_as(Access::Read);
        std::fs::rename(&root, dir.path().join("release")).unwrap();
        for id in [3, 11, 19] {
            let mut buf = [0u8; 4];
            files
                .with(id, "reading", |f| f.read_exact_at(&mut buf, 0))
                .unwrap();
            assert_eq!(&buf, if id == 3 { b"FILE" } else { b"file" });
        }
        // Reopened read-only: the kernel refuses a write.
        let err = files
            .with(19, "writing", |f| f.write_all_at(b"x", 0))
            .unwrap_err();
        assert!(format!("{err:#}").contains("writing"), "{err:#}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let (dir, mut paths) = tree(3);
        paths.push(Some(PathBuf::from("d1/gone")));
        let files = OpenFiles::new(dir.path(), paths, Access::Read, 4).unwrap();
        let err = files.length(3).unwrap_err();
        assert!(format!("{err:#}").contains("d1/gone"), "{err:#}");
        let err = files
            .with(3, "reading", |f| f.read_exact_at(&mut [0u8; 1], 0))
            .unwrap_err();
        assert!(format!("{err:#}").contains("d1/gone"), "{err:#}");
    }
}
