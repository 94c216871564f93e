//! Host-side commands (`rookery agent ...`): flags to a [`Fetch`] or a seeder, the
//! fork into the background, and the exit status.

pub mod daemon;
pub mod fetch;
pub mod page_cache;
pub mod release;
pub mod supervisor;
pub mod switch;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;

use crate::agent::daemon::Side;
use crate::agent::fetch::Fetch;
use crate::cli::{FetchArgs, SwarmArgs};
use crate::config::playbook::SeedMode;
use crate::config::units::{Rate, parse_duration};
use crate::error::{Error, Exit};
use crate::shutdown;
use crate::torrent::engine;
use crate::torrent::metainfo::Metainfo;

fn usage(flag: &str, e: impl std::fmt::Display) -> anyhow::Error {
    Error::Usage(format!("{flag}: {e}")).into()
}

fn duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    parse_duration(text).map_err(|e| usage(flag, e))
}

fn rate(flag: &str, text: &str) -> anyhow::Result<Option<u64>> {
    if text == "unlimited" {
        return Ok(None);
    }
    Rate::parse(text)
        .map(|r| Some(r.0))
        .map_err(|e| usage(flag, e))
}

fn addr(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.parse()
        .map_err(|_| usage(flag, format!("`{text}` is not an IP:PORT address")))
}

/// How many ports past `--listen` an agent tries when the port is taken (a seeder
/// of the previous deploy may still hold it during its seed window).
const PORT_TRIES: u16 = 32;

/// The first port from `want` on that nothing listens on.
fn free_listen(want: SocketAddr) -> anyhow::Result<SocketAddr> {
    if want.port() == 0 {
        return Ok(want);
    }
    let mut last = None;
    for i in 0..PORT_TRIES {
        let Some(port) = want.port().checked_add(i) else {
            break;
        };
        let a = SocketAddr::new(want.ip(), port);
        match std::net::TcpListener::bind(a) {
            Ok(_) => return Ok(a),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "no free port in {}..{} on {}: {}",
        want.port(),
        want.port().saturating_add(PORT_TRIES - 1),
        want.ip(),
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Reads and checks the metainfo, and the engine options, before anything is written.
fn swarm(a: &SwarmArgs) -> anyhow::Result<(Vec<u8>, Metainfo, engine::Options)> {
    let torrent =
        std::fs::read(&a.torrent).with_context(|| format!("reading {}", a.torrent.display()))?;
    let metainfo = Metainfo::from_bytes(&torrent)
        .with_context(|| format!("refusing {}", a.torrent.display()))?;
    let opts = engine::Options {
        listen: free_listen(addr("--listen", &a.listen)?)?,
        max_peers: a.max_peers.max(1),
        upload_limit: rate("--upload-limit", &a.upload_limit)?,
        download_limit: rate("--download-limit", &a.download_limit)?,
        tracker: a.tracker.clone(),
        peers: a
            .peers
            .iter()
            .map(|p| addr("--peer", p))
            .collect::<anyhow::Result<_>>()?,
        stripes: match a.stripes {
            None => None,
            Some(
                k @ crate::config::playbook::MIN_STRIPES..=crate::config::playbook::MAX_STRIPES,
            ) => Some(k as u32),
            Some(k) => {
                return Err(usage(
                    "--stripes",
                    format!(
                        "{k}: from {} to {}",
                        crate::config::playbook::MIN_STRIPES,
                        crate::config::playbook::MAX_STRIPES
                    ),
                ));
            }
        },
    };
    Ok((torrent, metainfo, opts))
}

/// The engine reports each file not downloaded yet as an error while it checks a
/// fresh tree, once per file; with `RUST_BACKTRACE` set in the operator's
/// environment, anyhow captured a backtrace for each (about a second for 20,000
/// files). The agent never prints one. Call while the process has one thread.
fn lib_backtraces_off() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet to read the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

pub fn fetch(a: &FetchArgs) -> anyhow::Result<Exit> {
    lib_backtraces_off();
    let (torrent, metainfo, engine) = swarm(&a.swarm)?;
    let origin = match &a.origin {
        None => None,
        Some(text) => Some(match text.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 0),
            Err(_) => addr("--origin", text)?,
        }),
    };
    crate::config::inventory::check_name(&a.version).map_err(|e| usage("--version", e))?;
    let f = Fetch {
        torrent,
        metainfo,
        destination: a.destination.clone(),
        version: a.version.clone(),
        host: a.swarm.host.clone(),
        engine,
        origin,
        seed_window: duration("--seed-window", &a.seed_window)?,
        seed_mode: match a.seed_mode.as_str() {
            "fixed" => SeedMode::Fixed,
            "adaptive" => SeedMode::Adaptive,
            other => {
                return Err(usage(
                    "--seed-mode",
                    format!("`{other}`: use fixed or adaptive"),
                ));
            }
        },
        seed_window_max: duration("--seed-window-max", &a.seed_window_max)?,
        stall_timeout: duration("--stall-timeout", &a.stall_timeout)?,
        page_cache: crate::config::playbook::PageCache {
            drop_after_write: a.drop_after_write,
            lock_current: a.lock_current.clone(),
            preload: a.preload,
        },
    };
    if a.foreground {
        let rt = shutdown::engine_runtime()?;
        let ok = rt.block_on(async {
            let cancel = shutdown::install();
            fetch::run(f, Box::new(std::io::stdout()), cancel).await
        });
        return Ok(if ok { Exit::Ok } else { Exit::Failed });
    }
    let log = crate::agent::release::Layout::new(&a.destination)
        .logs()
        .join(format!("fetch-{}.log", a.version));
    match daemon::fork_with_pipe(&log)
        .with_context(|| format!("starting the background agent (log {})", log.display()))?
    {
        Side::Parent { ok: true, .. } => Ok(Exit::Ok),
        Side::Parent {
            saw_result: true, ..
        } => {
            // The reason is in the result line; this names the log for the operator.
            eprintln!("error: the fetch failed; log: {}", log.display());
            Ok(Exit::Failed)
        }
        Side::Parent { .. } => anyhow::bail!(
            "the agent stopped before reporting a result; see {}",
            log.display()
        ),
        Side::Child(pipe) => {
            // stderr is the fetch log now: progress and peers, one line a second.
            shutdown::init_logging_or("rookery=info");
            let rt = shutdown::engine_runtime()?;
            let ok = rt.block_on(async {
                let cancel = shutdown::install();
                fetch::run(f, Box::new(pipe), cancel).await
            });
            // Seeding is over: leave without running anything else.
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

pub fn seed(
    a: &SwarmArgs,
    source: &std::path::Path,
    for_: Option<&str>,
    until_stdin_closes: bool,
) -> anyhow::Result<Exit> {
    let (torrent, _metainfo, engine) = swarm(a)?;
    let duration = for_.map(|d| duration("--for", d)).transpose()?;
    let rt = shutdown::engine_runtime()?;
    let uploaded = rt.block_on(async {
        let cancel = shutdown::install();
        if until_stdin_closes {
            shutdown::cancel_on_stdin_eof(cancel.clone());
        }
        fetch::serve(&torrent, source, &engine, duration, cancel, |up| {
            println!(
                "{}",
                serde_json::json!({"event": "seeding", "uploaded": up})
            );
        })
        .await
    })?;
    println!(
        "{}",
        serde_json::json!({"event": "seeded", "uploaded": uploaded})
    );
    Ok(Exit::Ok)
}

/// `rookery agent run`: supervise one service instance (see [`crate::agent::supervisor`]).
pub fn run_service(a: &crate::cli::RunServiceArgs) -> anyhow::Result<Exit> {
    use crate::agent::supervisor::{self, Supervise};
    // `agent switch` ignores SIGHUP so that it finishes; the service must not
    // inherit that. SAFETY: no thread has been started yet.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_DFL) };
    let location = crate::coordination::store::Location::from_args(&a.store)?;
    let dest = a.release.join("..").join("..");
    let s = Supervise {
        service: a.service.clone(),
        host: a.host.clone(),
        version: a.version.clone(),
        release: a.release.clone(),
        command: a.command.clone(),
        health: a.health.health.clone(),
        interval: duration("--health-interval", &a.health.health_interval)?,
        health_deadline: duration("--health-deadline", &a.health.health_deadline)?,
        run_file: Some(a.run_file.clone().unwrap_or_else(|| {
            dest.join(".rookery")
                .join("run")
                .join(format!("{}.json", a.service))
        })),
    };
    let out: Box<dyn std::io::Write + Send> = if a.detach {
        let log = a
            .log
            .clone()
            .unwrap_or_else(|| dest.join(".rookery").join(format!("{}.log", a.service)));
        match daemon::fork_with_pipe(&log)
            .with_context(|| format!("starting the supervisor (log {})", log.display()))?
        {
            Side::Parent { ok: true, .. } => return Ok(Exit::Ok),
            Side::Parent { .. } => {
                eprintln!("error: {} did not start; log: {}", a.service, log.display());
                return Ok(Exit::Failed);
            }
            Side::Child(pipe) => Box::new(pipe),
        }
    } else {
        Box::new(std::io::stdout())
    };
    let rt = shutdown::runtime()?;
    let code = rt.block_on(async {
        let cancel = shutdown::install();
        supervisor::run(&location, &a.store.cluster, &s, out, cancel).await
    })?;
    if a.detach {
        std::process::exit(code);
    }
    Ok(if code == 0 { Exit::Ok } else { Exit::Failed })
}
