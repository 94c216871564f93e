//! `rookery agent run`: the supervisor a service is started under, and how its
//! liveness reaches the coordination store.
//!
//! It starts the service (in its own process group, in the release directory), runs
//! the health check every `--health-interval`, and creates the service's `current`
//! entry only once the check passes. After [`UNHEALTHY_AFTER`] failed checks in a row
//! the entry is removed (and created again when the service recovers); when the
//! service exits, the entry goes and the supervisor exits with the service's status.
//! The first SIGTERM or SIGINT is passed to the service's process group; if it has not
//! exited after [`STOP_GRACE`], it is killed. Because the entry is ephemeral (a
//! ZooKeeper node of the supervisor's session, or a flock of its process), a crashed
//! or killed supervisor takes it along: the rollout never counts a dead instance.
//!
//! With `--lock GLOB` (the playbook's `page_cache.lock_current`) it maps and locks the
//! release's hot set before it starts the service and holds it while the service
//! runs (`VmLck` in its `/proc/<pid>/status`). While it holds one it stays across switches:
//! `agent switch` leaves it a [`Handoff`] and signals it (SIGUSR1); it locks the new
//! release's hot set, stops the service (the stop command, then its process group),
//! points `current` at the new release, starts the service there, and only then
//! unlocks the old set; the switch reads the result from the reply file. A hot set
//! that cannot be locked (RLIMIT_MEMLOCK) is a warning: the service runs without it,
//! and the result's `note` says why.
//!
//! With `--detach` it forks first (like `agent fetch`): the command returns with one
//! result line once the service is healthy and registered, or has failed, and the
//! supervisor goes on in the background with its output in a log file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::agent::page_cache::{HotSet, HotSetSpec};
use crate::coordination::store::{Location, Store, StoreLive};
use crate::coordination::{Coordinator, Instance};

/// Failed checks in a row before a live instance is withdrawn.
pub const UNHEALTHY_AFTER: u32 = 3;
/// How long the service gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the health check runs until it first passes.
pub const FIRST_CHECKS: Duration = Duration::from_millis(100);
/// How long one health check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service that the stop command stopped gets to exit by itself.
const STOP_COMMAND_EXIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Supervise {
    pub service: String,
    pub host: String,
    pub version: String,
    pub release: PathBuf,
    /// One element: a shell command line (`sh -c`); more: argv.
    pub command: Vec<String>,
    pub health: Option<String>,
    pub interval: Duration,
    /// Give up when the service is not healthy this long after it started.
    pub health_deadline: Duration,
    /// Where to record the supervisor's and the service's pids while they run (what
    /// `agent switch` reads to stop this instance).
    pub run_file: Option<PathBuf>,
    /// The release's hot set, held locked while the service runs.
    pub hot: HotSetSpec,
}

/// What the run file says about a running instance.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunFile {
    pub supervisor: u32,
    pub service: u32,
    pub version: String,
    pub release: String,
    pub started: u64,
    /// The supervisor holds a hot set and takes a switch itself ([`Handoff`]).
    #[serde(default)]
    pub handoff: bool,
    /// Bytes of the release's hot set it holds locked.
    #[serde(default)]
    pub locked: u64,
}

impl RunFile {
    pub fn read(path: &Path) -> Option<RunFile> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// A switch that a running supervisor makes itself, so that it can lock the new
/// release's hot set before the restart and unlock the old one after. `agent switch`
/// writes it beside the run file (`run/<service>.handoff.json`) and sends SIGUSR1;
/// the supervisor answers in `run/<service>.reply.json` with its `result` line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    pub version: String,
    pub release: PathBuf,
    /// Where `current` is (`<destination>`), pointed at the release before the start.
    pub destination: PathBuf,
    pub command: Vec<String>,
    pub health: Option<String>,
    pub interval: String,
    pub health_deadline: String,
    pub hot: HotSetSpec,
    /// The graceful stop command of the release that runs now.
    pub stop: Option<String>,
}

impl Handoff {
    pub fn path(run_file: &Path) -> PathBuf {
        run_file.with_extension("handoff.json")
    }

    pub fn reply_path(run_file: &Path) -> PathBuf {
        run_file.with_extension("reply.json")
    }

    /// Reads the waiting handoff and removes it (taken once).
    fn take(run_file: &Path) -> Option<Handoff> {
        let path = Handoff::path(run_file);
        let text = std::fs::read(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        serde_json::from_slice(&text)
            .map_err(|e| eprintln!("rookery: ignoring {}: {e}", path.display()))
            .ok()
    }

    /// What the service runs under once the supervisor has taken it.
    fn apply(&self, s: &Supervise) -> Result<Supervise, BadHandoff> {
        let duration = |field: &'static str, text: &str| {
            crate::config::units::parse_duration(text)
                .map_err(|reason| BadHandoff { field, reason })
        };
        Ok(Supervise {
            version: self.version.clone(),
            release: self.release.clone(),
            command: self.command.clone(),
            health: self.health.clone(),
            interval: duration("interval", &self.interval)?,
            health_deadline: duration("health_deadline", &self.health_deadline)?,
            hot: self.hot.clone(),
            ..s.clone()
        })
    }
}

/// A handoff whose duration does not read: the switch is refused, the service runs on.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
struct BadHandoff {
    field: &'static str,
    #[source]
    reason: crate::config::diagnostic::Invalid,
}

/// Removes the run file when the supervisor ends, if it is still this one's.
struct RunFileGuard(Option<PathBuf>);

impl Drop for RunFileGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.0
            && RunFile::read(p).is_some_and(|r| r.supervisor == std::process::id())
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[derive(Debug, Serialize)]
struct Event<'a> {
    event: &'a str,
    ok: bool,
    service: &'a str,
    host: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// On success: what is not done yet (a registration the store has not taken, a
    /// hot set that could not be locked).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// Writes the one `result` line, then drops the output (a detached supervisor's
/// parent returns when it reads it; a switch that handed off reads the reply file).
struct Reporter {
    out: Option<Box<dyn Write + Send>>,
    s: Supervise,
    /// Said with a success: the hot set that could not be locked.
    warning: Option<String>,
}

impl Reporter {
    fn result(&mut self, ok: bool, pid: Option<u32>, error: Option<String>) {
        self.send(ok, pid, error, None);
    }

    /// Healthy, but not registered yet.
    fn pending(&mut self, pid: Option<u32>, note: String) {
        self.send(true, pid, None, Some(note));
    }

    fn send(&mut self, ok: bool, pid: Option<u32>, error: Option<String>, note: Option<String>) {
        let note = match (note, self.warning.take().filter(|_| ok)) {
            (Some(n), Some(w)) => Some(format!("{n}; {w}")),
            (n, w) => n.or(w),
        };
        if let Some(mut w) = self.out.take() {
            let e = Event {
                event: "result",
                ok,
                service: &self.s.service,
                host: &self.s.host,
                version: &self.s.version,
                pid,
                error,
                note,
            };
            let _ = writeln!(w, "{}", serde_json::to_string(&e).expect("serializable"));
            let _ = w.flush();
        }
    }
}

/// The reply to a handoff: the result line, written to its file in one piece when
/// flushed.
struct ReplyFile(PathBuf, Vec<u8>);

impl Write for ReplyFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        crate::os::write_atomically(&self.0, &self.1, 0o644)
    }
}

/// Locks the release's hot set, if it has one; a set that cannot be locked is a
/// warning (returned for the result's note), not a failure: the service runs.
fn lock_hot(release: &Path, spec: &HotSetSpec) -> (Option<HotSet>, Option<String>) {
    if spec.globs.is_empty() {
        return (None, None);
    }
    match HotSet::lock(release, spec) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("rookery: warning: {w}");
            }
            eprintln!(
                "rookery: locked {} bytes of {} in memory",
                set.bytes,
                release.display()
            );
            (Some(set), None)
        }
        Err(e) => {
            eprintln!("rookery: warning: {e}; the service runs without its hot set locked");
            (None, Some(format!("hot set not locked: {e}")))
        }
    }
}

/// Runs the service until it exits or `cancel` fires; returns its exit status.
/// Writes a `result` line to `out` once the instance is registered (or has failed),
/// then drops `out`.
pub async fn run(
    location: &Location,
    cluster: &str,
    s: &Supervise,
    out: Box<dyn Write + Send>,
    cancel: CancellationToken,
) -> anyhow::Result<i32> {
    // Listening before the run file announces that this supervisor takes handoffs:
    // SIGUSR1 would otherwise end the process.
    let handoffs = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let (hot, warning) = lock_hot(&s.release, &s.hot);
    let mut report = Reporter {
        out: Some(out),
        s: s.clone(),
        warning,
    };
    let child = match spawn(s) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("starting `{}`: {e}", s.command.join(" "));
            report.result(false, None, Some(msg.clone()));
            anyhow::bail!(msg);
        }
    };
    let pid = child.id();
    let _guard = RunFileGuard(s.run_file.clone());
    let locked = hot.as_ref().map(|h| h.bytes);
    if let Some(path) = &s.run_file {
        write_run_file(path, s, pid, locked)?;
    }
    // The store is opened beside the service, not before it: a server that does
    // not answer (frozen, or an ensemble without quorum) delays the registration,
    // never the start, and is tried again at each check.
    let store = open(location, cluster).await;
    let mut r = Running {
        w: Watch::new(location, cluster, s.clone(), store, pid),
        child,
        hot,
        report,
        handoffs,
    };
    r.supervise(&cancel).await
}

/// A supervised instance: the service's process, the hot set held for it, how its
/// health goes, and where its result goes.
struct Running<'a> {
    w: Watch<'a>,
    child: tokio::process::Child,
    hot: Option<HotSet>,
    report: Reporter,
    handoffs: tokio::signal::unix::Signal,
}

impl Running<'_> {
    /// Until the service exits or is stopped; its exit status.
    async fn supervise(&mut self, cancel: &CancellationToken) -> anyhow::Result<i32> {
        // Check often until the first success, so a restart registers as soon as the
        // service is up; then every `interval`.
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                status = self.child.wait() => {
                    self.w.withdraw().await;
                    let status = status?;
                    if !self.w.ever_healthy {
                        self.report.result(false, self.w.pid, Some(format!("the service exited with {status} before it was healthy")));
                    }
                    eprintln!("rookery: {} on {} exited with {status}", self.w.s.service, self.w.s.host);
                    return Ok(exit_code(&status));
                }
                _ = cancel.cancelled() => {
                    self.w.withdraw().await;
                    let status = stop(&mut self.child, self.w.pid).await?;
                    if !self.w.ever_healthy {
                        self.report.result(false, self.w.pid, Some("stopped before it was healthy".into()));
                    }
                    return Ok(exit_code(&status));
                }
                _ = self.handoffs.recv() => {
                    let Some(h) = self.w.s.run_file.as_deref().and_then(Handoff::take) else {
                        continue;
                    };
                    if let Err(code) = self.hand_over(&h).await {
                        return Ok(code);
                    }
                    next = tokio::time::Instant::now();
                }
                _ = tokio::time::sleep_until(next) => {
                    let s = &self.w.s;
                    next = tokio::time::Instant::now()
                        + if self.w.ever_healthy { s.interval } else { FIRST_CHECKS.min(s.interval) };
                    let healthy = match &s.health {
                        None => true,
                        Some(h) => check(h, s).await,
                    };
                    if healthy {
                        self.w.healthy(&mut self.report).await;
                    } else {
                        self.w.unhealthy(&mut self.report, cancel).await;
                    }
                    self.w.keep_session().await;
                }
            }
        }
    }

    /// Makes the switch a [`Handoff`] asks for: the new hot set locked, the service
    /// stopped, `current` pointed at the new release, the service started there,
    /// the old hot set unlocked. The result goes to the reply file once the new
    /// instance is healthy (or has failed); `Err` is the exit status when the
    /// supervisor has nothing left to run.
    async fn hand_over(&mut self, h: &Handoff) -> Result<(), i32> {
        let Some(run_file) = self.w.s.run_file.clone() else {
            return Ok(());
        };
        let reply = Box::new(ReplyFile(Handoff::reply_path(&run_file), Vec::new()));
        let next = match h.apply(&self.w.s) {
            Ok(next) => next,
            Err(e) => {
                let mut r = Reporter {
                    out: Some(reply),
                    s: self.w.s.clone(),
                    warning: None,
                };
                r.result(false, self.w.pid, Some(format!("refusing the switch: {e}")));
                return Ok(()); // the service runs on, untouched
            }
        };
        eprintln!("rookery: switching {} to {}", next.service, next.version);
        let (hot, warning) = lock_hot(&next.release, &next.hot);
        self.report = Reporter {
            out: Some(reply),
            s: next.clone(),
            warning,
        };
        self.w.withdraw().await;
        self.stop_for_switch(h.stop.as_deref()).await;
        let layout = crate::agent::release::Layout::new(&h.destination);
        if let Err(e) = crate::agent::switch::point_current(&layout, &next.version) {
            self.report.result(false, None, Some(e.to_string()));
            return Err(1);
        }
        self.child = match spawn(&next) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("starting `{}`: {e}", next.command.join(" "));
                self.report.result(false, None, Some(msg));
                return Err(1);
            }
        };
        let pid = self.child.id();
        let locked = hot.as_ref().map(|h| h.bytes);
        if let Err(e) = write_run_file(&run_file, &next, pid, locked) {
            eprintln!("rookery: writing {}: {e:#}", run_file.display());
        }
        // Restarted: the old release's hot set goes now.
        self.hot = hot;
        self.w.restarted(next, pid);
        Ok(())
    }

    /// The graceful stop command (in the release that runs), a moment for the
    /// service to exit by itself, then its process group.
    async fn stop_for_switch(&mut self, stop_cmd: Option<&str>) {
        if let Some(cmd) = stop_cmd {
            let status = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&self.w.s.release)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .status();
            if let Err(e) = tokio::time::timeout(STOP_GRACE, status).await {
                eprintln!("rookery: the stop command `{cmd}`: {e}");
            }
            let _ = tokio::time::timeout(STOP_COMMAND_EXIT, self.child.wait()).await;
        }
        if let Err(e) = stop(&mut self.child, self.w.pid).await {
            eprintln!("rookery: stopping {}: {e}", self.w.s.service);
        }
    }
}

/// The service's process, in its own process group, in its release directory.
fn spawn(s: &Supervise) -> std::io::Result<tokio::process::Child> {
    let mut cmd = if s.command.len() == 1 {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(&s.command[0]);
        c
    } else {
        let mut c = tokio::process::Command::new(&s.command[0]);
        c.args(&s.command[1..]);
        c
    };
    cmd.current_dir(&s.release)
        .env("ROOKERY_SERVICE", &s.service)
        .env("ROOKERY_HOST", &s.host)
        .env("ROOKERY_VERSION", &s.version)
        .env("ROOKERY_RELEASE", &s.release)
        .stdin(Stdio::null())
        .process_group(0);
    cmd.spawn()
}

/// Records this supervisor and its service where `agent switch` looks for them.
fn write_run_file(
    path: &Path,
    s: &Supervise,
    pid: Option<u32>,
    locked: Option<u64>,
) -> anyhow::Result<()> {
    let r = RunFile {
        supervisor: std::process::id(),
        service: pid.unwrap_or(0),
        version: s.version.clone(),
        release: s.release.display().to_string(),
        started: crate::coordination::now(),
        // A supervisor that holds a hot set takes switches itself, to hold one
        // across them. One whose lock was refused is replaced at the next switch: a
        // new supervisor gets the limit raised since (limits.d, LimitMEMLOCK=).
        handoff: locked.is_some(),
        locked: locked.unwrap_or(0),
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    crate::os::write_atomically(path, &serde_json::to_vec(&r)?, 0o644)?;
    Ok(())
}

/// Stops the service: SIGTERM to its group, SIGKILL after the grace period. The
/// shell may be gone while the service it started still shuts down (dash does not
/// always exec the last command): the instance is stopped only when its whole
/// process group is, or a restart would start the next one beside it.
async fn stop(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(p) = pid {
        // SAFETY: signalling the service's own process group.
        unsafe { libc::kill(-(p as i32), libc::SIGTERM) };
    }
    let until = tokio::time::Instant::now() + STOP_GRACE;
    let status = match tokio::time::timeout_at(until, child.wait()).await {
        Ok(s) => s?,
        Err(_) => {
            if let Some(p) = pid {
                // SAFETY: as above.
                unsafe { libc::kill(-(p as i32), libc::SIGKILL) };
            }
            child.wait().await?
        }
    };
    if let Some(p) = pid {
        let give_up = until + Duration::from_secs(5);
        while group_alive(p) && tokio::time::Instant::now() < give_up {
            if tokio::time::Instant::now() > until {
                // SAFETY: as above.
                unsafe { libc::kill(-(p as i32), libc::SIGKILL) };
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(status)
}

/// What the supervisor knows between checks: the store (when it answers), the live
/// entry (while registered), and how the health checks have gone.
struct Watch<'a> {
    location: &'a Location,
    cluster: &'a str,
    s: Supervise,
    instance: Instance,
    store: Option<Store>,
    live: Option<StoreLive>,
    ever_healthy: bool,
    failures: u32,
    started: tokio::time::Instant,
    pid: Option<u32>,
}

impl<'a> Watch<'a> {
    fn new(
        location: &'a Location,
        cluster: &'a str,
        s: Supervise,
        store: Option<Store>,
        pid: Option<u32>,
    ) -> Watch<'a> {
        Watch {
            location,
            cluster,
            instance: instance(&s),
            s,
            store,
            live: None,
            ever_healthy: false,
            failures: 0,
            started: tokio::time::Instant::now(),
            pid,
        }
    }

    /// The service runs `s` now, as `pid`: health is watched from the start again.
    fn restarted(&mut self, s: Supervise, pid: Option<u32>) {
        self.instance = instance(&s);
        self.s = s;
        self.live = None;
        self.ever_healthy = false;
        self.failures = 0;
        self.started = tokio::time::Instant::now();
        self.pid = pid;
    }

    /// Takes the live entry away, if there is one.
    async fn withdraw(&mut self) {
        if let (Some(l), Some(st)) = (self.live.take(), &self.store) {
            st.withdraw(l).await;
        }
    }

    /// A healthy check: registers the instance when it is not live.
    async fn healthy(&mut self, report: &mut Reporter) {
        let s = &self.s;
        self.failures = 0;
        if self.live.is_some() {
            return;
        }
        if self.store.is_none() {
            self.store = open(self.location, self.cluster).await;
        }
        let registered = match &self.store {
            Some(st) => st.register(&s.service, &self.instance).await,
            None => Err(crate::coordination::CoordError::store(
                "opening the coordination store",
                "no answer",
            )),
        };
        match registered {
            Ok(l) => {
                self.live = Some(l);
                if !self.ever_healthy {
                    self.ever_healthy = true;
                    report.result(true, self.pid, None);
                } else {
                    eprintln!("rookery: {} on {} is live again", s.service, s.host);
                }
            }
            Err(e) => {
                // Unregistered is not live: retry at the next check (after a
                // reconnect). The service is healthy, so a store that does not take
                // the entry is not this host's failure: past the health deadline the
                // start is reported done with the registration pending, and the
                // controller's own read of the store (which holds while the store
                // does not answer) decides.
                eprintln!("rookery: registering {} on {}: {e}", s.service, s.host);
                if !self.ever_healthy && self.started.elapsed() > s.health_deadline {
                    self.ever_healthy = true;
                    report.pending(
                        self.pid,
                        format!("healthy; its registration is pending: {e}"),
                    );
                }
            }
        }
    }

    /// A failed check: withdrawn after `UNHEALTHY_AFTER` in a row; never healthy
    /// by the deadline, the start has failed and the service is stopped.
    async fn unhealthy(&mut self, report: &mut Reporter, cancel: &CancellationToken) {
        self.failures += 1;
        if self.live.is_some() && self.failures >= UNHEALTHY_AFTER {
            self.withdraw().await;
            eprintln!(
                "rookery: {} on {} failed {} health checks; withdrawn",
                self.s.service, self.s.host, self.failures
            );
        }
        let s = &self.s;
        if !self.ever_healthy && self.started.elapsed() > s.health_deadline {
            report.result(
                false,
                self.pid,
                Some(format!(
                    "not healthy within {}",
                    crate::config::units::format_duration(s.health_deadline)
                )),
            );
            cancel.cancel();
        }
    }

    /// A lost session took the entry with it: opens a new one; the next healthy
    /// check registers the instance again.
    async fn keep_session(&mut self) {
        if let Some(Err(e)) = self.store.as_ref().map(|st| st.check_session()) {
            eprintln!("rookery: {e}; reconnecting");
            self.live = None;
            self.store = open(self.location, self.cluster).await;
            if self.store.is_some() {
                eprintln!("rookery: reconnected to the coordination store");
            }
        }
    }
}

/// The live entry of an instance.
fn instance(s: &Supervise) -> Instance {
    Instance {
        host: s.host.clone(),
        version: s.version.clone(),
        release: s.release.display().to_string(),
    }
}

/// Opens the coordination store, or says why not and gives none (tried again at the
/// next check).
async fn open(location: &Location, cluster: &str) -> Option<Store> {
    match tokio::time::timeout(CHECK_TIMEOUT, location.open(cluster)).await {
        Ok(Ok(store)) => Some(store),
        Ok(Err(e)) => {
            eprintln!("rookery: opening the coordination store: {e:#}");
            None
        }
        Err(_) => {
            eprintln!(
                "rookery: opening the coordination store: no answer within {}",
                crate::config::units::format_duration(CHECK_TIMEOUT)
            );
            None
        }
    }
}

async fn check(health: &str, s: &Supervise) -> bool {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(health)
        .current_dir(&s.release)
        .env("ROOKERY_SERVICE", &s.service)
        .env("ROOKERY_HOST", &s.host)
        .env("ROOKERY_VERSION", &s.version)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(CHECK_TIMEOUT, child).await, Ok(Ok(st)) if st.success())
}

fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Whether any process of group `pgid` is still running (not a zombie: an orphan's
/// zombie waits for init, which may reap it late).
fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks that the group has members.
    if unsafe { libc::kill(-(pgid as i32), 0) } != 0 {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true; // no procfs: trust the signal
    };
    dir.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // After the command name in parentheses: state, ppid, pgrp.
        let mut f = stat[stat.rfind(')').map_or(0, |i| i + 1)..].split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1);
        pgrp == Some(pgid.to_string().as_str()) && !matches!(state, Some("Z" | "X"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordination::local_store::LocalStore;

    #[tokio::test]
    async fn a_stop_waits_for_the_whole_process_group() {
        let d = tempfile::tempdir().unwrap();
        let loc = Location::Local {
            dir: d.path().join("store"),
        };
        // The shell dies at SIGTERM at once; the service it started takes 300 ms to
        // shut down, like a server finishing its requests.
        let s = sup(
            d.path(),
            "sh -c 'trap \"sleep 0.3; touch stopped; exit 0\" TERM; touch up; while :; do sleep 0.02; done' & wait",
            Some("test -e up"),
        );
        let cancel = CancellationToken::new();
        let run = run(&loc, "t", &s, Box::new(Buf::default()), cancel.clone());
        let stop = async {
            while !d.path().join("up").exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        };
        let (_, ()) = tokio::join!(run, stop);
        assert!(
            d.path().join("stopped").exists(),
            "the supervisor returned while the service was still stopping"
        );
    }

    fn sup(dir: &std::path::Path, cmd: &str, health: Option<&str>) -> Supervise {
        Supervise {
            service: "api".into(),
            host: "h1".into(),
            version: "v1".into(),
            release: dir.to_path_buf(),
            command: vec![cmd.into()],
            health: health.map(str::to_string),
            interval: Duration::from_millis(50),
            health_deadline: Duration::from_secs(5),
            run_file: None,
            hot: HotSetSpec::default(),
        }
    }

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn registers_once_healthy_and_leaves_with_the_service() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&d.path().join("store"), "t").unwrap();
        let loc = Location::Local {
            dir: d.path().join("store"),
        };
        // Healthy once the service has written its flag; exits when told by a file.
        let s = sup(
            d.path(),
            "touch up; while [ ! -e stop ]; do sleep 0.02; done; exit 3",
            Some("test -e up"),
        );
        let buf = Buf::default();
        let cancel = CancellationToken::new();
        let run = run(&loc, "t", &s, Box::new(buf.clone()), cancel);
        let watch = async {
            loop {
                if !store.live("api").await.unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(store.live("api").await.unwrap()[0].version, "v1");
            std::fs::write(d.path().join("stop"), "").unwrap();
        };
        let (code, ()) = tokio::join!(run, watch);
        assert_eq!(code.unwrap(), 3);
        assert!(store.live("api").await.unwrap().is_empty());
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(line.contains("\"event\":\"result\",\"ok\":true"), "{line}");
    }

    #[tokio::test]
    async fn a_service_never_healthy_fails_and_is_stopped() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&d.path().join("store"), "t").unwrap();
        let loc = Location::Local {
            dir: d.path().join("store"),
        };
        let mut s = sup(d.path(), "exec sleep 600", Some("false"));
        s.health_deadline = Duration::from_millis(300);
        let buf = Buf::default();
        let code = run(
            &loc,
            "t",
            &s,
            Box::new(buf.clone()),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(code, 128 + libc::SIGTERM);
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains("\"ok\":false") && line.contains("not healthy within"),
            "{line}"
        );
        assert!(store.live("api").await.unwrap().is_empty());
    }
}
