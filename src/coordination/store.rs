//! The coordination store an inventory names, as one type: either implementation of
//! [`Coordinator`] behind an enum, so commands are not generic over the store.
//!
//! Also the other side of the same choice: the flags a host-side command
//! (`agent run`, `agent switch`) is given so that it opens the same store.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::inventory::{Coordination, Inventory};
use crate::coordination::local_store::{Held, LocalStore};
use crate::coordination::zookeeper::{ZkLive, ZkStore};
use crate::coordination::{Coordinator, Holder, Instance, Result};

/// Which coordination store a host-side command opens.
#[derive(Debug, clap::Args, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreArgs {
    /// Cluster name (for messages)
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub cluster: String,
    /// The local coordination store (a directory on this machine)
    #[arg(long, value_name = "DIR", conflicts_with = "zookeeper")]
    pub local_store: Option<PathBuf>,
    /// ZooKeeper connect string
    #[arg(long, value_name = "HOSTS", requires = "zk_root")]
    pub zookeeper: Option<String>,
    /// The cluster's root znode
    #[arg(long, value_name = "PATH")]
    pub zk_root: Option<String>,
    #[arg(long, value_name = "DURATION", default_value = StoreArgs::DEFAULT_SESSION_TIMEOUT)]
    pub session_timeout: String,
}

impl StoreArgs {
    const DEFAULT_SESSION_TIMEOUT: &str = "10s";
}

pub enum Store {
    Local(LocalStore),
    ZooKeeper(ZkStore),
}

pub enum StoreLock {
    Local(#[allow(dead_code)] Held),
    ZooKeeper(#[allow(dead_code)] zookeeper_client::OwnedLockClient),
}

pub enum StoreLive {
    Local(Held),
    ZooKeeper(ZkLive),
}

/// Where a store is, as the inventory or the agent's flags say.
#[derive(Debug, Clone)]
pub enum Location {
    Local {
        dir: PathBuf,
    },
    ZooKeeper {
        connect: String,
        root: String,
        session_timeout: Duration,
    },
}

impl Location {
    pub fn of(inv: &Inventory) -> Location {
        match &inv.coordination {
            Coordination::Local { dir } => Location::Local { dir: dir.clone() },
            Coordination::ZooKeeper {
                connect,
                root,
                session_timeout,
            } => Location::ZooKeeper {
                connect: connect.clone(),
                root: root.clone(),
                session_timeout: *session_timeout,
            },
        }
    }

    pub fn from_args(a: &StoreArgs) -> anyhow::Result<Location> {
        match (&a.local_store, &a.zookeeper) {
            (Some(dir), _) => Ok(Location::Local { dir: dir.clone() }),
            (None, Some(connect)) => Ok(Location::ZooKeeper {
                connect: connect.clone(),
                root: a.zk_root.clone().unwrap_or_else(|| "/rookery".into()),
                session_timeout: crate::config::units::parse_duration(&a.session_timeout)
                    .map_err(|e| crate::error::Error::Usage(format!("--session-timeout: {e}")))?,
            }),
            (None, None) => Err(crate::error::Error::Usage(
                "give --local-store DIR or --zookeeper HOSTS".into(),
            )
            .into()),
        }
    }

    /// The agent flags that open this store on a host.
    pub fn store_args(&self, cluster: &str) -> StoreArgs {
        let mut a = StoreArgs {
            cluster: cluster.to_string(),
            local_store: None,
            zookeeper: None,
            zk_root: None,
            session_timeout: StoreArgs::DEFAULT_SESSION_TIMEOUT.to_string(),
        };
        match self {
            Location::Local { dir } => a.local_store = Some(dir.clone()),
            Location::ZooKeeper {
                connect,
                root,
                session_timeout,
            } => {
                a.zookeeper = Some(connect.clone());
                a.zk_root = Some(root.clone());
                a.session_timeout = crate::config::units::format_duration(*session_timeout);
            }
        }
        a
    }

    /// The same location with a local directory made absolute, for host-side
    /// commands that run in other directories.
    pub fn absolute(&self) -> Location {
        match self {
            Location::Local { dir } => Location::Local {
                dir: std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
            },
            other => other.clone(),
        }
    }

    pub fn session_timeout(&self) -> Duration {
        match self {
            Location::Local { .. } => Duration::ZERO,
            Location::ZooKeeper {
                session_timeout, ..
            } => *session_timeout,
        }
    }

    pub async fn open(&self, cluster: &str) -> Result<Store> {
        Ok(match self {
            Location::Local { dir } => Store::Local(LocalStore::open(dir, cluster)?),
            Location::ZooKeeper {
                connect,
                root,
                session_timeout,
            } => {
                Store::ZooKeeper(ZkStore::connect(connect, root, cluster, *session_timeout).await?)
            }
        })
    }
}

impl Store {
    /// A deploy record that does not parse, named by where it is kept.
    fn check_record(&self, id: &str, record: &[u8]) -> Result<()> {
        crate::coordination::record::Record::parse(record)
            .map(drop)
            .map_err(|why| {
                let path = match self {
                    Store::Local(s) => s.deploy_path(id),
                    Store::ZooKeeper(s) => s.deploy_path(id),
                };
                crate::coordination::CoordError::store(path, why)
            })
    }
}

impl Coordinator for Store {
    type Lock = StoreLock;
    type Live = StoreLive;

    async fn lock(&self, holder: &Holder) -> Result<StoreLock> {
        Ok(match self {
            Store::Local(s) => StoreLock::Local(s.lock(holder).await?),
            Store::ZooKeeper(s) => StoreLock::ZooKeeper(s.lock(holder).await?),
        })
    }

    async fn register(&self, service: &str, instance: &Instance) -> Result<StoreLive> {
        Ok(match self {
            Store::Local(s) => StoreLive::Local(s.register(service, instance).await?),
            Store::ZooKeeper(s) => StoreLive::ZooKeeper(s.register(service, instance).await?),
        })
    }

    async fn withdraw(&self, live: StoreLive) {
        match (self, live) {
            (Store::Local(s), StoreLive::Local(l)) => s.withdraw(l).await,
            (Store::ZooKeeper(s), StoreLive::ZooKeeper(l)) => s.withdraw(l).await,
            (_, l) => drop(l),
        }
    }

    async fn unlock(&self, lock: StoreLock) {
        match (self, lock) {
            (Store::Local(s), StoreLock::Local(l)) => s.unlock(l).await,
            (Store::ZooKeeper(s), StoreLock::ZooKeeper(l)) => s.unlock(l).await,
            (_, l) => drop(l),
        }
    }

    async fn holder(&self) -> Result<Option<Holder>> {
        match self {
            Store::Local(s) => s.holder().await,
            Store::ZooKeeper(s) => s.holder().await,
        }
    }

    async fn services(&self) -> Result<Vec<String>> {
        match self {
            Store::Local(s) => s.services().await,
            Store::ZooKeeper(s) => s.services().await,
        }
    }

    async fn live(&self, service: &str) -> Result<Vec<Instance>> {
        match self {
            Store::Local(s) => s.live(service).await,
            Store::ZooKeeper(s) => s.live(service).await,
        }
    }

    async fn changed(&self, service: &str, since: &[Instance]) -> Result<()> {
        match self {
            Store::Local(s) => s.changed(service, since).await,
            Store::ZooKeeper(s) => s.changed(service, since).await,
        }
    }

    async fn set_staging(&self, service: &str, host: &str, version: &str) -> Result<()> {
        match self {
            Store::Local(s) => s.set_staging(service, host, version).await,
            Store::ZooKeeper(s) => s.set_staging(service, host, version).await,
        }
    }

    async fn clear_staging(&self, service: &str, host: &str) -> Result<()> {
        match self {
            Store::Local(s) => s.clear_staging(service, host).await,
            Store::ZooKeeper(s) => s.clear_staging(service, host).await,
        }
    }

    async fn staging(&self, service: &str) -> Result<Vec<(String, String)>> {
        match self {
            Store::Local(s) => s.staging(service).await,
            Store::ZooKeeper(s) => s.staging(service).await,
        }
    }

    async fn put_deploy(&self, id: &str, record: &[u8]) -> Result<()> {
        match self {
            Store::Local(s) => s.put_deploy(id, record).await,
            Store::ZooKeeper(s) => s.put_deploy(id, record).await,
        }
    }

    /// The record is checked here, where status, resume and rollback read it: a
    /// damaged one is an error naming where it is, never "no deploy".
    async fn last_deploy(&self) -> Result<Option<(String, Vec<u8>)>> {
        let found = match self {
            Store::Local(s) => s.last_deploy().await,
            Store::ZooKeeper(s) => s.last_deploy().await,
        }?;
        if let Some((id, record)) = &found {
            self.check_record(id, record)?;
        }
        Ok(found)
    }

    async fn get_deploy(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let found = match self {
            Store::Local(s) => s.get_deploy(id).await,
            Store::ZooKeeper(s) => s.get_deploy(id).await,
        }?;
        if let Some(record) = &found {
            self.check_record(id, record)?;
        }
        Ok(found)
    }

    fn check_session(&self) -> Result<()> {
        match self {
            Store::Local(s) => s.check_session(),
            Store::ZooKeeper(s) => s.check_session(),
        }
    }
}
/// Opens the inventory's coordination store.
pub async fn open_store(inv: &Inventory) -> anyhow::Result<Store> {
    anyhow::Context::with_context(Location::of(inv).open(&inv.cluster).await, || {
        format!(
            "opening the coordination store of cluster `{}`",
            inv.cluster
        )
    })
}
