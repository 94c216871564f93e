//! `rookery distribute`: the controller's side of a distribution.
//!
//! Write the metainfo for the artifact, start the tracker and the origin seeder in
//! this process, start `rookery agent fetch` on every target host at once, collect
//! their result lines, stop the origin, and report. The report's byte counts come
//! from librqbit's counters (the origin's upload, each agent's per-peer downloads),
//! never from arithmetic on assumptions.
//!
//! The same code drives both transports: over SSH, hosts are first all connected
//! (a changed host key anywhere stops the run before any command runs) while the
//! artifact is hashed; then every host fetches at once, since the swarm needs them
//! together. Each host gets one command: it saves the metainfo sent on its stdin,
//! checks that the host has this rookery binary, and starts the agent. Only a host
//! without this build takes a second round trip, to install it (`--forks` at a
//! time): on a loaded controller the former check, upload and fetch took 2 to 3 s
//! in all before the first byte moved. Progress comes from the agents' JSON lines
//! as events ([`crate::progress`]).
//!
//! Here: the options, the run and its report, the controller's hooks, the staged
//! versions recorded. Beside it: `release.rs` (the metainfo), `origin.rs` (tracker
//! and seeder), `hosts.rs` (one agent per host), `report.rs` (the report as text).

mod hosts;
mod origin;
mod release;
mod report;

pub use release::prepare;
pub use report::render;

use hosts::*;
use origin::*;
use release::*;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent::request::{FetchArgs, Request, SeedArgs, SwarmArgs};
use crate::config::template::shell_quote;
use crate::progress::{self, Event, Mode, Progress};
use crate::transport::bootstrap::{self, Binary, Outcome};
use crate::transport::{Chosen, Connection, Finished, HostError, Stage, Transport};

use crate::config::Config;
use crate::config::inventory::{self, Origin};
use crate::config::playbook::Sharing;
use crate::config::playbook::Version;
use crate::error::Error;
use crate::torrent::engine;
use crate::torrent::metainfo::{self, Metainfo};
use crate::tracker::server::{self as tracker, Settings, Tracker};

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub version: String,
    pub info_hash: String,
    pub artifact_bytes: u64,
    pub origin_uploaded_bytes: u64,
    /// The topology the tracker used: the playbook's `sharing`, or what `auto`
    /// chose for these hosts and this artifact.
    pub sharing: Sharing,
    pub seconds: f64,
    pub hosts: Vec<HostReport>,
}

#[derive(Debug, Serialize)]
pub struct HostReport {
    pub host: String,
    pub dc: String,
    pub rack: String,
    pub ok: bool,
    pub seconds: f64,
    pub bytes_from_origin: u64,
    pub bytes_from_peers: u64,
    pub bytes_reused: u64,
    /// Who fed this host: bytes from each peer, by host name (`origin` for the origin,
    /// an address for a peer that is neither), from the agent's own counters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fed_by: BTreeMap<String, u64>,
    /// The agent's listen address and its per-address counters, named into `fed_by`.
    #[serde(skip)]
    pub listen: Option<String>,
    #[serde(skip)]
    pub fetched_from: BTreeMap<String, u64>,
    /// What the bootstrap did (SSH transport only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Outcome>,
    /// The stage a failed host stopped in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostReport {
    /// A host's report before anything is known: not ok, nothing moved.
    pub fn new(host: &str, dc: &str, rack: &str) -> HostReport {
        HostReport {
            host: host.to_string(),
            dc: dc.to_string(),
            rack: rack.to_string(),
            ok: false,
            seconds: 0.0,
            bytes_from_origin: 0,
            bytes_from_peers: 0,
            bytes_reused: 0,
            fed_by: BTreeMap::new(),
            listen: None,
            fetched_from: BTreeMap::new(),
            bootstrap: None,
            stage: None,
            error: None,
        }
    }
}

/// How `rookery distribute` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub json: bool,
    pub quiet: bool,
    pub forks: usize,
    pub accept_new_host_keys: bool,
    pub advertise: Option<IpAddr>,
}

/// Distributes the artifact to `hosts` over the inventory's transport, between the
/// playbook's `before_distribute` and `after_distribute` hooks.
pub async fn distribute(
    config: &Config,
    hosts: &[usize],
    opts: &Options,
    cancel: CancellationToken,
) -> anyhow::Result<Report> {
    let transport = Chosen::of(&config.inventory, opts.accept_new_host_keys)?;
    let report = orchestrate(&transport, config, hosts, opts, cancel.clone()).await?;
    // Run to its end, failed hosts or not; an interrupted one is not.
    if !cancel.is_cancelled() {
        controller_hooks(config, Hook::AfterDistribute, &report.version).await?;
    }
    Ok(report)
}

/// The version the artifact builds now, without distributing it: its metainfo made
/// here, or on the origin host from its copy of the build (bootstrapping rookery
/// there when needed). `reconcile` asks, to know whether the hosts behind can be
/// given the release they are behind on.
pub async fn artifact_version(
    config: &Config,
    opts: &Options,
    cancel: &CancellationToken,
) -> anyhow::Result<String> {
    let Origin::Host(b) = config.inventory.origin else {
        return Ok(prepare(config)?.1);
    };
    let transport = Chosen::of(&config.inventory, opts.accept_new_host_keys)?;
    let reached = reach(&transport, &[], Some(b), 1).await?;
    let conn = reached
        .origin
        .context("the origin host was not connected")?;
    let binary = transport
        .needs_bootstrap()
        .then(Binary::current)
        .transpose()?;
    let agent = |h: usize| transport.agent_path(h);
    let (_, version) = remote_metainfo(config, b, &*conn, binary.as_ref(), &agent, cancel).await?;
    Ok(version)
}

/// The playbook's hooks around distribution.
#[derive(Debug, Clone, Copy)]
enum Hook {
    BeforeDistribute,
    AfterDistribute,
}

/// Runs one kind of the playbook's `hooks` on the controller, in order, with
/// `{version}` filled in (the host placeholders have no host here and stay empty).
/// A failing hook stops the command with an error that names it.
async fn controller_hooks(config: &Config, hook: Hook, version: &str) -> anyhow::Result<()> {
    let hooks = &config.playbook.hooks;
    let (list, what) = match hook {
        Hook::BeforeDistribute => (&hooks.before_distribute, "before_distribute"),
        Hook::AfterDistribute => (&hooks.after_distribute, "after_distribute"),
    };
    let vars = BTreeMap::from([("version", version.to_string())]);
    crate::transport::run_hooks(&crate::transport::local::LocalConnection, list, &vars, what)
        .await
        .map_err(|e| match hook {
            Hook::BeforeDistribute => anyhow::anyhow!("{e}; no host was asked to fetch"),
            Hook::AfterDistribute => anyhow::anyhow!(
                "{e}; the hosts have the release, but it was not recorded as staged (run the same command again)"
            ),
        })
}

/// Records in the store that each host with a verified copy has the version staged,
/// for every service of the playbook placed on it.
pub async fn stage(
    config: &Config,
    store: &crate::coordination::store::Store,
    report: &Report,
) -> anyhow::Result<()> {
    use crate::coordination::Coordinator;
    for (si, svc) in config.playbook.services.iter().enumerate() {
        for &h in &config.services[si].hosts {
            let name = &config.inventory.hosts[h].name;
            if report.hosts.iter().any(|r| &r.host == name && r.ok) {
                store
                    .set_staging(&svc.name, name, &report.version)
                    .await
                    .with_context(|| format!("recording the staged version of {name}"))?;
            }
        }
    }
    Ok(())
}

/// Runs a distribution over `transport`: connect, make the metainfo, start the
/// origin, let every host fetch at once, stop the origin and report.
async fn orchestrate<T: Transport>(
    transport: &T,
    config: &Config,
    hosts: &[usize],
    opts: &Options,
    cancel: CancellationToken,
) -> anyhow::Result<Report> {
    let agent = &|h: usize| transport.agent_path(h);
    let started = Instant::now();
    let inv = &config.inventory;
    let origin_host = match inv.origin {
        Origin::Host(b) => Some(b),
        Origin::Controller => None,
    };
    let names: Vec<String> = hosts.iter().map(|&h| inv.hosts[h].name.clone()).collect();

    // 1. Connect to every host first: a changed host key anywhere stops the run
    //    before any command runs anywhere. Meanwhile, when the controller is the
    //    origin, hash the artifact (about 0.4 s per GiB).
    let hashing = origin_host.is_none().then(|| spawn_create(config));
    let reached = reach(transport, hosts, origin_host, opts.forks).await?;
    tracing::info!(elapsed = ?started.elapsed(), "connected");
    let binary = if transport.needs_bootstrap() {
        Some(Binary::current()?)
    } else {
        None
    };

    // 2. The metainfo: made here, or on the origin host from its copy of the build.
    let on_origin = origin_host.zip(reached.origin.as_deref());
    let (m, version) =
        metainfo_for(config, on_origin, hashing, binary.as_ref(), agent, &cancel).await?;
    // The playbook's `before_distribute` hooks, on this machine: the version is
    // known, and no host has been asked to fetch anything yet.
    controller_hooks(config, Hook::BeforeDistribute, &version).await?;
    tracing::info!(elapsed = ?started.elapsed(), %version, "metainfo ready");
    // `sharing: auto` becomes the chain or the trees here, once, for these hosts
    // and this artifact; everything after reads the choice.
    let (sharing, why) = crate::plan::estimate::choose(config, hosts, m.total_length());
    tracing::info!(?sharing, %why, "sharing");
    let chosen;
    let config = if sharing == config.playbook.distribution.sharing {
        config
    } else {
        let mut c = config.clone();
        c.playbook.distribution.sharing = sharing;
        chosen = c;
        &chosen
    };
    let progress = Progress::start(Mode::detect(opts.quiet), &names, m.total_length());
    let events = progress.sender();
    report_unreached(&events, &reached.failed);

    // 3. Tracker and origin seeder.
    let on_origin = origin_host.zip(reached.origin);
    let side = start_origin(config, opts, on_origin, &m, &reached.conns, agent, &cancel).await?;
    tracing::info!(elapsed = ?started.elapsed(), announce = %side.announce, "origin ready");

    // 4. Every host fetches at once: the swarm needs them together.
    let launch = Launch {
        config,
        side: &side,
        version: &version,
        torrent: Arc::new(m.to_bytes()),
        binary,
        local: !transport.needs_bootstrap(),
        installs: Arc::new(tokio::sync::Semaphore::new(opts.forks.max(1))),
        events: events.clone(),
        cancel: &cancel,
    };
    let jobs = launch.spawn(reached.conns, agent)?;
    drop(launch);
    let mut reports = join_reports(jobs).await?;
    drop(events);
    progress.finish().await;
    reports.extend(reached.failed.iter().map(|(h, e)| unreached(inv, *h, e)));
    reports.sort_by(|a, b| a.host.cmp(&b.host));
    name_feeders(&mut reports, &side.origin);
    tracing::info!(elapsed = ?started.elapsed(), "every host reported");
    let origin_uploaded = stop_origin(side).await?;
    tracing::info!(elapsed = ?started.elapsed(), "origin stopped");
    Ok(Report {
        version: version.to_string(),
        info_hash: m.info_hash_hex(),
        artifact_bytes: m.total_length(),
        origin_uploaded_bytes: origin_uploaded,
        sharing,
        seconds: started.elapsed().as_secs_f64(),
        hosts: reports,
    })
}

/// The metainfo and its version: made on origin host `b` over its connection
/// (`on_origin`), else here (by `hashing`, when it was started).
async fn metainfo_for<C: Connection>(
    config: &Config,
    on_origin: Option<(usize, &C)>,
    hashing: Option<tokio::task::JoinHandle<anyhow::Result<(Metainfo, metainfo::Stats)>>>,
    binary: Option<&Binary>,
    agent: &(dyn Fn(usize) -> String + Sync),
    cancel: &CancellationToken,
) -> anyhow::Result<(Metainfo, String)> {
    if let Some((b, conn)) = on_origin {
        return remote_metainfo(config, b, conn, binary, agent, cancel).await;
    }
    let hashing = hashing.unwrap_or_else(|| spawn_create(config));
    let (m, stats) = hashing.await.context("hashing the artifact panicked")??;
    let (version, _) = keep_metainfo(config, &m, &m.to_bytes(), Some(&stats))?;
    Ok((m, version))
}

/// Starts the tracker and the origin seeder: on origin host `b` over its
/// connection (`on_origin`), else in this process. The roster holds the hosts that
/// will fetch (`conns`), and only them: a member that never announces (the origin
/// host itself, a host that failed to connect) would hold up its successor in the
/// chain until the end of the start-up grace. A host whose agent then fails to
/// start is withdrawn.
async fn start_origin<C: Connection>(
    config: &Config,
    opts: &Options,
    on_origin: Option<(usize, Arc<C>)>,
    m: &Metainfo,
    conns: &[(usize, Arc<C>)],
    agent: &(dyn Fn(usize) -> String + Sync),
    cancel: &CancellationToken,
) -> anyhow::Result<OriginSide> {
    let mut members: Vec<usize> = conns.iter().map(|(h, _)| *h).collect();
    members.sort_unstable();
    match on_origin {
        Some((b, conn)) => remote_origin(config, b, conn, agent, &members, cancel).await,
        None => {
            let ip = origin_ip(opts, conns)?;
            local_origin(config, &members, m, ip, cancel).await
        }
    }
}

/// The hosts that could not be reached are done, and failed, from the start.
fn report_unreached(events: &progress::Sender, failed: &[(usize, HostError)]) {
    for (_, e) in failed {
        events.send(Event::Done {
            host: e.host.clone(),
            ok: false,
            summary: format!("{}: {}", e.stage, e.message),
        });
    }
}

/// Stops the tracker and the origin seeder; returns what the seeder uploaded.
async fn stop_origin(side: OriginSide) -> anyhow::Result<u64> {
    side.cancel.cancel();
    side.task
        .await
        .context("the origin seeder panicked")?
        .context("the origin seeder failed")
}

/// Every agent job's report, as they end.
async fn join_reports(
    mut jobs: tokio::task::JoinSet<HostReport>,
) -> anyhow::Result<Vec<HostReport>> {
    let mut reports = Vec::new();
    while let Some(r) = jobs.join_next().await {
        reports.push(r.context("an agent job panicked")?);
    }
    Ok(reports)
}

/// The hosts connected to (targets, and the origin host's connection apart) and
/// those that could not be.
struct Reached<C> {
    conns: Vec<(usize, Arc<C>)>,
    origin: Option<Arc<C>>,
    failed: Vec<(usize, HostError)>,
}

/// Connects to the targets and the origin host together. A changed host key stops
/// the run; an unreachable origin host too; other hosts are left out.
async fn reach<T: Transport>(
    transport: &T,
    hosts: &[usize],
    origin_host: Option<usize>,
    forks: usize,
) -> anyhow::Result<Reached<T::Connection>> {
    let mut reach: Vec<usize> = hosts.to_vec();
    if let Some(b) = origin_host
        && !reach.contains(&b)
    {
        reach.push(b);
    }
    let connected = crate::transport::connect_all(transport, &reach, forks).await;
    let mut r = Reached {
        conns: Vec::new(),
        origin: None,
        failed: Vec::new(),
    };
    for (&h, c) in reach.iter().zip(connected) {
        match c {
            Ok(c) => {
                let c = Arc::new(c);
                if Some(h) == origin_host {
                    r.origin = Some(c.clone());
                }
                if hosts.contains(&h) {
                    r.conns.push((h, c));
                }
            }
            Err(e) if e.fatal => return Err(Error::Untrusted(e).into()),
            Err(e) if Some(h) == origin_host => {
                return Err(anyhow::Error::new(e).context("the origin host is unreachable"));
            }
            Err(e) => r.failed.push((h, e)),
        }
    }
    Ok(r)
}

/// The address hosts reach this machine at: `--advertise`, else the local address
/// of a direct connection.
fn origin_ip<C: Connection>(opts: &Options, conns: &[(usize, Arc<C>)]) -> anyhow::Result<IpAddr> {
    Ok(match opts.advertise {
        Some(ip) => ip,
        None => match conns.iter().find_map(|(_, c)| c.local_ip()) {
            Some(ip) => ip,
            None if conns.is_empty() => Ipv4Addr::LOCALHOST.into(),
            None => anyhow::bail!(
                "no host was reached directly, so the address hosts can reach this machine at is unknown: pass --advertise IP, or make a host of the inventory the origin"
            ),
        },
    })
}

/// The report of a host that could not be reached.
fn unreached(inv: &inventory::Inventory, h: usize, e: &HostError) -> HostReport {
    let host = &inv.hosts[h];
    HostReport {
        stage: Some(e.stage),
        error: Some(format!("{}: {}", e.stage, e.message)),
        ..HostReport::new(
            &host.name,
            &inv.datacenters[host.dc].name,
            &inv.racks[host.rack].name,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary speaks MiB, as the progress bars do (issue 18: bars said MiB,
    /// the summary MB).
    #[test]
    fn the_summary_counts_in_mib_like_the_bars() {
        let r = Report {
            version: "v1".into(),
            info_hash: String::new(),
            artifact_bytes: 300 << 20,
            origin_uploaded_bytes: 300 << 20,
            sharing: Sharing::Pipeline,
            seconds: 3.0,
            hosts: vec![HostReport {
                host: "east-1".into(),
                dc: "east".into(),
                rack: "e1".into(),
                ok: true,
                seconds: 2.0,
                bytes_from_origin: 100 << 20,
                bytes_from_peers: 200 << 20,
                bytes_reused: 0,
                fed_by: BTreeMap::new(),
                listen: None,
                fetched_from: BTreeMap::new(),
                bootstrap: None,
                stage: None,
                error: None,
            }],
        };
        let text = render(&r);
        assert!(
            text.starts_with("version v1 (300 MiB), origin uploaded 300.0 MiB = 1.00 copies"),
            "{text}"
        );
        assert!(text.contains("MiB/s"), "{text}");
        assert!(text.contains("  150.0    200.0MiB      0.0MiB"), "{text}");
        assert!(!text.contains("MB"), "{text}");
    }
}
