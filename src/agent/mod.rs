//! Host-side commands (`rookery agent ...`): flags to a [`Fetch`] or a seeder, the
//! fork into the background, and the exit status.
//!
//! The parts: `request` (the typed requests the controller sends), `fetch` (a host's
//! copy, then seeding), `seed` (an origin serving its tree), `release` (release directories), `page_cache` (hot sets and
//! dropped pages), `switch` (one service onto one release), `supervisor` (`agent run`,
//! which keeps a service and its hot set), `boot` (`agent start`), `daemon` (the fork).

mod boot;
mod daemon;
pub mod fetch;
mod page_cache;
mod release;
pub mod request;
pub mod seed;
mod supervisor;
pub mod switch;

use std::net::SocketAddr;

use anyhow::Context;

use crate::agent::daemon::Side;
use crate::agent::fetch::Fetch;
use crate::agent::request::{AgentCommand, FetchArgs, RunServiceArgs, SeedArgs, SwarmArgs};
use crate::config::playbook::Distribution;
use crate::error::{Error, Exit};
use crate::shutdown;
use crate::torrent::engine;
use crate::torrent::metainfo::Metainfo;

/// Runs one `rookery agent` command.
pub fn run(command: &AgentCommand) -> anyhow::Result<Exit> {
    match command {
        AgentCommand::Fetch(a) => fetch(a),
        AgentCommand::Seed(a) => seed(a),
        AgentCommand::Run(a) => run_service(a),
        AgentCommand::Switch(a) => {
            // A switch, once begun, runs to its end: a hang-up from a closing SSH
            // session (some servers send one) must not leave the host half-switched.
            // SAFETY: setting a signal disposition before any thread is started.
            unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
            let o = crate::agent::switch::run(a);
            // The controller may be gone (a second Ctrl-C closed the SSH session):
            // the switch is done either way, and the exit code still says how it went.
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&o)?);
            Ok(if o.ok { Exit::Ok } else { Exit::Failed })
        }
        AgentCommand::Start(a) => {
            let started =
                crate::agent::boot::start_all(a).map_err(|e| Error::Usage(e.to_string()))?;
            for s in &started {
                println!("{}", serde_json::to_string(s)?);
            }
            Ok(if started.iter().all(|s| s.ok) {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        AgentCommand::Releases(a) => {
            let r = crate::agent::switch::releases(&a.destination);
            println!("{}", serde_json::to_string(&r)?);
            Ok(Exit::Ok)
        }
        AgentCommand::Prune(a) => {
            let removed =
                crate::agent::switch::prune(&a.destination, a.keep, a.previous.as_deref());
            println!(
                "{}",
                serde_json::json!({"event": "pruned", "removed": removed})
            );
            Ok(Exit::Ok)
        }
    }
}

fn usage(flag: &str, e: impl std::fmt::Display) -> anyhow::Error {
    Error::Usage(format!("{flag}: {e}")).into()
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
    use crate::config::playbook::{MAX_STRIPES, MIN_STRIPES};
    let torrent =
        std::fs::read(&a.torrent).with_context(|| format!("reading {}", a.torrent.display()))?;
    let metainfo = Metainfo::from_bytes(&torrent)
        .with_context(|| format!("refusing {}", a.torrent.display()))?;
    let stripes = match a.stripes {
        None => None,
        Some(k @ MIN_STRIPES..=MAX_STRIPES) => Some(k as u32),
        Some(k) => {
            return Err(usage(
                "--stripes",
                format!("{k}: from {MIN_STRIPES} to {MAX_STRIPES}"),
            ));
        }
    };
    let opts = engine::Options {
        listen: free_listen(a.listen())?,
        max_peers: a.max_peers().max(1),
        upload_limit: a.upload_limit.map(|r| r.0),
        download_limit: a.download_limit.map(|r| r.0),
        tracker: a.tracker.clone(),
        peers: a.peers.clone(),
        stripes,
        in_step: None,
        verified: None,
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
    crate::config::inventory::check_name(&a.version).map_err(|e| usage("--version", e))?;
    let defaults = Distribution::default();
    let f = Fetch {
        torrent,
        metainfo,
        destination: a.destination.clone(),
        version: a.version.clone(),
        host: a.swarm.host.clone(),
        engine,
        origin: a.origin,
        seed_window: a.seed_window.unwrap_or(defaults.seed_window),
        seed_mode: a.seed_mode.unwrap_or(defaults.seed_mode),
        seed_window_max: a.seed_window_max.unwrap_or(defaults.seed_window_max),
        stall_timeout: a.stall_timeout.unwrap_or(defaults.stall_timeout),
        page_cache: a.page_cache(),
        after_fetch: a.after_fetch.clone(),
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

pub fn seed(a: &SeedArgs) -> anyhow::Result<Exit> {
    let (torrent, metainfo, mut engine) = swarm(&a.swarm)?;
    engine.in_step = a.in_step;
    engine.verified = a
        .verified
        .then(|| engine::bitfield(metainfo.piece_count(), |_| true));
    let (source, duration, until_stdin_closes) = (&a.source, a.duration, a.until_stdin_closes);
    let rt = shutdown::engine_runtime()?;
    let uploaded = rt.block_on(async {
        let cancel = shutdown::install();
        if until_stdin_closes {
            shutdown::cancel_on_stdin_eof(cancel.clone());
        }
        seed::serve(&torrent, source, &engine, duration, cancel, |up| {
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

/// `rookery agent run`: supervise one service instance (see `supervisor.rs`).
pub fn run_service(a: &RunServiceArgs) -> anyhow::Result<Exit> {
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
        interval: crate::config::units::parse_duration(&a.health.health_interval)
            .map_err(|e| usage("--health-interval", e))?,
        health_deadline: crate::config::units::parse_duration(&a.health.health_deadline)
            .map_err(|e| usage("--health-deadline", e))?,
        run_file: Some(a.run_file.clone().unwrap_or_else(|| {
            dest.join(".rookery")
                .join("run")
                .join(format!("{}.json", a.service))
        })),
        hot: crate::agent::page_cache::HotSetSpec {
            globs: a.lock.clone(),
            max: a
                .lock_max
                .unwrap_or(crate::agent::page_cache::DEFAULT_LOCK_MAX),
        },
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
