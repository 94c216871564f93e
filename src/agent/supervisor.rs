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
//! With `--detach` it forks first (like `agent fetch`): the command returns with one
//! result line once the service is healthy and registered, or has failed, and the
//! supervisor goes on in the background with its output in a log file.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

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
}

/// What the run file says about a running instance.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunFile {
    pub supervisor: u32,
    pub service: u32,
    pub version: String,
    pub release: String,
    pub started: u64,
}

impl RunFile {
    pub fn read(path: &std::path::Path) -> Option<RunFile> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
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
    /// On success: what is not done yet (a registration the store has not taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// Writes the one `result` line, then drops the output (a detached supervisor's
/// parent returns when it reads it).
struct Reporter<'a> {
    out: Option<Box<dyn Write + Send>>,
    s: &'a Supervise,
}

impl Reporter<'_> {
    fn result(&mut self, ok: bool, pid: Option<u32>, error: Option<String>) {
        self.send(ok, pid, error, None);
    }

    /// Healthy, but not registered yet.
    fn pending(&mut self, pid: Option<u32>, note: String) {
        self.send(true, pid, None, Some(note));
    }

    fn send(&mut self, ok: bool, pid: Option<u32>, error: Option<String>, note: Option<String>) {
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
    let mut report = Reporter { out: Some(out), s };
    let mut child = match spawn(s) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("starting `{}`: {e}", s.command.join(" "));
            report.result(false, None, Some(msg.clone()));
            anyhow::bail!(msg);
        }
    };
    let pid = child.id();
    let _guard = RunFileGuard(s.run_file.clone());
    if let Some(path) = &s.run_file {
        write_run_file(path, s, pid)?;
    }
    // The store is opened beside the service, not before it: a server that does
    // not answer (frozen, or an ensemble without quorum) delays the registration,
    // never the start, and is tried again at each check.
    let mut w = Watch {
        location,
        cluster,
        s,
        instance: Instance {
            host: s.host.clone(),
            version: s.version.clone(),
            release: s.release.display().to_string(),
        },
        store: open(location, cluster).await,
        live: None,
        ever_healthy: false,
        failures: 0,
        started: tokio::time::Instant::now(),
        pid,
    };
    // Check often until the first success, so a restart registers as soon as the
    // service is up; then every `interval`.
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            status = child.wait() => {
                w.withdraw().await;
                let status = status?;
                if !w.ever_healthy {
                    report.result(false, pid, Some(format!("the service exited with {status} before it was healthy")));
                }
                eprintln!("rookery: {} on {} exited with {status}", s.service, s.host);
                return Ok(exit_code(&status));
            }
            _ = cancel.cancelled() => {
                w.withdraw().await;
                let status = stop(&mut child, pid).await?;
                if !w.ever_healthy {
                    report.result(false, pid, Some("stopped before it was healthy".into()));
                }
                return Ok(exit_code(&status));
            }
            _ = tokio::time::sleep_until(next) => {
                next = tokio::time::Instant::now()
                    + if w.ever_healthy { s.interval } else { FIRST_CHECKS.min(s.interval) };
                let healthy = match &s.health {
                    None => true,
                    Some(h) => check(h, s).await,
                };
                if healthy {
                    w.healthy(&mut report).await;
                } else {
                    w.unhealthy(&mut report, &cancel).await;
                }
                w.keep_session().await;
            }
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
fn write_run_file(path: &std::path::Path, s: &Supervise, pid: Option<u32>) -> anyhow::Result<()> {
    let r = RunFile {
        supervisor: std::process::id(),
        service: pid.unwrap_or(0),
        version: s.version.clone(),
        release: s.release.display().to_string(),
        started: crate::coordination::now(),
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
    s: &'a Supervise,
    instance: Instance,
    store: Option<Store>,
    live: Option<StoreLive>,
    ever_healthy: bool,
    failures: u32,
    started: tokio::time::Instant,
    pid: Option<u32>,
}

impl Watch<'_> {
    /// Takes the live entry away, if there is one.
    async fn withdraw(&mut self) {
        if let (Some(l), Some(st)) = (self.live.take(), &self.store) {
            st.withdraw(l).await;
        }
    }

    /// A healthy check: registers the instance when it is not live.
    async fn healthy(&mut self, report: &mut Reporter<'_>) {
        let s = self.s;
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
    async fn unhealthy(&mut self, report: &mut Reporter<'_>, cancel: &CancellationToken) {
        let s = self.s;
        self.failures += 1;
        if self.live.is_some() && self.failures >= UNHEALTHY_AFTER {
            self.withdraw().await;
            eprintln!(
                "rookery: {} on {} failed {} health checks; withdrawn",
                s.service, s.host, self.failures
            );
        }
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
