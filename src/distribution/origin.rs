//! The origin: the tracker and the seeder in this process, or on an inventory host
//! (`origin: HOST`) started over its connection, with the metainfo made there.

use super::*;

pub(super) fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The tracker and origin seeder, wherever they run.
pub(super) struct OriginSide {
    /// `http://ADDR/announce`
    pub(super) announce: String,
    /// The origin's address, to tell its bytes from the hosts'.
    pub(super) origin: String,
    pub(super) cancel: CancellationToken,
    pub(super) task: tokio::task::JoinHandle<anyhow::Result<u64>>,
    /// The tracker, when it runs in this process: hosts whose agent fails are
    /// withdrawn from it. (A tracker on the origin host instead lets their
    /// successors wait out the start-up grace, a few seconds.)
    pub(super) withdraw: Option<Tracker>,
    /// The tracker on the origin host instead: hosts whose agent fails are named to
    /// it through the file it follows (`rookery tracker --withdrawn`).
    pub(super) tell_withdrawn: Option<Withdrawer>,
}

/// Names a failed host to a tracker on the origin host.
pub(super) type Withdrawer =
    Arc<dyn Fn(String) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// A [`Withdrawer`] that appends the name to `file` on the origin host, over `conn`.
/// Best effort, bounded by five seconds: a name that does not get there only costs
/// its successors the start-up grace.
fn withdrawer<C: Connection>(conn: Arc<C>, file: String) -> Withdrawer {
    Arc::new(move |name: String| {
        let conn = conn.clone();
        let cmd = format!(
            "printf '%s\\n' {} >> {}",
            shell_quote(&name),
            shell_quote(&file)
        );
        Box::pin(async move {
            let never = CancellationToken::new();
            let mut ignore = |_: &str| {};
            let told = conn.exec(&cmd, &mut ignore, &never);
            match tokio::time::timeout(std::time::Duration::from_secs(5), told).await {
                Ok(Ok(f)) if f.success() => {}
                other => {
                    tracing::warn!(host = %name, "could not tell the origin's tracker: {other:?}")
                }
            }
        })
    })
}

/// Tracker and origin seeder in this process, on `ip`.
pub(super) async fn local_origin(
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
        in_step: in_step(dist),
        // The metainfo was made from these files a moment ago, in this process.
        verified: Some(engine::bitfield(m.piece_count(), |_| true)),
    };
    let source = config.playbook.artifact.source.clone();
    let torrent = m.to_bytes();
    let c = side_cancel.clone();
    let withdraw = tracker.clone();
    let task = tokio::spawn(async move {
        let tracker_cancel = CancellationToken::new();
        let t = tracker_cancel.clone();
        let tracker_task = tokio::spawn(async move { tracker.serve(listener, t).await });
        let up = crate::agent::seed::serve(&torrent, &source, &origin_opts, None, c, |_| {}).await;
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
        tell_withdrawn: None,
    })
}

/// How far apart the origin's uploads may get: for striped trees, a few pieces per
/// stripe ([`crate::torrent::in_step`]); the chain's origin feeds one host.
fn in_step(dist: &crate::config::playbook::Distribution) -> Option<u32> {
    (dist.sharing == Sharing::Stripes)
        .then(|| crate::torrent::in_step::WINDOW_PER_STRIPE * dist.stripes as u32)
}

/// Where origin host `b` keeps the inventory and the metainfo for its tracker and
/// seeder.
pub(super) fn origin_files(config: &Config, b: usize, exe: &str) -> (String, String, String) {
    let dir = host_state_dir(config, b, exe);
    // One per playbook: two playbooks with the same origin host keep their own
    // metainfo, hashes (`.stats.json`) and withdrawn hosts (`.withdrawn`).
    let torrent = format!("{dir}/{}.torrent", config.playbook.name);
    let inventory = format!("{dir}/inventory.yml");
    (dir, torrent, inventory)
}

/// What the metainfo command prints: the metainfo, hex-encoded.
pub(super) const METAINFO_EVENT: &str = "metainfo";

/// Makes the metainfo on origin host `b` from its copy of the build and reads it back,
/// in one command (checking the rookery binary first, and saving the inventory sent on
/// its stdin for the tracker); a host without this build takes a second round trip
/// to install it.
pub(super) async fn remote_metainfo<C: Connection>(
    config: &Config,
    b: usize,
    conn: &C,
    binary: Option<&Binary>,
    agent: &(dyn Fn(usize) -> String + Sync),
    cancel: &CancellationToken,
) -> anyhow::Result<(Metainfo, String)> {
    let inv = &config.inventory;
    let name = &inv.hosts[b].name;
    let source = &config.playbook.artifact.source_as_written;
    anyhow::ensure!(
        source.starts_with('/'),
        "`artifact.source` is `{source}`: with `origin: {name}` it is a path on {name} and must be absolute"
    );
    let exe = agent(b);
    let (cmd, file) = metainfo_command(config, b, &exe, binary);
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

/// The one command that makes the metainfo on origin host `b` with its agent binary
/// `exe`: it saves the inventory read on stdin, checks the binary (with `binary`),
/// runs `torrent create` and prints the metainfo as a hex event. Returns it and the
/// metainfo's path there.
fn metainfo_command(
    config: &Config,
    b: usize,
    exe: &str,
    binary: Option<&Binary>,
) -> (String, String) {
    let source = &config.playbook.artifact.source_as_written;
    let (dir, file, inv_file) = origin_files(config, b, exe);
    let q = |a: &str| shell_quote(a);
    let mut create = vec![
        exe.to_string(),
        "torrent".into(),
        "create".into(),
        source.clone(),
        "-o".into(),
        file.clone(),
        // Laid out after the last metainfo made there, reusing the hashes of the
        // files unchanged since (kept beside it as `FILE.stats.json`).
        "--reuse".into(),
    ];
    if let Some(ps) = config.playbook.distribution.piece_size {
        create.push("--piece-size".into());
        create.push(format!("{}B", ps.0));
    }
    let guard = binary
        .map(|bin| format!("{}; ", bootstrap::guard(exe, bin)))
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
    (cmd, file)
}

/// Starts `rookery tracker` and `rookery agent seed` on origin host `b`. Both stop
/// when the side is cancelled: a signal, and their stdin closing.
pub(super) async fn remote_origin<C: Connection>(
    config: &Config,
    b: usize,
    conn: Arc<C>,
    agent: &(dyn Fn(usize) -> String + Sync),
    members: &[usize],
    cancel: &CancellationToken,
) -> anyhow::Result<OriginSide> {
    let host = &config.inventory.hosts[b];
    let name = host.name.clone();
    let exe = agent(b);
    // Both written there by `remote_metainfo`, moments ago.
    let (_, torrent_file, inv_file) = origin_files(config, b, &exe);
    let ip = host_ip(host).await?;
    let withdrawn = format!("{torrent_file}.withdrawn");
    let at = TrackerAt {
        torrent_file: &torrent_file,
        withdrawn: &withdrawn,
        ip,
    };
    // A file left by an earlier run of this version would withdraw its failed hosts.
    let tracker_cmd = format!(
        ": > {} && {}",
        shell_quote(&withdrawn),
        tracker_command(config, &exe, inv_file, &at, members)?
    );
    let side_cancel = cancel.child_token();
    let tracker_cancel = CancellationToken::new();
    let (announce, tracker_task) =
        start_tracker(conn.clone(), tracker_cmd, &name, &tracker_cancel).await?;
    let seed_cmd = seed_args(config, &name, torrent_file, ip, &announce).command_line(&exe);
    let conn_for_withdraw = conn.clone();
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
        tell_withdrawn: Some(withdrawer(conn_for_withdraw, withdrawn)),
    })
}

/// The origin host's address: as written when it is an IP address, else resolved.
async fn host_ip(host: &inventory::Host) -> anyhow::Result<IpAddr> {
    Ok(match host.address.parse() {
        Ok(ip) => ip,
        Err(_) => tokio::net::lookup_host((host.address.as_str(), 0))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip())
            .with_context(|| {
                format!("resolving the origin host {} ({})", host.name, host.address)
            })?,
    })
}

/// Where the tracker on the origin host listens and what it reads there.
struct TrackerAt<'a> {
    torrent_file: &'a str,
    /// The file of withdrawn hosts it follows.
    withdrawn: &'a str,
    ip: IpAddr,
}

/// The `rookery tracker` command for the origin host (agent binary `exe`): it
/// listens on `at.ip`, serves `at.torrent_file` to `members`, withdraws the hosts
/// named in `at.withdrawn`, and stops when its stdin closes.
fn tracker_command(
    config: &Config,
    exe: &str,
    inv_file: String,
    at: &TrackerAt,
    members: &[usize],
) -> anyhow::Result<String> {
    let inv = &config.inventory;
    let dist = &config.playbook.distribution;
    let tracker_args = crate::cli::TrackerArgs {
        listen: SocketAddr::new(at.ip, 0).to_string(),
        torrent: vec![at.torrent_file.into()],
        sharing: dist.sharing.name().to_string(),
        stripes: dist.stripes,
        interval: crate::cli::TrackerArgs::DEFAULT_INTERVAL.to_string(),
        host: members.iter().map(|&h| inv.hosts[h].name.clone()).collect(),
        until_stdin_closes: true,
        withdrawn: Some(at.withdrawn.into()),
        inventory: Default::default(),
        out: Default::default(),
    };
    let mut argv = vec![
        exe.to_string(),
        "--json".into(),
        "-i".into(),
        inv_file,
        "tracker".into(),
    ];
    argv.extend(crate::agent::request::to_args(&tracker_args));
    let tracker_cmd: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    Ok(tracker_cmd.join(" "))
}

/// What `rookery agent seed` on origin host `name` is asked: seed `torrent_file`
/// from the artifact's source, on `ip` at the playbook's port, announcing to
/// `announce`, until its stdin closes.
fn seed_args(
    config: &Config,
    name: &str,
    torrent_file: String,
    ip: IpAddr,
    announce: &str,
) -> SeedArgs {
    let dist = &config.playbook.distribution;
    SeedArgs {
        swarm: SwarmArgs {
            torrent: torrent_file.into(),
            host: tracker::origin_name(name),
            listen: Some(SocketAddr::new(ip, dist.port)),
            tracker: Some(format!("{announce}?host={}", tracker::origin_name(name))),
            peers: Vec::new(),
            max_peers: Some(dist.max_peers),
            upload_limit: dist.upload_limit,
            download_limit: None,
            stripes: None,
        },
        source: config.playbook.artifact.source_as_written.clone().into(),
        duration: None,
        until_stdin_closes: true,
        in_step: in_step(dist),
        verified: true,
    }
}

/// Starts `rookery tracker` on the origin host over `conn`; returns the announce
/// URL it says it listens at, and its task (which ends when `cancel` fires).
async fn start_tracker<C: Connection>(
    conn: Arc<C>,
    command: String,
    name: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
    let tc = cancel.clone();
    let tracker_name = name.to_string();
    let task = tokio::spawn(async move {
        let mut url_tx = Some(url_tx);
        let mut on_line = |l: &str| {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && v["event"] == "listening"
                && let (Some(tx), Some(u)) = (url_tx.take(), v["announce"].as_str())
            {
                let _ = tx.send(u.to_string());
            }
        };
        let r = conn.exec(&command, &mut on_line, &tc).await;
        match r {
            Ok(f) if f.success() || tc.is_cancelled() => Ok(()),
            Ok(f) => Err(anyhow::anyhow!(
                "{tracker_name}: the tracker stopped: {}",
                f.describe()
            )),
            Err(e) => Err(anyhow::anyhow!("{tracker_name}: the tracker: {e}")),
        }
    });
    match tokio::time::timeout(std::time::Duration::from_secs(30), url_rx).await {
        Ok(Ok(u)) => Ok((u, task)),
        _ => {
            cancel.cancel();
            let why = match task.await {
                Ok(Err(e)) => format!("{e:#}"),
                _ => "it did not say where it listens within 30s".to_string(),
            };
            Err(HostError::new(name, Stage::Command, format!("starting the tracker: {why}")).into())
        }
    }
}
