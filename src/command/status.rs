//! `rookery status`: what runs where, from the coordination store and the hosts.
//!
//! Per service and host: the live version (the `current` entry, present only while
//! the instance is healthy), the staged version (verified copy waiting to be
//! switched to), and, when a playbook is given, the releases installed on the host
//! and what its `current` symlink points to. Then the deploy lock's holder and the
//! last deploy with its outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::command::skeleton::{self, Outcome, Output};
use crate::config::Config;
use crate::config::inventory::Inventory;
use crate::coordination::record::Record;
use crate::coordination::store::Store;
use crate::coordination::{Coordinator, Holder};
use crate::error::Exit;
use crate::transport::{Chosen, HostError, Transport};

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster: String,
    pub lock: Option<Holder>,
    pub last_deploy: Option<Record>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub live: usize,
    pub hosts: Vec<HostStatus>,
}

#[derive(Debug, Default, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub live: Option<String>,
    pub staged: Option<String>,
    /// What `current` points to (with a playbook).
    pub current: Option<String>,
    /// The release `agent start` starts this service on at boot (with a playbook).
    pub on_boot: Option<String>,
    /// Live on one release, set to start another at boot: a reboot would change what
    /// runs (shown with `(!)`).
    pub boot_differs: bool,
    /// Installed releases, oldest first (with a playbook).
    pub releases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Options {
    pub json: bool,
    pub quiet: bool,
    /// `--limit`: only these hosts (by name) are shown and asked; `None`: all.
    pub hosts: Option<Vec<String>>,
    pub forks: usize,
    pub accept_new_host_keys: bool,
}

/// `config` when a playbook was given (then hosts are asked for their releases),
/// else only the inventory and the store.
pub fn run(inv: &Inventory, config: Option<&Config>, opts: &Options) -> anyhow::Result<Exit> {
    let output = Output {
        json: opts.json,
        quiet: opts.quiet,
    };
    skeleton::run(inv, output, async |store, _| {
        gather(inv, config, store, opts).await
    })
}

impl Outcome for Status {
    fn render(&self) -> String {
        render(self)
    }

    /// `status` reads; what it finds is not its failure.
    fn exit(&self, _cancelled: bool) -> Exit {
        Exit::Ok
    }
}

async fn gather(
    inv: &Inventory,
    config: Option<&Config>,
    store: &Store,
    opts: &Options,
) -> anyhow::Result<Status> {
    // Which services, and on which hosts.
    let placed: Vec<(String, Vec<String>)> = match config {
        Some(c) => c
            .order
            .iter()
            .map(|&si| {
                let hosts = c.services[si]
                    .hosts
                    .iter()
                    .map(|&h| c.inventory.hosts[h].name.clone())
                    .collect();
                (c.playbook.services[si].name.clone(), hosts)
            })
            .collect(),
        None => store
            .services()
            .await?
            .into_iter()
            .map(|s| (s, Vec::new()))
            .collect(),
    };
    let mut services = Vec::new();
    for (name, hosts) in placed {
        services.push(service_status(store, name, hosts, opts).await?);
    }
    if let Some(c) = config {
        add_releases(c, &mut services, opts).await?;
    }
    let lock = store.holder().await?;
    let last_deploy = store
        .last_deploy()
        .await?
        .and_then(|(_, b)| Record::from_bytes(&b))
        .map(|r| left_by_a_dead_run(r, lock.as_ref()));
    Ok(Status {
        cluster: inv.cluster.clone(),
        lock,
        last_deploy,
        services,
    })
}

/// One service as the store sees it: live and staged versions per host.
async fn service_status(
    store: &Store,
    name: String,
    hosts: Vec<String>,
    opts: &Options,
) -> anyhow::Result<ServiceStatus> {
    let live = store.live(&name).await?;
    let staged = store.staging(&name).await?;
    let mut rows: BTreeMap<String, HostStatus> = BTreeMap::new();
    let row = |host: &str| HostStatus {
        host: host.to_string(),
        ..Default::default()
    };
    for h in hosts {
        rows.insert(h.clone(), row(&h));
    }
    for i in &live {
        rows.entry(i.host.clone())
            .or_insert_with(|| row(&i.host))
            .live = Some(i.version.clone());
    }
    for (h, v) in staged {
        rows.entry(h.clone()).or_insert_with(|| row(&h)).staged = Some(v);
    }
    if let Some(keep) = &opts.hosts {
        rows.retain(|h, _| keep.contains(h));
    }
    Ok(ServiceStatus {
        name,
        // The service's, whatever `--limit` shows.
        live: live.len(),
        hosts: rows.into_values().collect(),
    })
}

/// What each host has installed, asked of the hosts themselves.
async fn add_releases(
    c: &Config,
    services: &mut [ServiceStatus],
    opts: &Options,
) -> anyhow::Result<()> {
    let mut hosts: Vec<usize> = c.target_hosts();
    if let Some(keep) = &opts.hosts {
        hosts.retain(|&h| keep.contains(&c.inventory.hosts[h].name));
    }
    let transport = Chosen::of(&c.inventory, opts.accept_new_host_keys)?;
    let found = releases(&transport, c, &hosts, opts.forks).await;
    for s in services {
        for row in &mut s.hosts {
            match found.get(&row.host) {
                Some(Ok(r)) => {
                    row.current = r.current.clone();
                    row.releases = r.releases.clone();
                    row.on_boot = r.on_boot.get(&s.name).cloned();
                    row.boot_differs =
                        matches!((&row.live, &row.on_boot), (Some(l), Some(b)) if l != b);
                }
                Some(Err(e)) => row.error = Some(e.to_string()),
                None => {}
            }
        }
    }
    Ok(())
}

/// A record still `running` while nobody holds the deploy lock was left by a run that
/// died (every run holds the lock while it works, and a dead run's lock goes with
/// its session): shown as `interrupted`, saying whose run it was and when it last
/// wrote, not as running. The stored record is not changed; the next run resumes it.
fn left_by_a_dead_run(mut r: Record, lock: Option<&Holder>) -> Record {
    if r.state == crate::coordination::record::State::Running && lock.is_none() {
        r.state = crate::coordination::record::State::Interrupted;
        let left = format!(
            "left by {} pid {}, which no longer holds the deploy lock (last written {}): run the same command to resume",
            r.who,
            r.pid,
            crate::coordination::format_utc(r.updated)
        );
        r.message = Some(match r.message.take() {
            Some(m) => format!("{left}; {m}"),
            None => left,
        });
    }
    r
}

/// Why a host's releases could not be read: shown in its row.
#[derive(Debug, thiserror::Error)]
enum ReleasesError {
    /// Connecting to the host failed.
    #[error(transparent)]
    Connect(#[from] HostError),
    /// The host was reached; asking it for its releases failed.
    #[error(transparent)]
    Asking(crate::rollout::AgentError),
}

/// Each host's installed releases, asked of the hosts (`forks` at a time), by name.
async fn releases<T: Transport>(
    transport: &T,
    config: &Config,
    hosts: &[usize],
    forks: usize,
) -> BTreeMap<String, Result<crate::agent::switch::Releases, ReleasesError>> {
    let conns = crate::transport::connect_all(transport, hosts, forks).await;
    let mut out = BTreeMap::new();
    let mut jobs = Vec::new();
    for (&h, c) in hosts.iter().zip(conns) {
        let name = config.inventory.hosts[h].name.clone();
        match c {
            Ok(c) => {
                let c = Arc::new(c);
                let agent = transport.agent_path(h);
                jobs.push(async move {
                    let r = crate::rollout::releases(config, c.as_ref(), h, &agent)
                        .await
                        .map_err(ReleasesError::Asking);
                    (name, r)
                });
            }
            Err(e) => {
                out.insert(name, Err(ReleasesError::Connect(e)));
            }
        }
    }
    for (name, r) in futures_util::future::join_all(jobs).await {
        out.insert(name, r);
    }
    out
}

fn short(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

pub fn render(s: &Status) -> String {
    let mut out = format!("Cluster `{}`\n", s.cluster);
    out.push_str(&match &s.lock {
        Some(h) => format!("Deploy lock: held by {}\n", h.describe()),
        None => "Deploy lock: free\n".into(),
    });
    match &s.last_deploy {
        Some(r) => {
            out.push_str(&format!(
                "Last deploy: {} ({:?}, playbook `{}`, version {}) by {} at {}: {:?}\n",
                r.id,
                r.kind,
                r.playbook,
                r.version,
                r.who,
                crate::coordination::format_utc(r.started),
                r.state
            ));
            if let Some(m) = &r.message {
                out.push_str(&format!("  {m}\n"));
            }
        }
        None => out.push_str("Last deploy: none\n"),
    }
    for svc in &s.services {
        out.push_str(&format!("\n{} ({} live)\n", svc.name, svc.live));
        out.push_str(&format!(
            "  {:<16} {:<18} {:<18} {:<18} {:<18} {}\n",
            "HOST", "LIVE", "STAGED", "ON BOOT", "CURRENT", "RELEASES"
        ));
        for h in &svc.hosts {
            out.push_str(&format!(
                "  {:<16} {:<18} {:<18} {:<18} {:<18} {}{}\n",
                h.host,
                short(&h.live),
                short(&h.staged),
                if h.boot_differs {
                    format!("{} (!)", short(&h.on_boot))
                } else {
                    short(&h.on_boot)
                },
                short(&h.current),
                h.releases.join(" "),
                h.error
                    .as_deref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}
