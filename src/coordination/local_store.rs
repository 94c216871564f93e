//! The local coordination store: a directory on this machine, for the embedded
//! default (local transport, every "host" a directory).
//!
//! Liveness is an `flock`: a live entry is a file whose writer holds an exclusive
//! lock on it for as long as it lives. A reader that can take the lock knows the
//! writer is gone (crashed, killed, exited), treats the entry as absent and removes
//! it. The deploy lock works the same way, so a deploy killed with SIGKILL releases it
//! at once, as a ZooKeeper session would.
//!
//! Watches are a poll of the directory every [`POLL`]: everything is on one machine
//! and a read is a few `open`+`flock` calls.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::coordination::{CoordError, Coordinator, Holder, Instance, Result};

/// How often [`Coordinator::changed`] looks at the directory.
pub const POLL: Duration = Duration::from_millis(100);

pub struct LocalStore {
    dir: PathBuf,
    cluster: String,
}

/// An open file with an exclusive flock; dropping it unlocks (and closes).
pub struct Held {
    _file: File,
    path: PathBuf,
    remove_on_drop: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.remove_on_drop {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock(2) on an open descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        Ok(true)
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(false)
        } else {
            Err(e)
        }
    }
}

fn err(what: &Path, e: impl std::fmt::Display) -> CoordError {
    CoordError::store(what.display().to_string(), e)
}

impl LocalStore {
    /// Where the record of deploy `id` is kept, for messages.
    pub fn deploy_path(&self, id: &str) -> String {
        self.dir.join("deploys").join(id).display().to_string()
    }

    pub fn open(dir: &Path, cluster: &str) -> Result<LocalStore> {
        for sub in ["current", "staging", "deploys"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| err(&dir.join(sub), e))?;
        }
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            cluster: cluster.to_string(),
        })
    }

    fn live_now(&self, service: &str) -> Result<Vec<Instance>> {
        let dir = self.dir.join("current").join(service);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                continue;
            }
            let Ok(mut f) = File::open(&path) else {
                continue;
            };
            // Can we take it? Then nobody holds it: a stale entry.
            match flock(&f, libc::LOCK_SH) {
                Ok(true) => {
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                Ok(false) => {}
                Err(e) => return Err(err(&path, e)),
            }
            let mut text = String::new();
            if f.read_to_string(&mut text).is_ok()
                && let Ok(i) = serde_json::from_str::<Instance>(&text)
            {
                out.push(i);
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }
}

impl Coordinator for LocalStore {
    type Lock = Held;
    type Live = Held;

    async fn lock(&self, holder: &Holder) -> Result<Held> {
        let path = self.dir.join("lock");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        if !flock(&f, libc::LOCK_EX).map_err(|e| err(&path, e))? {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            let holder = serde_json::from_str(&text).unwrap_or(Holder {
                who: "unknown".into(),
                pid: 0,
                since: 0,
                deploy: "unknown".into(),
            });
            return Err(CoordError::Locked {
                cluster: self.cluster.clone(),
                holder,
            });
        }
        let data = serde_json::to_vec(holder).expect("serializable");
        f.set_len(0).map_err(|e| err(&path, e))?;
        f.rewind().map_err(|e| err(&path, e))?;
        f.write_all(&data).map_err(|e| err(&path, e))?;
        Ok(Held {
            _file: f,
            path,
            remove_on_drop: false,
        })
    }

    async fn register(&self, service: &str, instance: &Instance) -> Result<Held> {
        let dir = self.dir.join("current").join(service);
        std::fs::create_dir_all(&dir).map_err(|e| err(&dir, e))?;
        // Write and lock a temporary file, then rename it in: readers never see an
        // unlocked or half-written entry.
        let path = dir.join(&instance.host);
        let tmp = dir.join(format!("{}.{}.tmp", instance.host, std::process::id()));
        let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
        if !flock(&f, libc::LOCK_EX).map_err(|e| err(&tmp, e))? {
            return Err(err(&tmp, "locked by another process"));
        }
        f.write_all(&serde_json::to_vec(instance).expect("serializable"))
            .map_err(|e| err(&tmp, e))?;
        f.flush().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        Ok(Held {
            _file: f,
            path,
            remove_on_drop: true,
        })
    }

    async fn withdraw(&self, live: Held) {
        drop(live);
    }

    async fn unlock(&self, lock: Held) {
        drop(lock);
    }

    async fn holder(&self) -> Result<Option<Holder>> {
        let path = self.dir.join("lock");
        let Ok(mut f) = File::open(&path) else {
            return Ok(None);
        };
        if flock(&f, libc::LOCK_SH).map_err(|e| err(&path, e))? {
            return Ok(None);
        }
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        Ok(serde_json::from_str(&text).ok())
    }

    async fn services(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for sub in ["current", "staging"] {
            for e in std::fs::read_dir(self.dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn live(&self, service: &str) -> Result<Vec<Instance>> {
        self.live_now(service)
    }

    async fn changed(&self, service: &str, since: &[Instance]) -> Result<()> {
        loop {
            if self.live_now(service)? != since {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn set_staging(&self, service: &str, host: &str, version: &str) -> Result<()> {
        let path = self.dir.join("staging").join(service).join(host);
        crate::os::write_atomically(&path, version.as_bytes(), 0o644).map_err(|e| err(&path, e))
    }

    async fn clear_staging(&self, service: &str, host: &str) -> Result<()> {
        let path = self.dir.join("staging").join(service).join(host);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    async fn staging(&self, service: &str) -> Result<Vec<(String, String)>> {
        let dir = self.dir.join("staging").join(service);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(v) = std::fs::read_to_string(e.path()) {
                out.push((name, v));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn put_deploy(&self, id: &str, record: &[u8]) -> Result<()> {
        let path = self.dir.join("deploys").join(id);
        crate::coordination::record::check_id(id).map_err(|why| err(&path, why))?;
        crate::os::write_atomically(&path, record, 0o644).map_err(|e| err(&path, e))?;
        let last = self.dir.join("deploys").join("last");
        crate::os::write_atomically(&last, id.as_bytes(), 0o644).map_err(|e| err(&last, e))
    }

    /// A `deploys/last` that is there but damaged is an error naming the file, never
    /// "no deploy" and never a path: resume and rollback read it.
    async fn last_deploy(&self) -> Result<Option<(String, Vec<u8>)>> {
        let last = self.dir.join("deploys").join("last");
        let bytes = match std::fs::read(&last) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(&last, e)),
        };
        let id = String::from_utf8_lossy(&bytes).trim().to_string();
        crate::coordination::record::check_id(&id)
            .map_err(|why| err(&last, format!("corrupt pointer to the last deploy: {why}")))?;
        let path = self.dir.join("deploys").join(&id);
        let record = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => err(
                &path,
                format!(
                    "missing: {} names deploy `{id}`, whose record is gone",
                    last.display()
                ),
            ),
            _ => err(&path, e),
        })?;
        Ok(Some((id, record)))
    }

    async fn get_deploy(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join("deploys").join(id);
        crate::coordination::record::check_id(id).map_err(|why| err(&path, why))?;
        match std::fs::read(&path) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(&path, e)),
        }
    }

    fn check_session(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(host: &str, v: &str) -> Instance {
        Instance {
            host: host.into(),
            version: v.into(),
            release: format!("/srv/app/releases/{v}"),
        }
    }

    #[tokio::test]
    async fn live_entries_vanish_with_their_holder() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path(), "t").unwrap();
        let a = s.register("api", &inst("a", "v1")).await.unwrap();
        let _b = s.register("api", &inst("b", "v1")).await.unwrap();
        assert_eq!(s.live("api").await.unwrap().len(), 2);
        drop(a);
        assert_eq!(s.live("api").await.unwrap(), vec![inst("b", "v1")]);
        assert!(s.live("web").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_left_by_a_dead_holder_is_not_live() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path(), "t").unwrap();
        std::fs::create_dir_all(d.path().join("current/api")).unwrap();
        std::fs::write(
            d.path().join("current/api/a"),
            serde_json::to_vec(&inst("a", "v1")).unwrap(),
        )
        .unwrap();
        assert!(s.live("api").await.unwrap().is_empty());
        assert!(
            !d.path().join("current/api/a").exists(),
            "the stale entry is removed"
        );
    }

    #[tokio::test]
    async fn the_second_lock_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path(), "prod").unwrap();
        let h = Holder {
            who: "alice@laptop".into(),
            pid: 42,
            since: 0,
            deploy: "d1".into(),
        };
        let held = s.lock(&h).await.unwrap();
        let e = s.lock(&Holder::me("d2")).await.err().unwrap();
        assert_eq!(
            e.to_string(),
            "another deploy holds the lock of cluster `prod`: alice@laptop (pid 42, deploy d1) since 1970-01-01 00:00:00 UTC"
        );
        drop(held);
        s.lock(&Holder::me("d2")).await.unwrap();
    }

    #[tokio::test]
    async fn changed_fires_when_an_instance_goes() {
        let d = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(LocalStore::open(d.path(), "t").unwrap());
        let a = s.register("api", &inst("a", "v1")).await.unwrap();
        let s2 = s.clone();
        let seen = s.live("api").await.unwrap();
        let w = tokio::spawn(async move { s2.changed("api", &seen).await });
        tokio::task::yield_now().await;
        tokio::time::sleep(POLL).await;
        drop(a);
        w.await.unwrap().unwrap();
        assert!(s.live("api").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn staging_and_deploy_records() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path(), "t").unwrap();
        s.set_staging("api", "a", "v2").await.unwrap();
        s.set_staging("api", "b", "v2").await.unwrap();
        s.clear_staging("api", "a").await.unwrap();
        s.clear_staging("api", "zz").await.unwrap();
        assert_eq!(
            s.staging("api").await.unwrap(),
            vec![("b".into(), "v2".into())]
        );
        assert!(s.last_deploy().await.unwrap().is_none());
        s.put_deploy("d1", b"{}").await.unwrap();
        s.put_deploy("d2", b"{\"x\":1}").await.unwrap();
        assert_eq!(
            s.last_deploy().await.unwrap(),
            Some(("d2".into(), b"{\"x\":1}".to_vec()))
        );
    }

    #[tokio::test]
    async fn a_damaged_pointer_to_the_last_deploy_is_named_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path(), "t").unwrap();
        let last = d.path().join("deploys/last");
        for junk in [&b""[..], b"\xff\xfe\x00junk", b"../../../etc/passwd"] {
            std::fs::write(&last, junk).unwrap();
            let e = s.last_deploy().await.unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "{}: corrupt pointer to the last deploy: ",
                    last.display()
                )),
                "{e}"
            );
        }
        assert!(s.put_deploy("../x", b"{}").await.is_err());
        assert!(s.get_deploy("../../etc/passwd").await.is_err());
        // A hand-edited pointer with a newline still names its deploy.
        s.put_deploy("d1", b"{}").await.unwrap();
        std::fs::write(&last, "d1\n").unwrap();
        assert_eq!(s.last_deploy().await.unwrap().unwrap().0, "d1");
    }
}
