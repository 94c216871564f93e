//! A librqbit storage that serves an existing tree and never writes to it.
//!
//! librqbit's filesystem storage opens every file read-write, which fails on
//! read-only files (`0555` binaries) for anyone but root, and would let a bug write
//! into the operator's build tree or a live release. The origin seeds its artifact
//! through this storage, and a host seeds an installed release through it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use librqbit::storage::{BoxStorageFactory, StorageFactory, StorageFactoryExt, TorrentStorage};
use librqbit::{ManagedTorrentShared, TorrentMetadata};

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
        _: &TorrentMetadata,
    ) -> anyhow::Result<ReadOnlyTree> {
        Ok(ReadOnlyTree {
            root: self.root.clone(),
            files: Vec::new(),
        })
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

pub struct ReadOnlyTree {
    root: PathBuf,
    files: Vec<Option<File>>,
}

impl ReadOnlyTree {
    fn file(&self, id: usize) -> anyhow::Result<&File> {
        self.files
            .get(id)
            .and_then(Option::as_ref)
            .context("no such file")
    }
}

impl TorrentStorage for ReadOnlyTree {
    fn init(&mut self, _: &ManagedTorrentShared, metadata: &TorrentMetadata) -> anyhow::Result<()> {
        let mut files = Vec::new();
        for info in metadata.file_infos.iter() {
            if info.attrs.padding {
                files.push(None);
                continue;
            }
            let path = self.root.join(&info.relative_filename);
            let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            files.push(Some(f));
        }
        self.files = files;
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        Ok(self.file(file_id)?.read_exact_at(buf, offset)?)
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
        let actual = self.file(file_id)?.metadata()?.len();
        anyhow::ensure!(
            actual == length,
            "file {file_id} is {actual} bytes, the metainfo says {length}"
        );
        Ok(())
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        let files = self
            .files
            .iter()
            .map(|f| f.as_ref().map(File::try_clone).transpose())
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Box::new(ReadOnlyTree {
            root: self.root.clone(),
            files,
        }))
    }
}

/// The storage of a download: read-write while pieces arrive, then *sealed*: every
/// file reopened read-only before the release is installed.
///
/// The fetch keeps seeding the installed release for its seed window. With
/// librqbit's own storage, the files stay open for writing all that time, and the
/// kernel refuses to execute a file open for writing (`ETXTBSY`, "Text file busy"):
/// a service started from the new release during the window would fail to start.
#[derive(Clone)]
pub struct SealableFactory {
    shared: std::sync::Arc<Shared>,
}

struct Shared {
    root: PathBuf,
    files: std::sync::RwLock<Vec<Option<(PathBuf, File)>>>,
}

impl SealableFactory {
    pub fn new(root: &Path) -> SealableFactory {
        SealableFactory {
            shared: std::sync::Arc::new(Shared {
                root: root.to_path_buf(),
                files: std::sync::RwLock::new(Vec::new()),
            }),
        }
    }

    pub fn boxed_factory(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }

    /// Reopens every file read-only (call once the copy is verified and before it
    /// is renamed into place; open descriptors survive the rename).
    pub fn seal(&self) -> std::io::Result<()> {
        let mut files = self.shared.files.write().expect("storage lock");
        for (path, f) in files.iter_mut().flatten() {
            *f = File::open(&*path)?;
        }
        Ok(())
    }
}

impl StorageFactory for SealableFactory {
    type Storage = SealableTree;

    fn create(
        &self,
        _: &ManagedTorrentShared,
        _: &TorrentMetadata,
    ) -> anyhow::Result<SealableTree> {
        Ok(SealableTree {
            shared: self.shared.clone(),
        })
    }

    fn clone_box(&self) -> BoxStorageFactory {
        self.clone().boxed()
    }
}

pub struct SealableTree {
    shared: std::sync::Arc<Shared>,
}

impl SealableTree {
    fn with<T>(&self, id: usize, f: impl FnOnce(&File) -> std::io::Result<T>) -> anyhow::Result<T> {
        let files = self.shared.files.read().expect("storage lock");
        let (_, file) = files
            .get(id)
            .and_then(Option::as_ref)
            .context("no such file")?;
        Ok(f(file)?)
    }
}

impl TorrentStorage for SealableTree {
    fn init(&mut self, _: &ManagedTorrentShared, metadata: &TorrentMetadata) -> anyhow::Result<()> {
        let mut files = Vec::new();
        for info in metadata.file_infos.iter() {
            if info.attrs.padding {
                files.push(None);
                continue;
            }
            let path = self.shared.root.join(&info.relative_filename);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            files.push(Some((path, f)));
        }
        *self.shared.files.write().expect("storage lock") = files;
        Ok(())
    }

    fn pread_exact(&self, file_id: usize, offset: u64, buf: &mut [u8]) -> anyhow::Result<()> {
        self.with(file_id, |f| f.read_exact_at(buf, offset))
    }

    fn pwrite_all(&self, file_id: usize, offset: u64, buf: &[u8]) -> anyhow::Result<()> {
        self.with(file_id, |f| f.write_all_at(buf, offset))
    }

    fn remove_file(&self, _: usize, filename: &Path) -> anyhow::Result<()> {
        Ok(std::fs::remove_file(self.shared.root.join(filename))?)
    }

    fn remove_directory_if_empty(&self, path: &Path) -> anyhow::Result<()> {
        let path = self.shared.root.join(path);
        if path.is_dir() && std::fs::read_dir(&path)?.next().is_none() {
            std::fs::remove_dir(&path)?;
        }
        Ok(())
    }

    fn ensure_file_length(&self, file_id: usize, length: u64) -> anyhow::Result<()> {
        self.with(file_id, |f| {
            if f.metadata()?.len() == length {
                Ok(())
            } else {
                f.set_len(length)
            }
        })
    }

    fn take(&self) -> anyhow::Result<Box<dyn TorrentStorage>> {
        Ok(Box::new(SealableTree {
            shared: self.shared.clone(),
        }))
    }
}
