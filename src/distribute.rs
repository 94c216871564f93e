//! `rookery distribute`: the controller's side of a distribution.
//!
//! Write the metainfo for the artifact, start the tracker and the origin seeder in
//! this process, start `rookery agent fetch` on every target host at once, collect
//! their result lines, stop the origin, and report. The report's byte counts come
//! from librqbit's counters (the origin's upload, each agent's per-peer downloads),
//! never from arithmetic on assumptions.
//!
//! This build reaches hosts through the local transport only (the embedded default:
//! each host a directory on this machine, each agent a child process); SSH is the
//! next step and will plug in where `spawn_agent` is.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine;
use crate::error::{Error, Exit};
use crate::inventory::{Origin, Transport};
use crate::metainfo::{self, Metainfo};
use crate::playbook::{SeedMode, Version};
use crate::tracker::{self, Settings, Tracker};

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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Where the controller keeps metainfo files between runs.
fn state_dir(config: &Config) -> PathBuf {
    match &config.inventory.transport {
        Transport::Local { root } => root.join(".controller"),
        Transport::Ssh => {
            std::env::temp_dir().join(format!("rookery-{}", config.inventory.cluster))
        }
    }
}

/// The directory a local host's `destination` maps to.
pub fn host_destination(config: &Config, host: usize) -> PathBuf {
    let dest = config.playbook.artifact.destination.trim_start_matches('/');
    match &config.inventory.hosts[host].root {
        Some(root) => root.join(dest),
        None => PathBuf::from("/").join(dest),
    }
}

/// Builds (or reuses) the metainfo of the artifact; returns it with its version.
pub fn prepare(config: &Config) -> anyhow::Result<(Metainfo, String, PathBuf)> {
    let art = &config.playbook.artifact;
    let opts = metainfo::CreateOptions {
        piece_size: config.playbook.distribution.piece_size.map(|s| s.0),
        announce: None,
        name: None,
    };
    let m = metainfo::create(&art.source, &opts)
        .with_context(|| format!("creating metainfo for {}", art.source.display()))?;
    let version = match &art.version {
        Version::ContentHash => m.content_version(),
        Version::Label(l) => l.clone(),
    };
    let dir = state_dir(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{version}.torrent"));
    std::fs::write(&file, m.to_bytes()).with_context(|| format!("writing {}", file.display()))?;
    Ok((m, version, file))
}

pub fn run(config: &Config, hosts: &[usize], json: bool, quiet: bool) -> anyhow::Result<Exit> {
    if !matches!(config.inventory.transport, Transport::Local { .. }) {
        return Err(Error::NotBuilt {
            command: "distribute",
            missing: "the SSH transport is not implemented (use `transport: local`)",
        }
        .into());
    }
    if let Origin::Host(_) = config.inventory.origin {
        return Err(Error::NotBuilt {
            command: "distribute",
            missing: "an inventory host as origin needs the SSH transport",
        }
        .into());
    }
    let (m, version, torrent_file) = prepare(config)?;
    let rt = crate::shutdown::runtime()?;
    let report = rt.block_on(async {
        let cancel = crate::shutdown::install();
        orchestrate(
            config,
            hosts,
            &m,
            &version,
            &torrent_file,
            quiet && !json,
            cancel,
        )
        .await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !quiet {
        print!("{}", render(&report));
    }
    Ok(if report.hosts.iter().all(|h| h.ok) {
        Exit::Ok
    } else {
        Exit::HostsFailed
    })
}

async fn orchestrate(
    config: &Config,
    hosts: &[usize],
    m: &Metainfo,
    version: &str,
    torrent_file: &Path,
    quiet: bool,
    cancel: CancellationToken,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let inv = &config.inventory;
    let dist = &config.playbook.distribution;
    let torrent = m.to_bytes();

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("starting the tracker")?;
    let tracker_addr = listener.local_addr()?;
    let roster = tracker::roster(inv, hosts, Some(Ipv4Addr::LOCALHOST.into()));
    let settings = Settings {
        sharing: dist.sharing,
        ..Settings::default()
    };
    let tracker = Tracker::new(roster, &[m.info_hash()], settings);
    let tracker_cancel = cancel.child_token();
    let tracker_task = tokio::spawn({
        let c = tracker_cancel.clone();
        async move { tracker.serve(listener, c).await }
    });
    let announce = |host: &str| format!("http://{tracker_addr}/announce?host={host}");

    let origin_addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()?);
    let origin_opts = engine::Options {
        listen: origin_addr,
        max_peers: dist.max_peers,
        upload_limit: dist.upload_limit.map(|r| r.0),
        download_limit: None,
        tracker: Some(announce(tracker::CONTROLLER)),
        peers: Vec::new(),
    };
    let origin_cancel = cancel.child_token();
    let source = config.playbook.artifact.source.clone();
    let origin_task = tokio::spawn({
        let c = origin_cancel.clone();
        let torrent = torrent.clone();
        async move { crate::fetch::serve(&torrent, &source, &origin_opts, None, c, |_| {}).await }
    });

    let exe = std::env::current_exe().context("finding the rookery binary")?;
    let mut jobs = tokio::task::JoinSet::new();
    for &h in hosts {
        let host = &inv.hosts[h];
        let mut argv: Vec<String> = vec![
            "agent".into(),
            "fetch".into(),
            "--torrent".into(),
            torrent_file.display().to_string(),
            "--host".into(),
            host.name.clone(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--tracker".into(),
            announce(&host.name),
            "--origin".into(),
            origin_addr.to_string(),
            "--destination".into(),
            host_destination(config, h).display().to_string(),
            "--version".into(),
            version.to_string(),
            "--max-peers".into(),
            dist.max_peers.to_string(),
            "--seed-window".into(),
            crate::units::format_duration(dist.seed_window),
            "--seed-mode".into(),
            match dist.seed_mode {
                SeedMode::Fixed => "fixed".into(),
                SeedMode::Adaptive => "adaptive".into(),
            },
            "--seed-window-max".into(),
            crate::units::format_duration(dist.seed_window_max),
            "--stall-timeout".into(),
            crate::units::format_duration(dist.stall_timeout),
        ];
        for (flag, rate) in [
            ("--upload-limit", dist.upload_limit),
            ("--download-limit", dist.download_limit),
        ] {
            argv.push(flag.into());
            argv.push(rate.map_or("unlimited".into(), |r| format!("{}B/s", r.0)));
        }
        let pc = &dist.page_cache;
        if pc.drop_after_write {
            argv.push("--drop-after-write".into());
        }
        if pc.preload {
            argv.push("--preload".into());
        }
        for g in &pc.lock_current {
            argv.push("--lock-current".into());
            argv.push(g.clone());
        }
        let name = host.name.clone();
        let dc = inv.datacenters[host.dc].name.clone();
        let rack = inv.racks[host.rack].name.clone();
        let exe = exe.clone();
        let cancel = cancel.clone();
        jobs.spawn(async move {
            let t0 = Instant::now();
            let r = spawn_agent(&exe, &argv, &cancel).await;
            let mut rep = HostReport {
                host: name,
                dc,
                rack,
                ok: false,
                seconds: t0.elapsed().as_secs_f64(),
                bytes_from_origin: 0,
                bytes_from_peers: 0,
                bytes_reused: 0,
                error: None,
            };
            match r {
                Ok(v) => {
                    rep.ok = v["ok"] == true;
                    rep.seconds = v["seconds"].as_f64().unwrap_or(rep.seconds);
                    rep.bytes_from_origin = v["bytes_from_origin"].as_u64().unwrap_or(0);
                    rep.bytes_from_peers = v["bytes_from_peers"].as_u64().unwrap_or(0);
                    rep.bytes_reused = v["bytes_reused"].as_u64().unwrap_or(0);
                    rep.error = v["error"].as_str().map(str::to_string);
                }
                Err(e) => rep.error = Some(format!("fetch: {e:#}")),
            }
            rep
        });
    }
    let mut reports = Vec::new();
    while let Some(r) = jobs.join_next().await {
        let r = r.context("an agent job panicked")?;
        if !quiet {
            let status = if r.ok { "ok" } else { "FAILED" };
            eprintln!("{:<16} {status} in {:.1}s", r.host, r.seconds);
        }
        reports.push(r);
    }
    reports.sort_by(|a, b| a.host.cmp(&b.host));
    origin_cancel.cancel();
    let origin_uploaded = origin_task
        .await
        .context("the origin seeder panicked")?
        .context("the origin seeder failed")?;
    tracker_cancel.cancel();
    let _ = tracker_task.await;
    Ok(Report {
        version: version.to_string(),
        info_hash: m.info_hash_hex(),
        artifact_bytes: m.total_length(),
        origin_uploaded_bytes: origin_uploaded,
        seconds: started.elapsed().as_secs_f64(),
        hosts: reports,
    })
}

/// Runs one agent (local transport) and returns its result line.
async fn spawn_agent(
    exe: &Path,
    argv: &[String],
    cancel: &CancellationToken,
) -> anyhow::Result<serde_json::Value> {
    let mut child = tokio::process::Command::new(exe)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the agent")?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut result = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => anyhow::bail!("interrupted"),
            line = lines.next_line() => match line? {
                Some(l) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l)
                        && v["event"] == "result"
                    {
                        result = Some(v);
                    }
                }
                None => break,
            },
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("the agent did not exit after reporting")??;
    match result {
        Some(v) => Ok(v),
        None => {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            anyhow::bail!(
                "exited with {} before reporting: {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )
        }
    }
}

fn render(r: &Report) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut s = format!(
        "version {} ({} MB), origin uploaded {:.1} MB = {:.2} copies, {:.1}s\n",
        r.version,
        mb(r.artifact_bytes).round(),
        mb(r.origin_uploaded_bytes),
        r.origin_uploaded_bytes as f64 / r.artifact_bytes.max(1) as f64,
        r.seconds
    );
    s.push_str(&format!(
        "{:<16} {:<8} {:<8} {:<7} {:>7} {:>8} {:>11} {:>11}\n",
        "HOST", "DC", "RACK", "RESULT", "TIME", "MB/s", "FROM PEERS", "REUSED"
    ));
    for h in &r.hosts {
        let fetched = h.bytes_from_origin + h.bytes_from_peers;
        s.push_str(&format!(
            "{:<16} {:<8} {:<8} {:<7} {:>6.1}s {:>8.1} {:>9.1}MB {:>9.1}MB\n",
            h.host,
            h.dc,
            h.rack,
            if h.ok { "ok" } else { "FAILED" },
            h.seconds,
            mb(fetched) / h.seconds.max(0.001),
            mb(h.bytes_from_peers),
            mb(h.bytes_reused),
        ));
        if let Some(e) = &h.error {
            s.push_str(&format!("  {}: {e}\n", h.host));
        }
    }
    s
}
