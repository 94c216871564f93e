//! The ZooKeeper coordination store (zookeeper-client, tokio).
//!
//! Layout under the cluster's root (`coordination.zookeeper.root`, default
//! `/rookery/<cluster>`), documented in `docs/coordination.md`:
//!
//! ```text
//! <root>/current/<service>/<host>   ephemeral, JSON {host, version, release}
//! <root>/staging/<service>/<host>   persistent, the verified version
//! <root>/deploys/<id>               persistent, the deploy record (JSON)
//! <root>/deploys/last               persistent, the id of the latest deploy
//! <root>/lock/_c_<uuid>-deploy<seq> the deploy lock (the crate's Curator-style recipe)
//! ```
//!
//! The session is watched: once it expires, every call fails with
//! [`CoordError::SessionLost`], so a rollout halts instead of acting on a view of the
//! cluster that nobody keeps fresh any more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zookeeper_client as zk;

use crate::coordination::{CoordError, Coordinator, Holder, Instance, Result};

/// How long a deploy waits for the lock before it reports the holder.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// How many times a deploy waits LOCK_WAIT when the holder cannot be named.
const LOCK_ROUNDS: usize = 3;

pub struct ZkStore {
    client: zk::Client,
    root: String,
    cluster: String,
    lost: Arc<AtomicBool>,
    session_timeout: Duration,
}

fn zerr(what: impl Into<String>, e: zk::Error) -> CoordError {
    match e {
        zk::Error::SessionExpired | zk::Error::ClientClosed => CoordError::SessionLost,
        e => CoordError::store(what, e),
    }
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

impl ZkStore {
    /// Where the record of deploy `id` is kept, for messages.
    pub fn deploy_path(&self, id: &str) -> String {
        format!("{}/deploys/{id}", self.root)
    }

    /// Connects and makes sure the layout exists.
    ///
    /// A server that stops answering (frozen, partitioned) is given up after a third
    /// of the session timeout; the client then moves to another server of the
    /// connect string with the same session, and its ephemeral nodes stay. A fixed 5 s
    /// took half of the default 10 s session, and a second frozen try expired it.
    pub async fn connect(
        connect: &str,
        root: &str,
        cluster: &str,
        session_timeout: Duration,
    ) -> Result<ZkStore> {
        // A server that accepts the connection but never answers the handshake (a
        // frozen process: the kernel still accepts) would hold the first try for the
        // whole session timeout. Each try is bounded like a silent connection, and the
        // next one starts from another server (the client shuffles the list).
        let per_try = connection_timeout(session_timeout);
        let give_up = tokio::time::Instant::now() + session_timeout * 2;
        let client = loop {
            let attempt = zk::Client::connector()
                .with_session_timeout(session_timeout)
                .with_connection_timeout(per_try)
                .connect(connect);
            let e = match tokio::time::timeout(per_try, attempt).await {
                Ok(Ok(client)) => match make_layout(&client, root, give_up).await {
                    Ok(()) => break client,
                    Err(e) => e,
                },
                Ok(Err(e)) => CoordError::store(format!("connecting to ZooKeeper at {connect}"), e),
                Err(_) => CoordError::store(
                    format!("connecting to ZooKeeper at {connect}"),
                    format!(
                        "no answer within {}",
                        crate::config::units::format_duration(per_try)
                    ),
                ),
            };
            if tokio::time::Instant::now() >= give_up {
                return Err(e);
            }
            tracing::debug!("{e}; trying again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let lost = Arc::new(AtomicBool::new(false));
        let mut states = client.state_watcher();
        let flag = lost.clone();
        tokio::spawn(async move {
            loop {
                let s = states.changed().await;
                if s.is_terminated() {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        });
        Ok(ZkStore {
            client,
            root: root.to_string(),
            cluster: cluster.to_string(),
            lost,
            session_timeout,
        })
    }

    /// The underlying session, for tests that expire it on purpose.
    pub fn client(&self) -> &zk::Client {
        &self.client
    }

    async fn ensure(&self, path: &str) -> Result<()> {
        match self.client.mkdir(path, &persistent()).await {
            Ok(()) | Err(zk::Error::NodeExists) => Ok(()),
            Err(e) => Err(zerr(format!("creating {path}"), e)),
        }
    }

    async fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        match self.client.set_data(path, data, None).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    self.ensure(parent).await?;
                }
                match self.client.create(path, data, &persistent()).await {
                    Ok(_) => Ok(()),
                    Err(zk::Error::NodeExists) => self
                        .client
                        .set_data(path, data, None)
                        .await
                        .map(|_| ())
                        .map_err(|e| zerr(format!("writing {path}"), e)),
                    Err(e) => Err(zerr(format!("writing {path}"), e)),
                }
            }
            Err(e) => Err(zerr(format!("writing {path}"), e)),
        }
    }

    /// The children of `dir`; none when it does not exist.
    async fn children(&self, dir: &str) -> Result<Vec<String>> {
        match self.client.list_children(dir).await {
            Ok(c) => Ok(c),
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(zerr(format!("listing {dir}"), e)),
        }
    }

    /// The holder of the lock: the data of the lowest-numbered contender, skipping
    /// entries that carry `mine` (the caller's own: the entry of an attempt that gave
    /// up waiting is deleted in the background and may still be listed).
    async fn lock_holder(&self, mine: &[u8]) -> Option<Holder> {
        let dir = format!("{}/lock", self.root);
        let mut children = self.client.list_children(&dir).await.ok()?;
        children.sort_by_key(|c| {
            c.rsplit_once("deploy")
                .and_then(|(_, seq)| seq.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        // A contender may leave between the listing and the read (its session
        // expired, or it gave up waiting): the next one in line is then the holder.
        for child in children {
            if let Ok((data, _)) = self.client.get_data(&format!("{dir}/{child}")).await
                && data != mine
                && let Ok(holder) = serde_json::from_slice(&data)
            {
                return Some(holder);
            }
        }
        None
    }
}

/// A live entry: deleted on drop (and by ZooKeeper when the session ends).
pub struct ZkLive {
    client: zk::Client,
    path: String,
}

impl Drop for ZkLive {
    fn drop(&mut self) {
        if self.path.is_empty() {
            return; // withdrawn already
        }
        let client = self.client.clone();
        let path = std::mem::take(&mut self.path);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.delete(&path, None).await;
            });
        }
    }
}

impl Coordinator for ZkStore {
    type Lock = zk::OwnedLockClient;
    type Live = ZkLive;

    async fn lock(&self, holder: &Holder) -> Result<zk::OwnedLockClient> {
        self.check_session()?;
        let dir = format!("{}/lock", self.root);
        let data = serde_json::to_vec(holder).expect("serializable");
        let options = zk::LockOptions::new(zk::Acls::anyone_all());
        // Give up waiting after LOCK_WAIT and name the holder. When the holder left
        // in that very moment (nobody is found), the lock is likely free: try again
        // rather than report a holder nobody can name.
        for _ in 0..LOCK_ROUNDS {
            let prefix = zk::LockPrefix::new_curator(&dir, "deploy")
                .map_err(|e| zerr("the deploy lock", e))?;
            let attempt = self.client.lock(prefix, &data, options.clone());
            match tokio::time::timeout(LOCK_WAIT, attempt).await {
                Ok(Ok(lock)) => return Ok(lock.into_owned()),
                Ok(Err(e)) => return Err(zerr("taking the deploy lock", e)),
                Err(_) => {
                    if let Some(holder) = self.lock_holder(&data).await {
                        return Err(CoordError::Locked {
                            cluster: self.cluster.clone(),
                            holder,
                        });
                    }
                }
            }
        }
        Err(CoordError::Locked {
            cluster: self.cluster.clone(),
            holder: Holder {
                who: "unknown".into(),
                pid: 0,
                since: 0,
                deploy: "unknown".into(),
            },
        })
    }

    async fn register(&self, service: &str, instance: &Instance) -> Result<ZkLive> {
        self.check_session()?;
        let dir = format!("{}/current/{service}", self.root);
        self.ensure(&dir).await?;
        let path = format!("{dir}/{}", instance.host);
        let data = serde_json::to_vec(instance).expect("serializable");
        // An entry of a previous session of this host may linger until that session
        // expires; wait for it rather than delete another process's entry.
        let deadline = tokio::time::Instant::now() + self.session_timeout + Duration::from_secs(2);
        loop {
            match self.client.create(&path, &data, &ephemeral()).await {
                Ok(_) => {
                    return Ok(ZkLive {
                        client: self.client.clone(),
                        path,
                    });
                }
                Err(zk::Error::NodeExists) if tokio::time::Instant::now() < deadline => {
                    match self.client.check_and_watch_stat(&path).await {
                        Ok((None, _)) => continue,
                        // Ours: a create whose answer was lost when the client moved to
                        // another server (the server had made it). Not a stranger's.
                        Ok((Some(stat), _))
                            if stat.ephemeral_owner == self.client.session_id().0 =>
                        {
                            return Ok(ZkLive {
                                client: self.client.clone(),
                                path,
                            });
                        }
                        Ok((Some(_), w)) => {
                            let _ = tokio::time::timeout_at(deadline, w.changed()).await;
                        }
                        Err(e) => return Err(zerr(format!("watching {path}"), e)),
                    }
                }
                Err(e) => return Err(zerr(format!("registering {path}"), e)),
            }
        }
    }

    async fn withdraw(&self, mut live: ZkLive) {
        let path = std::mem::take(&mut live.path);
        let _ = self.client.delete(&path, None).await;
    }

    async fn unlock(&self, lock: zk::OwnedLockClient) {
        // Deleted here and awaited; the drop's own background delete then finds
        // nothing to do.
        let _ = self.client.delete(lock.lock_path(), None).await;
    }

    async fn holder(&self) -> Result<Option<Holder>> {
        self.check_session()?;
        Ok(self.lock_holder(&[]).await)
    }

    async fn services(&self) -> Result<Vec<String>> {
        self.check_session()?;
        let mut out = self.children(&format!("{}/current", self.root)).await?;
        for s in self.children(&format!("{}/staging", self.root)).await? {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out.sort();
        Ok(out)
    }

    async fn live(&self, service: &str) -> Result<Vec<Instance>> {
        self.check_session()?;
        let dir = format!("{}/current/{service}", self.root);
        let children = self.children(&dir).await?;
        let mut out = Vec::new();
        for c in children {
            match self.client.get_data(&format!("{dir}/{c}")).await {
                Ok((data, _)) => {
                    if let Ok(i) = serde_json::from_slice::<Instance>(&data) {
                        out.push(i);
                    }
                }
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(zerr(format!("reading {dir}/{c}"), e)),
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    async fn changed(&self, service: &str, since: &[Instance]) -> Result<()> {
        self.check_session()?;
        let dir = format!("{}/current/{service}", self.root);
        self.ensure(&dir).await?;
        let (_, _, watcher) = self
            .client
            .get_and_watch_children(&dir)
            .await
            .map_err(|e| zerr(format!("watching {dir}"), e))?;
        // The watch is set: a change from now on fires it. One since the caller's
        // read would not, so compare with that read first (a resumed rollout's gate
        // once waited out its whole deadline for a registration that had landed
        // between its read and its watch).
        if self.live(service).await? != since {
            return Ok(());
        }
        let mut states = self.client.state_watcher();
        tokio::select! {
            _ = watcher.changed() => {}
            s = async {
                loop {
                    let s = states.changed().await;
                    if s.is_terminated() {
                        return s;
                    }
                }
            } => {
                let _ = s;
                self.lost.store(true, Ordering::SeqCst);
            }
        }
        self.check_session()
    }

    async fn set_staging(&self, service: &str, host: &str, version: &str) -> Result<()> {
        self.check_session()?;
        self.put(
            &format!("{}/staging/{service}/{host}", self.root),
            version.as_bytes(),
        )
        .await
    }

    async fn clear_staging(&self, service: &str, host: &str) -> Result<()> {
        self.check_session()?;
        let path = format!("{}/staging/{service}/{host}", self.root);
        match self.client.delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(zerr(format!("deleting {path}"), e)),
        }
    }

    async fn staging(&self, service: &str) -> Result<Vec<(String, String)>> {
        self.check_session()?;
        let dir = format!("{}/staging/{service}", self.root);
        let children = self.children(&dir).await?;
        let mut out = Vec::new();
        for c in children {
            if let Ok((data, _)) = self.client.get_data(&format!("{dir}/{c}")).await {
                out.push((c, String::from_utf8_lossy(&data).to_string()));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn put_deploy(&self, id: &str, record: &[u8]) -> Result<()> {
        self.check_session()?;
        let path = format!("{}/deploys/{id}", self.root);
        crate::coordination::record::check_id(id)
            .map_err(|why| CoordError::store(path.clone(), why))?;
        self.put(&path, record).await?;
        self.put(&format!("{}/deploys/last", self.root), id.as_bytes())
            .await
    }

    async fn last_deploy(&self) -> Result<Option<(String, Vec<u8>)>> {
        self.check_session()?;
        let last = format!("{}/deploys/last", self.root);
        let id = match self.client.get_data(&last).await {
            Ok((d, _)) => String::from_utf8_lossy(&d).trim().to_string(),
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(zerr(format!("reading {last}"), e)),
        };
        // Never a path: a damaged pointer is named.
        crate::coordination::record::check_id(&id).map_err(|why| {
            CoordError::store(
                last.clone(),
                format!("corrupt pointer to the last deploy: {why}"),
            )
        })?;
        let path = format!("{}/deploys/{id}", self.root);
        let (record, _) = self
            .client
            .get_data(&path)
            .await
            .map_err(|e| zerr(format!("reading {path}"), e))?;
        Ok(Some((id, record)))
    }

    async fn get_deploy(&self, id: &str) -> Result<Option<Vec<u8>>> {
        self.check_session()?;
        let path = format!("{}/deploys/{id}", self.root);
        crate::coordination::record::check_id(id)
            .map_err(|why| CoordError::store(path.clone(), why))?;
        match self.client.get_data(&path).await {
            Ok((d, _)) => Ok(Some(d)),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(zerr(format!("reading {path}"), e)),
        }
    }

    fn check_session(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            Err(CoordError::SessionLost)
        } else {
            Ok(())
        }
    }
}

/// How long a connection may stay silent before the client moves to another server:
/// a third of the session timeout (at least half a second), so that two servers can
/// be tried before the session expires.
/// Creates the layout under `root`, trying again while the server does not answer
/// (the client moves to another one) until `give_up`.
async fn make_layout(client: &zk::Client, root: &str, give_up: tokio::time::Instant) -> Result<()> {
    for sub in ["current", "staging", "deploys", "lock"] {
        let path = format!("{root}/{sub}");
        loop {
            match client.mkdir(&path, &persistent()).await {
                Ok(()) | Err(zk::Error::NodeExists) => break,
                Err(e @ (zk::Error::ConnectionLoss | zk::Error::Timeout))
                    if tokio::time::Instant::now() < give_up =>
                {
                    tracing::debug!("creating {path}: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(zerr(format!("creating {path}"), e)),
            }
        }
    }
    Ok(())
}

fn connection_timeout(session_timeout: Duration) -> Duration {
    (session_timeout / 3).max(Duration::from_millis(500))
}
