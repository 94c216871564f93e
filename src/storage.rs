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
