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

fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// Where the controller keeps metainfo files between runs.
fn state_dir(config: &Config) -> PathBuf {
    match &config.inventory.transport {
        inventory::Transport::Local { root } => root.join(".controller"),
        inventory::Transport::Ssh(_) => std::env::temp_dir().join(format!(
            "rookery-{}-{}",
            config.inventory.cluster,
            current_uid()
        )),
    }
}

fn current_uid() -> u32 {
    // SAFETY: getuid(2) cannot fail.
    unsafe { libc::getuid() }
}

/// Builds (or reuses) the metainfo of the artifact; returns it with its version.
pub fn prepare(config: &Config) -> anyhow::Result<(Metainfo, String, PathBuf)> {
    let (m, stats) = create(&config.playbook.artifact.source, &create_options(config))?;
    let bytes = m.to_bytes();
    let (version, file) = keep_metainfo(config, &m, &bytes, Some(&stats))?;
    Ok((m, version, file))
}

fn create_options(config: &Config) -> metainfo::CreateOptions {
    // Read once: its manifest lays the new release out, its hashes may be reused.
    let previous = previous_metainfo(config);
    metainfo::CreateOptions {
        piece_size: config.playbook.distribution.piece_size.map(|s| s.0),
        announce: None,
        name: None,
        keep_special_bits: config.playbook.artifact.keep_special_bits,
        previous: previous.as_ref().map(|m| m.rookery.clone()),
        reuse: previous.and_then(|m| previous_hashed(config, m)),
    }
}

fn create(
    source: &std::path::Path,
    opts: &metainfo::CreateOptions,
) -> anyhow::Result<(Metainfo, metainfo::Stats)> {
    let began = Instant::now();
    let (m, stats, work) = metainfo::create_with_stats(source, opts)
        .with_context(|| format!("creating metainfo for {}", source.display()))?;
    tracing::info!(
        elapsed = ?began.elapsed(),
        file_bytes_read = work.file_bytes_read,
        piece_bytes_read = work.piece_bytes_read,
        piece_bytes_reused = work.piece_bytes_reused,
        "hashed the artifact"
    );
    Ok((m, stats))
}

/// [`create`] on a blocking thread, to overlap with connecting to the hosts.
fn spawn_create(
    config: &Config,
) -> tokio::task::JoinHandle<anyhow::Result<(Metainfo, metainfo::Stats)>> {
    let source = config.playbook.artifact.source.clone();
    let opts = create_options(config);
    tokio::task::spawn_blocking(move || create(&source, &opts))
}

/// Where host `h` keeps the metainfo of `version`.
fn torrent_path(config: &Config, h: usize, version: &str) -> String {
    config
        .host_destination(h)
        .join(".rookery")
        .join(format!("{version}.torrent"))
        .display()
        .to_string()
}

/// What [`fetch_command`] prints when it cannot save the metainfo.
const METAINFO_FAILED: &str = "metainfo_failed";

/// The one command that starts a host's fetch: it saves the metainfo read on stdin
/// at `torrent` (atomically: a temporary file, then a rename), then, with
/// `Some((path, binary))`, stops with a [`bootstrap::NEEDS_BINARY`] event unless
/// `path` holds that binary, and then runs `argv`.
fn fetch_command(torrent: &str, check: Option<(&str, &Binary)>, argv: &[String]) -> String {
    let q = |a: &str| shell_quote(a);
    let (dir, _) = torrent.rsplit_once('/').unwrap_or((".", torrent));
    let mut s = format!(
        "t={}; mkdir -p -- {} && cat > \"$t.tmp.$$\" && mv -f -- \"$t.tmp.$$\" \"$t\" \
         || {{ echo '{{\"event\":\"{METAINFO_FAILED}\"}}'; exit 1; }}; ",
        q(torrent),
        q(dir)
    );
    if let Some((path, bin)) = check {
        s.push_str(&bootstrap::guard(path, bin));
        s.push_str("; ");
    }
    s.push_str("exec");
    for a in argv {
        s.push(' ');
        s.push_str(&q(a));
    }
    s
}

/// The release version of `m`, and a copy of its bytes in the controller's state
/// directory (`<version>.torrent`), with the stats of the files hashed here
/// (`<version>.stats.json`, for the next release to reuse their hashes).
fn keep_metainfo(
    config: &Config,
    m: &Metainfo,
    bytes: &[u8],
    stats: Option<&metainfo::Stats>,
) -> anyhow::Result<(String, PathBuf)> {
    let version = match &config.playbook.artifact.version {
        Version::ContentHash => m.content_version(),
        Version::Label(l) => l.clone(),
    };
    let dir = state_dir(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{version}.torrent"));
    std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    let stats_path = stats_file(config, &version);
    match stats {
        Some(stats) => {
            let text = serde_json::to_vec(stats).expect("stats serialize");
            crate::os::write_atomically(&stats_path, &text, 0o600)
                .with_context(|| format!("writing {}", stats_path.display()))?;
        }
        // Hashed elsewhere (on the origin host): nothing here to compare with.
        None => {
            let _ = std::fs::remove_file(&stats_path);
        }
    }
    let last = last_file(config);
    std::fs::write(&last, &version).with_context(|| format!("writing {}", last.display()))?;
    Ok((version, file))
}

/// Names the version this playbook's metainfo was last made for.
fn last_file(config: &Config) -> PathBuf {
    state_dir(config).join(format!("last-{}", config.playbook.name))
}

/// The metainfo this playbook's last distribution made, if this machine still has
/// it: the next one is laid out after it (see `metainfo::create`). Anything missing
/// or unreadable means none.
fn previous_metainfo(config: &Config) -> Option<Metainfo> {
    let version = std::fs::read_to_string(last_file(config)).ok()?;
    crate::config::inventory::check_name(version.trim()).ok()?;
    let file = state_dir(config).join(format!("{}.torrent", version.trim()));
    let bytes = std::fs::read(file).ok()?;
    Metainfo::from_bytes(&bytes).ok()
}

/// Where the stats of the files hashed for `version` are kept (beside its metainfo).
fn stats_file(config: &Config, version: &str) -> PathBuf {
    state_dir(config).join(format!("{version}.stats.json"))
}

/// The last distribution's metainfo with the stats of the files it hashed, if this
/// machine still has them: unchanged files are not read again (see
/// `metainfo::CreateOptions::reuse`).
fn previous_hashed(config: &Config, metainfo: Metainfo) -> Option<metainfo::Hashed> {
    let version = std::fs::read_to_string(last_file(config)).ok()?;
    let text = std::fs::read(stats_file(config, version.trim())).ok()?;
    let stats = serde_json::from_slice(&text).ok()?;
    Some(metainfo::Hashed { metainfo, stats })
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

/// A directory of rookery's own on host `h`: beside the agent binary over SSH, under
/// the host's root (which the inventory always sets) on the local transport.
fn host_state_dir(config: &Config, h: usize, agent: &str) -> String {
    match &config.inventory.transport {
        inventory::Transport::Ssh(_) => match agent.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/../origin"),
            None => ".rookery/origin".to_string(),
        },
        inventory::Transport::Local { .. } => config.inventory.hosts[h]
            .root
            .clone()
            .unwrap_or_default()
            .join(".rookery/origin")
            .display()
            .to_string(),
    }
}

/// The tracker and origin seeder, wherever they run.
struct OriginSide {
    /// `http://ADDR/announce`
    announce: String,
    /// The origin's address, to tell its bytes from the hosts'.
    origin: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
    /// The tracker, when it runs in this process: hosts whose agent fails are
    /// withdrawn from it. (A tracker on the origin host instead lets their
    /// successors wait out the start-up grace, a few seconds.)
    withdraw: Option<Tracker>,
}

#[allow(clippy::too_many_arguments)]
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
    let dist = &config.playbook.distribution;
    let origin_host = match inv.origin {
        Origin::Host(b) => Some(b),
        Origin::Controller => None,
    };
    // Connect to the targets and the origin host together.
    let mut reach: Vec<usize> = hosts.to_vec();
    if let Some(b) = origin_host
        && !reach.contains(&b)
    {
        reach.push(b);
    }
    let names: Vec<String> = hosts.iter().map(|&h| inv.hosts[h].name.clone()).collect();
    let mut failed: Vec<(usize, HostError)> = Vec::new();

    // 1. Connect to every host first: a changed host key anywhere stops the run
    //    before any command runs anywhere. Meanwhile, when the controller is the
    //    origin, hash the artifact (about 0.4 s per GiB).
    let hashing = origin_host.is_none().then(|| spawn_create(config));
    let connected = crate::transport::connect_all(transport, &reach, opts.forks).await;
    tracing::info!(elapsed = ?started.elapsed(), "connected");
    let mut conns: Vec<(usize, Arc<T::Connection>)> = Vec::new();
    let mut origin_conn = None;
    for (&h, r) in reach.iter().zip(connected) {
        match r {
            Ok(c) => {
                let c = Arc::new(c);
                if Some(h) == origin_host {
                    origin_conn = Some(c.clone());
                }
                if hosts.contains(&h) {
                    conns.push((h, c));
                }
            }
            Err(e) if e.fatal => return Err(Error::Untrusted(e).into()),
            Err(e) if Some(h) == origin_host => {
                return Err(anyhow::Error::new(e).context("the origin host is unreachable"));
            }
            Err(e) => failed.push((h, e)),
        }
    }
    let binary = if transport.needs_bootstrap() {
        Some(Binary::current()?)
    } else {
        None
    };

    // 2. The metainfo: made here, or on the origin host from its copy of the build.
    let (m, version) = match (origin_host, &origin_conn) {
        (Some(b), Some(conn)) => {
            remote_metainfo(config, b, conn.as_ref(), binary.as_ref(), agent, &cancel).await?
        }
        _ => {
            let hashing = hashing.unwrap_or_else(|| spawn_create(config));
            let (m, stats) = hashing.await.context("hashing the artifact panicked")??;
            let (version, _) = keep_metainfo(config, &m, &m.to_bytes(), Some(&stats))?;
            (m, version)
        }
    };
    // The playbook's `before_distribute` hooks, on this machine: the version is
    // known, and no host has been asked to fetch anything yet.
    controller_hooks(config, Hook::BeforeDistribute, &version).await?;
    let torrent = Arc::new(m.to_bytes());
    tracing::info!(elapsed = ?started.elapsed(), %version, "metainfo ready");
    let progress = Progress::start(Mode::detect(opts.quiet), &names, m.total_length());
    let events = progress.sender();
    for (_, e) in &failed {
        events.send(Event::Done {
            host: e.host.clone(),
            ok: false,
            summary: format!("{}: {}", e.stage, e.message),
        });
    }

    // 3. Tracker and origin seeder. The roster holds the hosts that will fetch, and
    // only them: a member that never announces (the origin host itself, a host that
    // failed to connect) would hold up its successor in the chain until the end of
    // the start-up grace. A host whose agent then fails to start is withdrawn.
    let mut members: Vec<usize> = conns.iter().map(|(h, _)| *h).collect();
    members.sort_unstable();
    let side = match (origin_host, origin_conn) {
        (Some(b), Some(conn)) => remote_origin(config, b, conn, agent, &members, &cancel).await?,
        _ => {
            let ip = match opts.advertise {
                Some(ip) => ip,
                None => match conns.iter().find_map(|(_, c)| c.local_ip()) {
                    Some(ip) => ip,
                    None if conns.is_empty() => Ipv4Addr::LOCALHOST.into(),
                    None => anyhow::bail!(
                        "no host was reached directly, so the address hosts can reach this machine at is unknown: pass --advertise IP, or make a host of the inventory the origin"
                    ),
                },
            };
            local_origin(config, &members, &m, ip, &cancel).await?
        }
    };
    let announce = |host: &str| format!("{}?host={host}", side.announce);
    tracing::info!(elapsed = ?started.elapsed(), announce = %side.announce, "origin ready");

    // 4. Every host fetches at once: the swarm needs them together. One command per
    // host carries the metainfo on its stdin, checks the rookery binary (SSH) and
    // starts the agent; only a host without this build makes a second round trip,
    // to install it, `--forks` at a time.
    let local = !transport.needs_bootstrap();
    let installs = Arc::new(tokio::sync::Semaphore::new(opts.forks.max(1)));
    let install_timeout = inv.transport.command_timeout();
    let mut jobs = tokio::task::JoinSet::new();
    // Feeders first: with hundreds of hosts the commands go out over seconds, and a
    // host started before its feeder waits for it.
    let mut conns = conns;
    if let Some(tracker) = &side.withdraw {
        conns.sort_by_cached_key(|(h, _)| tracker.start_rank(&inv.hosts[*h].name));
    }
    for (h, conn) in conns {
        let host = &inv.hosts[h];
        let listen = if local {
            // Port 0: the agent's engine binds whatever the kernel gives it and
            // announces that. A port picked free here could be taken, by some
            // connection's ephemeral port, before the agent binds it.
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            match host.address.parse::<IpAddr>() {
                Ok(a) => SocketAddr::new(a, dist.port),
                Err(_) => SocketAddr::from(([0, 0, 0, 0], dist.port)),
            }
        };
        let torrent_file = torrent_path(config, h, &version);
        let agent_path = agent(h);
        let at = Where {
            torrent: &torrent_file,
            listen,
            tracker: announce(&host.name),
            origin: &side.origin,
        };
        let argv = fetch_request(config, h, &at, &version)?.argv(&agent_path);
        let command = fetch_command(
            &torrent_file,
            binary.as_ref().map(|b| (agent_path.as_str(), b)),
            &argv,
        );
        let job = HostJob {
            name: host.name.clone(),
            dc: inv.datacenters[host.dc].name.clone(),
            rack: inv.racks[host.rack].name.clone(),
            conn,
            command,
            torrent: torrent.clone(),
            torrent_file,
            binary: binary.clone(),
            agent_path,
            installs: installs.clone(),
            install_timeout,
            withdraw: side.withdraw.clone(),
            events: events.clone(),
            cancel: cancel.clone(),
        };
        jobs.spawn(job.run());
    }
    let mut reports = Vec::new();
    while let Some(r) = jobs.join_next().await {
        reports.push(r.context("an agent job panicked")?);
    }
    drop(events);
    progress.finish().await;
    for (h, e) in failed {
        let host = &inv.hosts[h];
        reports.push(HostReport {
            host: host.name.clone(),
            dc: inv.datacenters[host.dc].name.clone(),
            rack: inv.racks[host.rack].name.clone(),
            ok: false,
            seconds: 0.0,
            bytes_from_origin: 0,
            bytes_from_peers: 0,
            bytes_reused: 0,
            fed_by: BTreeMap::new(),
            listen: None,
            fetched_from: BTreeMap::new(),
            bootstrap: None,
            stage: Some(e.stage),
            error: Some(format!("{}: {}", e.stage, e.message)),
        });
    }
    reports.sort_by(|a, b| a.host.cmp(&b.host));
    name_feeders(&mut reports, &side.origin);
    tracing::info!(elapsed = ?started.elapsed(), "every host reported");
    side.cancel.cancel();
    let origin_uploaded = side
        .task
        .await
        .context("the origin seeder panicked")?
        .context("the origin seeder failed")?;
    tracing::info!(elapsed = ?started.elapsed(), "origin stopped");
    Ok(Report {
        version: version.to_string(),
        info_hash: m.info_hash_hex(),
        artifact_bytes: m.total_length(),
        origin_uploaded_bytes: origin_uploaded,
        seconds: started.elapsed().as_secs_f64(),
        hosts: reports,
    })
}

/// Names each host's feeders: the agents report bytes per peer address, and every
/// agent reports the address it listened on.
fn name_feeders(reports: &mut [HostReport], origin: &str) {
    let mut names: HashMap<String, String> = reports
        .iter()
        .filter_map(|r| Some((r.listen.clone()?, r.host.clone())))
        .collect();
    names.insert(origin.to_string(), "origin".into());
    for r in reports.iter_mut() {
        r.fed_by = r
            .fetched_from
            .iter()
            .map(|(a, b)| (names.get(a).cloned().unwrap_or_else(|| a.clone()), *b))
            .collect();
    }
}

/// One host's fetch (step 4 of [`orchestrate`]), with everything it needs owned.
struct HostJob<C> {
    name: String,
    dc: String,
    rack: String,
    conn: Arc<C>,
    /// [`fetch_command`] for this host.
    command: String,
    torrent: Arc<Vec<u8>>,
    /// Where the command saves the metainfo on the host.
    torrent_file: String,
    /// This build, when hosts need it installed (SSH).
    binary: Option<Binary>,
    agent_path: String,
    /// Installs of the binary in flight at once: `--forks`.
    installs: Arc<tokio::sync::Semaphore>,
    install_timeout: Option<std::time::Duration>,
    withdraw: Option<Tracker>,
    events: progress::Sender,
    cancel: CancellationToken,
}

impl<C: Connection> HostJob<C> {
    /// Runs the fetch command, installs the binary and runs it again if the host
    /// lacks this build, and reports.
    async fn run(self) -> HostReport {
        let HostJob {
            name,
            dc,
            rack,
            conn,
            command,
            torrent,
            torrent_file,
            binary,
            agent_path,
            installs,
            install_timeout,
            withdraw,
            events,
            cancel,
        } = self;
        let mut rep = HostReport {
            host: name.clone(),
            dc,
            rack,
            ok: false,
            seconds: 0.0,
            bytes_from_origin: 0,
            bytes_from_peers: 0,
            bytes_reused: 0,
            fed_by: BTreeMap::new(),
            listen: None,
            fetched_from: BTreeMap::new(),
            bootstrap: binary.as_ref().map(|_| Outcome::Present),
            stage: None,
            error: None,
        };
        let t0 = Instant::now();
        let mut result: Option<serde_json::Value> = None;
        let mut metainfo_failed;
        let finished = loop {
            events.stage(&name, "fetch");
            let mut needs_binary = false;
            metainfo_failed = false;
            let finished = {
                let events = events.clone();
                let name = name.clone();
                let mut on_line = |l: &str| {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                        return;
                    };
                    match v["event"].as_str() {
                        Some("progress") => events.send(Event::Bytes {
                            host: name.clone(),
                            bytes: v["bytes"].as_u64().unwrap_or(0),
                        }),
                        Some("result") => result = Some(v),
                        Some(bootstrap::NEEDS_BINARY) => needs_binary = true,
                        Some(METAINFO_FAILED) => metainfo_failed = true,
                        _ => {}
                    }
                };
                conn.exec_with_input(&command, Some(&torrent), &mut on_line, &cancel)
                    .await
            };
            let Some(bin) = binary.as_ref().filter(|_| needs_binary) else {
                break finished;
            };
            if rep.bootstrap == Some(Outcome::Uploaded) {
                break Err(std::io::Error::other(format!(
                    "{agent_path} still differs from this build after its upload"
                )));
            }
            events.stage(&name, "bootstrap");
            let permit = installs.acquire().await.expect("never closed");
            let install = bootstrap::install(conn.as_ref(), &name, &agent_path, bin, &cancel);
            let installed = bootstrap::within(install_timeout, &name, install).await;
            drop(permit);
            match installed {
                Ok(o) => rep.bootstrap = Some(o),
                Err(e) => {
                    rep.stage = Some(e.stage);
                    rep.error = Some(format!("{}: {}", e.stage, e.message));
                    break Ok(Finished::default());
                }
            }
        };
        rep.seconds = t0.elapsed().as_secs_f64();
        match (finished, result) {
            _ if rep.error.is_some() => {}
            (Ok(f), _) if metainfo_failed => {
                rep.stage = Some(Stage::Upload);
                rep.error = Some(format!(
                    "upload: metainfo to {torrent_file}: {}",
                    f.describe()
                ));
            }
            (Err(e), _) => {
                rep.stage = Some(Stage::Fetch);
                rep.error = Some(format!("fetch: {e}"));
            }
            (Ok(f), Some(v)) => {
                rep.ok = v["ok"] == true && f.success();
                rep.seconds = v["seconds"].as_f64().unwrap_or(rep.seconds);
                rep.bytes_from_origin = v["bytes_from_origin"].as_u64().unwrap_or(0);
                rep.bytes_from_peers = v["bytes_from_peers"].as_u64().unwrap_or(0);
                rep.bytes_reused = v["bytes_reused"].as_u64().unwrap_or(0);
                rep.listen = v["listen"].as_str().map(str::to_string);
                if let Some(m) = v["fetched_from"].as_object() {
                    rep.fetched_from = m
                        .iter()
                        .filter_map(|(a, b)| Some((a.clone(), b.as_u64()?)))
                        .collect();
                }
                if !rep.ok {
                    rep.stage = Some(Stage::Fetch);
                    rep.error = Some(match v["error"].as_str() {
                        Some(e) => format!("fetch: {e} ({})", f.describe()),
                        None => format!("fetch: {}", f.describe()),
                    });
                }
            }
            (Ok(f), None) => {
                rep.stage = Some(Stage::Fetch);
                rep.error = Some(format!(
                    "fetch: the agent reported nothing; {}",
                    f.describe()
                ));
            }
        }
        if !rep.ok
            && let Some(tracker) = &withdraw
        {
            tracker.withdraw(&name);
        }
        let summary = match &rep.error {
            None => format!("in {:.1}s", rep.seconds),
            Some(e) => e.clone(),
        };
        events.send(Event::Done {
            host: name,
            ok: rep.ok,
            summary,
        });
        rep
    }
}

/// Tracker and origin seeder in this process, on `ip`.
async fn local_origin(
    config: &Config,
    hosts: &[usize],
    m: &Metainfo,
    ip: IpAddr,
    cancel: &CancellationToken,
) -> anyhow::Result<OriginSide> {
    let dist = &config.playbook.distribution;
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .with_context(|| format!("starting the tracker on {ip}"))?;
    let tracker_addr = listener.local_addr()?;
    let roster = tracker::roster(&config.inventory, hosts, Some(ip));
    let settings = Settings {
        sharing: dist.sharing,
        stripes: dist.stripes,
        ..Settings::default()
    };
    let tracker = Tracker::new(roster, &[m.info_hash()], settings)
        .context("arranging the distribution trees")?;
    let side_cancel = cancel.child_token();
    let announce = format!("http://{tracker_addr}/announce");
    let origin_addr = SocketAddr::new(ip, free_port(ip)?);
    let origin_opts = engine::Options {
        listen: origin_addr,
        max_peers: dist.max_peers,
        upload_limit: dist.upload_limit.map(|r| r.0),
        download_limit: None,
        tracker: Some(format!("{announce}?host={}", tracker::CONTROLLER)),
        peers: Vec::new(),
        stripes: None,
    };
    let source = config.playbook.artifact.source.clone();
    let torrent = m.to_bytes();
    let c = side_cancel.clone();
    let withdraw = tracker.clone();
    let task = tokio::spawn(async move {
        let tracker_cancel = CancellationToken::new();
        let t = tracker_cancel.clone();
        let tracker_task = tokio::spawn(async move { tracker.serve(listener, t).await });
        let up = crate::agent::fetch::serve(&torrent, &source, &origin_opts, None, c, |_| {}).await;
        tracker_cancel.cancel();
        let _ = tracker_task.await;
        up
    });
    Ok(OriginSide {
        announce,
        origin: origin_addr.to_string(),
        cancel: side_cancel,
        task,
        withdraw: Some(withdraw),
    })
}

/// Where origin host `b` keeps the inventory and the metainfo for its tracker and
/// seeder.
fn origin_files(config: &Config, b: usize, exe: &str) -> (String, String, String) {
    let dir = host_state_dir(config, b, exe);
    let torrent = format!("{dir}/artifact.torrent");
    let inventory = format!("{dir}/inventory.yml");
    (dir, torrent, inventory)
}

/// What the metainfo command prints: the metainfo, hex-encoded.
const METAINFO_EVENT: &str = "metainfo";

/// Makes the metainfo on origin host `b` from its copy of the build and reads it back,
/// in one command (checking the rookery binary first, and saving the inventory sent on
/// its stdin for the tracker); a host without this build takes a second round trip
/// to install it.
async fn remote_metainfo<C: Connection>(
    config: &Config,
    b: usize,
    conn: &C,
    binary: Option<&Binary>,
    agent: &(dyn Fn(usize) -> String + Sync),
    cancel: &CancellationToken,
) -> anyhow::Result<(Metainfo, String)> {
    let inv = &config.inventory;
    let name = &inv.hosts[b].name;
    let art = &config.playbook.artifact;
    let source = &art.source_as_written;
    anyhow::ensure!(
        source.starts_with('/'),
        "`artifact.source` is `{source}`: with `origin: {name}` it is a path on {name} and must be absolute"
    );
    let exe = agent(b);
    let (dir, file, inv_file) = origin_files(config, b, &exe);
    let q = |a: &str| shell_quote(a);
    let mut create = vec![
        exe.clone(),
        "torrent".into(),
        "create".into(),
        source.clone(),
        "-o".into(),
        file.clone(),
    ];
    if let Some(ps) = config.playbook.distribution.piece_size {
        create.push("--piece-size".into());
        create.push(format!("{}B", ps.0));
    }
    let guard = binary
        .map(|bin| format!("{}; ", bootstrap::guard(&exe, bin)))
        .unwrap_or_default();
    let cmd = format!(
        "i={inv}; mkdir -p -- {dir} && cat > \"$i.tmp.$$\" && mv -f -- \"$i.tmp.$$\" \"$i\" || exit 1; \
         {guard}{create} || exit 1; \
         printf '{{\"event\":\"{METAINFO_EVENT}\",\"hex\":\"'; od -An -v -tx1 -- {file} | tr -d ' \\n'; printf '\"}}\\n'",
        inv = q(&inv_file),
        dir = q(&dir),
        create = create.iter().map(|a| q(a)).collect::<Vec<_>>().join(" "),
        file = q(&file),
    );
    let inv_text = std::fs::read(&inv.file).with_context(|| format!("reading {}", inv.file))?;
    let mut installed = false;
    let bytes = loop {
        let (mut needs_binary, mut hex) = (false, None);
        let f = conn
            .exec_with_input(
                &cmd,
                Some(&inv_text),
                &mut |l| {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                        match v["event"].as_str() {
                            Some(bootstrap::NEEDS_BINARY) => needs_binary = true,
                            Some(METAINFO_EVENT) => hex = v["hex"].as_str().map(String::from),
                            _ => {}
                        }
                    }
                },
                cancel,
            )
            .await
            .map_err(|e| {
                HostError::new(name, Stage::Command, format!("creating the metainfo: {e}"))
            })?;
        if let (true, Some(bin), false) = (needs_binary, binary, installed) {
            let install = bootstrap::install(conn, name, &exe, bin, cancel);
            bootstrap::within(config.inventory.transport.command_timeout(), name, install)
                .await
                .context("preparing the origin host")?;
            installed = true;
            continue;
        }
        match hex.as_deref().and_then(metainfo::unhex) {
            Some(bytes) if f.success() => break bytes,
            _ => {
                return Err(HostError::new(
                    name,
                    Stage::Command,
                    format!("creating the metainfo from {source}: {}", f.describe()),
                )
                .into());
            }
        }
    };
    let m = Metainfo::from_bytes(&bytes).with_context(|| format!("{name}: reading {file}"))?;
    let (version, _) = keep_metainfo(config, &m, &bytes, None)?;
    Ok((m, version))
}

/// Starts `rookery tracker` and `rookery agent seed` on origin host `b`. Both stop
/// when the side is cancelled: a signal, and their stdin closing.
#[allow(clippy::too_many_arguments)]
async fn remote_origin<C: Connection>(
    config: &Config,
    b: usize,
    conn: Arc<C>,
    agent: &(dyn Fn(usize) -> String + Sync),
    members: &[usize],
    cancel: &CancellationToken,
) -> anyhow::Result<OriginSide> {
    let inv = &config.inventory;
    let host = &inv.hosts[b];
    let name = host.name.clone();
    let dist = &config.playbook.distribution;
    let exe = agent(b);
    // Both written there by `remote_metainfo`, moments ago.
    let (_, torrent_file, inv_file) = origin_files(config, b, &exe);
    let ip: IpAddr = match host.address.parse() {
        Ok(ip) => ip,
        Err(_) => tokio::net::lookup_host((host.address.as_str(), 0))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip())
            .with_context(|| format!("resolving the origin host {name} ({})", host.address))?,
    };
    let q = |a: &str| shell_quote(a);
    let mut tracker_cmd = format!(
        "{} --json -i {} tracker --listen {} --torrent {} --sharing {} --stripes {} --until-stdin-closes",
        q(&exe),
        q(&inv_file),
        q(&SocketAddr::new(ip, 0).to_string()),
        q(&torrent_file),
        match dist.sharing {
            crate::config::playbook::Sharing::Pipeline => "pipeline",
            crate::config::playbook::Sharing::Mesh => "mesh",
            crate::config::playbook::Sharing::Stripes => "stripes",
        },
        dist.stripes
    );
    for &h in members {
        tracker_cmd.push_str(" --host ");
        tracker_cmd.push_str(&q(&inv.hosts[h].name));
    }
    let side_cancel = cancel.child_token();
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let tracker_conn = conn.clone();
    let tracker_cancel = CancellationToken::new();
    let tc = tracker_cancel.clone();
    let tracker_name = name.clone();
    let tracker_task = tokio::spawn(async move {
        let mut url_tx = Some(url_tx);
        let mut on_line = |l: &str| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && v["event"] == "listening"
                && let (Some(tx), Some(u)) = (url_tx.take(), v["announce"].as_str())
            {
                let _ = tx.send(u.to_string());
            }
        };
        let r = tracker_conn.exec(&tracker_cmd, &mut on_line, &tc).await;
        match r {
            Ok(f) if f.success() || tc.is_cancelled() => Ok(()),
            Ok(f) => Err(anyhow::anyhow!(
                "{tracker_name}: the tracker stopped: {}",
                f.describe()
            )),
            Err(e) => Err(anyhow::anyhow!("{tracker_name}: the tracker: {e}")),
        }
    });
    let announce = match tokio::time::timeout(std::time::Duration::from_secs(30), url_rx).await {
        Ok(Ok(u)) => u,
        _ => {
            tracker_cancel.cancel();
            let why = match tracker_task.await {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "it did not say where it listens within 30s".to_string(),
            };
            return Err(HostError::new(
                &name,
                Stage::Command,
                format!("starting the tracker: {why}"),
            )
            .into());
        }
    };
    let seed = SeedArgs {
        swarm: SwarmArgs {
            torrent: torrent_file.clone().into(),
            host: tracker::origin_name(&name),
            listen: Some(SocketAddr::new(ip, dist.port)),
            tracker: Some(format!("{announce}?host={}", tracker::origin_name(&name))),
            peers: Vec::new(),
            max_peers: Some(dist.max_peers),
            upload_limit: dist.upload_limit,
            download_limit: None,
            stripes: None,
        },
        source: config.playbook.artifact.source_as_written.clone().into(),
        duration: None,
        until_stdin_closes: true,
    };
    let seed_cmd = seed.command_line(&exe);
    let sc = side_cancel.clone();
    let seed_name = name.clone();
    let task = tokio::spawn(async move {
        let mut uploaded = 0u64;
        let mut on_line = |l: &str| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && let Some(u) = v["uploaded"].as_u64()
            {
                uploaded = uploaded.max(u);
            }
        };
        let r = conn.exec(&seed_cmd, &mut on_line, &sc).await;
        tracker_cancel.cancel();
        let tracker = tracker_task.await;
        let f = r.map_err(|e| anyhow::anyhow!("{seed_name}: the origin seeder: {e}"))?;
        if !f.success() && !sc.is_cancelled() {
            anyhow::bail!("{seed_name}: the origin seeder stopped: {}", f.describe());
        }
        if let Ok(Err(e)) = tracker {
            return Err(e);
        }
        Ok(uploaded)
    });
    Ok(OriginSide {
        announce,
        origin: ip.to_string(),
        cancel: side_cancel,
        task,
        withdraw: None,
    })
}

/// What host `h` is asked to fetch, and how.
fn fetch_request(
    config: &Config,
    h: usize,
    at: &Where,
    version: &str,
) -> anyhow::Result<FetchArgs> {
    let dist = &config.playbook.distribution;
    let stripes = dist.sharing == crate::config::playbook::Sharing::Stripes;
    let origin = match at.origin.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 0),
        Err(_) => at.origin.parse().context("the origin's address")?,
    };
    let fetch = FetchArgs {
        swarm: SwarmArgs {
            torrent: at.torrent.into(),
            host: config.inventory.hosts[h].name.clone(),
            listen: Some(at.listen),
            tracker: Some(at.tracker.clone()),
            peers: Vec::new(),
            max_peers: Some(dist.max_peers),
            upload_limit: dist.upload_limit,
            download_limit: dist.download_limit,
            stripes: stripes.then_some(dist.stripes),
        },
        destination: config.host_destination(h),
        version: version.to_string(),
        origin: Some(origin),
        seed_window: Some(dist.seed_window),
        seed_mode: Some(dist.seed_mode),
        seed_window_max: Some(dist.seed_window_max),
        stall_timeout: Some(dist.stall_timeout),
        drop_after_write: false,
        lock_current: Vec::new(),
        preload: false,
        foreground: false,
    };
    Ok(fetch.with_page_cache(&dist.page_cache))
}

/// Where a host's agent finds its swarm.
struct Where<'a> {
    torrent: &'a str,
    listen: SocketAddr,
    tracker: String,
    origin: &'a str,
}

pub fn render(r: &Report) -> String {
    // MiB, as the progress bars say.
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut s = format!(
        "version {} ({} MiB), origin uploaded {:.1} MiB = {:.2} copies, {:.1}s\n",
        r.version,
        mib(r.artifact_bytes).round(),
        mib(r.origin_uploaded_bytes),
        r.origin_uploaded_bytes as f64 / r.artifact_bytes.max(1) as f64,
        r.seconds
    );
    s.push_str(&format!(
        "{:<16} {:<8} {:<8} {:<7} {:>7} {:>8} {:>11} {:>11}\n",
        "HOST", "DC", "RACK", "RESULT", "TIME", "MiB/s", "FROM PEERS", "REUSED"
    ));
    for h in &r.hosts {
        let fetched = h.bytes_from_origin + h.bytes_from_peers;
        s.push_str(&format!(
            "{:<16} {:<8} {:<8} {:<7} {:>6.1}s {:>8.1} {:>8.1}MiB {:>8.1}MiB\n",
            h.host,
            h.dc,
            h.rack,
            if h.ok { "ok" } else { "FAILED" },
            h.seconds,
            mib(fetched) / h.seconds.max(0.001),
            mib(h.bytes_from_peers),
            mib(h.bytes_reused),
        ));
        if let Some(e) = &h.error {
            s.push_str(&format!("  {}: {e}\n", h.host));
        }
    }
    s
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
