//! `rookery agent switch`: the host's side of one restart, and the release
//! bookkeeping around it (`agent releases`, `agent prune`).
//!
//! A switch makes one service on this host run one release, and is idempotent, so
//! that a controller that died halfway can simply ask again:
//!
//! 1. take `<destination>/.rookery/run/<service>.lock` (two switches of one service
//!    never interleave, even from two controllers);
//! 2. if the supervisor recorded in `run/<service>.json` is alive and runs the wanted
//!    version, do nothing (`"action": "already"`);
//! 3. otherwise stop it: the playbook's `stop` command if there is one, then SIGTERM
//!    to the supervisor, which stops the service's process group (SIGKILL after its
//!    grace period);
//! 4. point `current` at `releases/<version>` with one `rename(2)` of a fresh
//!    symlink, so `current` is always either the old or the new release;
//! 5. start `rookery agent run --detach` there, which returns once the instance is
//!    healthy and registered in the coordination store, or has failed.
//!
//! A supervisor that holds a hot set (`page_cache.lock_current`; its run file says
//! `handoff`) makes steps 3 to 5 itself, so that the new release's hot set is locked
//! before the restart and the old one unlocked after: the switch leaves it a
//! [`Handoff`] and waits for its reply (see `supervisor.rs`). The hot set of a
//! release is what its fetch kept ([`HotSetSpec::load`]).
//!
//! It prints one JSON line: `{"event":"switch","ok":…,"action":…,"previous":…}`.
//! Switching back after a failure is the same command with the previous version.
//!
//! The commands arrive as the playbook's templates and are filled in here, so a
//! successful switch can keep its arguments (`.rookery/services/<service>.json`) and
//! `agent start` (`boot.rs`) can start the service again at boot.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::symlink;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::page_cache::HotSetSpec;
use crate::agent::release::Layout;
use crate::agent::request::{HealthArgs, Request, RunServiceArgs, SwitchArgs};
use crate::agent::supervisor::{Handoff, RunFile, STOP_GRACE};
use crate::config::template::{PLACEHOLDERS, Template};
use crate::coordination::store::Location;
use crate::os::alive;

/// How long a switch waits for another switch of the same service to finish.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Why a switch (or `agent start`) failed; the message is the `error` of its line.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Spec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "release {version} is not on this host ({} is missing): distribute it first",
        path.display()
    )]
    Missing { version: String, path: PathBuf },
    #[error("release {version}: {reason}")]
    Unsafe { version: String, reason: String },
    #[error("command `{template}`: {reason}")]
    Template { template: String, reason: String },
    #[error("--var `{kv}`: {reason}")]
    Var { kv: String, reason: String },
    #[error("another switch of this service holds {} for over {}s", path.display(), LOCK_WAIT.as_secs())]
    Locked { path: PathBuf },
    #[error("the supervisor (pid {pid}) did not stop, even after SIGKILL")]
    Unstoppable { pid: u32 },
    #[error("{service} {version} did not become healthy: {reason} (log: {})", log.display())]
    Unhealthy {
        service: String,
        version: String,
        reason: String,
        log: PathBuf,
    },
    #[error(
        "the supervisor (pid {pid}) took the switch to {version} and gave no answer{why} (log: {})",
        log.display()
    )]
    NoReply {
        pid: u32,
        version: String,
        why: &'static str,
        log: PathBuf,
    },
    #[error("{0}")]
    Store(String),
    #[error("service `{name}` was never switched on this host ({})", dir.display())]
    NeverSwitched { name: String, dir: PathBuf },
    #[error("{}: {source} (no service was ever switched on this host)", dir.display())]
    NoServices {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub(super) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SwitchError + 'a {
    move |source| SwitchError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub event: &'static str,
    pub ok: bool,
    /// `already` (nothing to do), `restarted`, or `failed`.
    pub action: &'static str,
    /// The release the service ran before (else what `current` pointed to).
    pub previous: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On success: what the supervisor has not done yet (its registration, when the
    /// coordination store did not answer it in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub fn run(a: &SwitchArgs) -> Outcome {
    let layout = Layout::new(&a.destination);
    let kept;
    let a = match a
        .restore
        .then(|| kept_spec(&layout, &a.service, &a.version))
    {
        Some(Some(spec)) => {
            kept = spec;
            &kept
        }
        _ => a,
    };
    let fail = |previous: Option<String>, e: SwitchError| Outcome {
        event: "switch",
        ok: false,
        action: "failed",
        previous,
        error: Some(e.to_string()),
        note: None,
    };
    let ready = match Ready::new(a, &layout) {
        Ok(r) => r,
        Err(e) => return fail(current_version(&layout), e),
    };
    let previous = ready.previous(a, &layout);
    match ready.switch(a, &layout) {
        Ok((action, note)) => Outcome {
            event: "switch",
            ok: true,
            action,
            previous,
            error: None,
            note,
        },
        Err(e) => fail(previous, e),
    }
}

/// A switch that may begin: the service's lock held, the release on disk and
/// confined, its commands filled in, and what runs now found.
struct Ready {
    _lock: File,
    release: PathBuf,
    start_cmd: String,
    health: Option<String>,
    run_file: PathBuf,
    running: Option<RunFile>,
}

impl Ready {
    fn new(a: &SwitchArgs, layout: &Layout) -> Result<Ready, SwitchError> {
        let run_dir = layout.logs().join("run");
        fs::create_dir_all(&run_dir).map_err(io_err("creating", &run_dir))?;
        let lock = lock(&run_dir.join(format!("{}.lock", a.service)))?;
        let release = layout.release(&a.version);
        if !release.is_dir() {
            return Err(SwitchError::Missing {
                version: a.version.clone(),
                path: release,
            });
        }
        // The links of the release, resolved on disk: nothing made live may lead out.
        crate::torrent::links::check_tree(&release).map_err(|e| SwitchError::Unsafe {
            version: a.version.clone(),
            reason: e.to_string(),
        })?;
        let start_cmd = render(a, &a.start, &a.version)?;
        let health = a
            .health
            .health
            .as_ref()
            .map(|h| render(a, h, &a.version))
            .transpose()?;
        let run_file = run_dir.join(format!("{}.json", a.service));
        let running = RunFile::read(&run_file).filter(|r| supervisor_alive(r, &a.service));
        Ok(Ready {
            _lock: lock,
            release,
            start_cmd,
            health,
            run_file,
            running,
        })
    }

    /// What this service ran: its live supervisor's release, else the release its
    /// last switch here saved. `current` is the host's, not the service's: on a
    /// first deploy another service may have switched it to the target already, and
    /// a service that never ran here has no previous release. Only a host switched
    /// by a rookery that saved nothing falls back to it.
    fn previous(&self, a: &SwitchArgs, layout: &Layout) -> Option<String> {
        let saved = fs::read(spec_path(layout, &a.service))
            .ok()
            .and_then(|b| serde_json::from_slice::<SwitchArgs>(&b).ok())
            .map(|spec| spec.version);
        let legacy = !layout.logs().join("services").is_dir();
        self.running
            .as_ref()
            .map(|r| r.version.clone())
            .or(saved)
            .or(current_version(layout).filter(|_| legacy))
    }

    /// Stops what runs, points `current` at the release, starts it there; the
    /// action taken and what is still pending.
    fn switch(
        &self,
        a: &SwitchArgs,
        layout: &Layout,
    ) -> Result<(&'static str, Option<String>), SwitchError> {
        if let Some(r) = &self.running
            && r.version == a.version
        {
            // Make `current` agree with what runs (a previous switch may have died
            // between its start and this point; the rename is harmless if it did not).
            point_current(layout, &a.version)?;
            save(layout, a);
            return Ok(("already", None));
        }
        let hot = HotSetSpec::load(layout, &a.version);
        if let Some(r) = &self.running {
            // The stop command stops what runs now: fill it in for that release.
            let stop_cmd = a
                .stop
                .as_ref()
                .map(|t| render(a, t, &r.version))
                .transpose()?;
            if r.handoff {
                if let Some(note) = self.hand_off(a, r, stop_cmd, &hot)? {
                    save(layout, a);
                    return Ok(("restarted", note));
                }
                // The supervisor ended before it took the switch: start one below.
            } else {
                stop(r, stop_cmd.as_deref())?;
            }
        }
        point_current(layout, &a.version)?;
        let note = start(a, self, &hot)?;
        save(layout, a);
        Ok(("restarted", note))
    }

    /// Leaves the running supervisor a [`Handoff`] and waits for its answer: `None`
    /// when it ended without taking it (nothing was stopped by it then).
    fn hand_off(
        &self,
        a: &SwitchArgs,
        r: &RunFile,
        stop: Option<String>,
        hot: &HotSetSpec,
    ) -> Result<Option<Option<String>>, SwitchError> {
        let h = Handoff {
            version: a.version.clone(),
            release: self.release.clone(),
            destination: a.destination.clone(),
            command: vec![self.start_cmd.clone()],
            health: self.health.clone(),
            interval: a.health.health_interval.clone(),
            health_deadline: a.health.health_deadline.clone(),
            hot: hot.clone(),
            stop,
        };
        let (path, reply) = (
            Handoff::path(&self.run_file),
            Handoff::reply_path(&self.run_file),
        );
        let _ = fs::remove_file(&reply);
        let text = serde_json::to_vec(&h).expect("serializable");
        crate::os::write_atomically(&path, &text, 0o644).map_err(io_err("writing", &path))?;
        // SAFETY: signalling the recorded supervisor (checked alive, and ours).
        unsafe { libc::kill(r.supervisor as i32, libc::SIGUSR1) };
        let line = wait_reply(r.supervisor, &path, &reply, &a.health.health_deadline);
        let _ = fs::remove_file(&reply);
        let log = a
            .destination
            .join(".rookery")
            .join(format!("{}.log", a.service));
        let no_reply = |why| SwitchError::NoReply {
            pid: r.supervisor,
            version: a.version.clone(),
            why,
            log: log.clone(),
        };
        let v = match line {
            Reply::Untaken => {
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
            Reply::Gone => return Err(no_reply(": it ended")),
            Reply::Late => return Err(no_reply(" in time")),
            Reply::Line(v) => v,
        };
        if v["ok"] == true {
            return Ok(Some(v["note"].as_str().map(str::to_string)));
        }
        Err(SwitchError::Unhealthy {
            service: a.service.clone(),
            version: a.version.clone(),
            reason: v["error"]
                .as_str()
                .unwrap_or("the supervisor failed")
                .to_string(),
            log,
        })
    }
}

/// What came of a handoff.
enum Reply {
    Line(serde_json::Value),
    /// The supervisor ended before it took the handoff.
    Untaken,
    /// It took it and ended without an answer.
    Gone,
    /// No answer within the stop grace, the health deadline and a margin.
    Late,
}

/// Waits for the supervisor's reply to a handoff, while it lives.
fn wait_reply(pid: u32, handoff: &Path, reply: &Path, health_deadline: &str) -> Reply {
    let deadline = crate::config::units::parse_duration(health_deadline)
        .unwrap_or(Duration::from_secs(60))
        + 2 * STOP_GRACE
        + Duration::from_secs(30);
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = fs::read(reply)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            return Reply::Line(v);
        }
        if !alive(pid) {
            // It may have answered just before it ended.
            if let Some(v) = fs::read(reply)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                return Reply::Line(v);
            }
            return if handoff.exists() {
                Reply::Untaken
            } else {
                Reply::Gone
            };
        }
        if Instant::now() > until {
            return Reply::Late;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fills in a template for `version`: `{version}`, `{release}`, `{current}` and
/// `{destination}` here, the other placeholders from `--var`.
fn render(a: &SwitchArgs, template: &str, version: &str) -> Result<String, SwitchError> {
    let t = Template::parse(template).map_err(|e| SwitchError::Template {
        template: template.to_string(),
        reason: e.to_string(),
    })?;
    let layout = Layout::new(&a.destination);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    for kv in &a.vars {
        let var = |reason: String| SwitchError::Var {
            kv: kv.clone(),
            reason,
        };
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| var("expected KEY=VALUE".into()))?;
        let key = PLACEHOLDERS
            .iter()
            .find(|p| **p == k)
            .ok_or_else(|| var(format!("`{k}` is not a placeholder")))?;
        vars.insert(key, v.to_string());
    }
    vars.insert("version", version.to_string());
    vars.insert("release", layout.release(version).display().to_string());
    vars.insert("current", layout.current().display().to_string());
    vars.insert("destination", a.destination.display().to_string());
    Ok(t.render(&vars))
}

/// Where a switch keeps its arguments for `agent start`.
fn spec_path(layout: &Layout, service: &str) -> PathBuf {
    layout
        .logs()
        .join("services")
        .join(format!("{service}.json"))
}

/// Keeps the arguments of a successful switch (best effort: a host that cannot
/// write them still runs the service; `agent start` then does not know it).
/// Where the spec a service ran before its last switch to another version is kept
/// (for a switch back; not read at boot).
fn previous_spec_path(layout: &Layout, service: &str) -> PathBuf {
    layout
        .logs()
        .join("services")
        .join("previous")
        .join(format!("{service}.json"))
}

/// The spec last used on this host to run `service` at `version`: the current one or
/// the one before it.
fn kept_spec(layout: &Layout, service: &str, version: &str) -> Option<SwitchArgs> {
    [
        spec_path(layout, service),
        previous_spec_path(layout, service),
    ]
    .iter()
    .filter_map(|p| serde_json::from_slice::<SwitchArgs>(&fs::read(p).ok()?).ok())
    .find(|spec| spec.version == version && spec.service == service)
}

fn save(layout: &Layout, a: &SwitchArgs) {
    let path = spec_path(layout, &a.service);
    // The spec being replaced by another version's is what a switch back needs.
    if let Ok(old) = fs::read(&path)
        && serde_json::from_slice::<SwitchArgs>(&old).is_ok_and(|o| o.version != a.version)
    {
        let previous = previous_spec_path(layout, &a.service);
        let _ = fs::create_dir_all(previous.parent().expect("has a parent"));
        let _ = fs::write(&previous, old);
    }
    let tmp = path.with_extension("json.tmp");
    let ok = fs::create_dir_all(path.parent().expect("has a parent")).is_ok()
        && serde_json::to_vec_pretty(a)
            .ok()
            .is_some_and(|text| fs::write(&tmp, text).is_ok())
        && fs::rename(&tmp, &path).is_ok();
    if !ok {
        let _ = fs::remove_file(&tmp);
    }
}

/// The version `current` points to.
pub fn current_version(layout: &Layout) -> Option<String> {
    let target = fs::read_link(layout.current()).ok()?;
    Some(target.file_name()?.to_string_lossy().to_string())
}

fn lock(path: &Path) -> Result<File, SwitchError> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock(2) on an open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if Instant::now() > deadline {
            return Err(SwitchError::Locked {
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The recorded supervisor still runs, and is a supervisor of this service (not a
/// process that reused its pid).
fn supervisor_alive(r: &RunFile, service: &str) -> bool {
    if !alive(r.supervisor) {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", r.supervisor)) else {
        return true; // no procfs: trust the pid
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--service" && w[1] == service.as_bytes())
}

/// Stops a running instance: the graceful stop command, then the supervisor.
fn stop(r: &RunFile, stop_cmd: Option<&str>) -> Result<(), SwitchError> {
    if let Some(cmd) = stop_cmd {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&r.release)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(io_err("running the stop command in", Path::new(&r.release)))?;
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The service may now exit on its own, and its supervisor with it.
        wait_gone(r.supervisor, Duration::from_secs(2));
    }
    if alive(r.supervisor) {
        // SAFETY: signalling the recorded supervisor.
        unsafe { libc::kill(r.supervisor as i32, libc::SIGTERM) };
        // The supervisor gives the service STOP_GRACE, then kills its group.
        if !wait_gone(r.supervisor, STOP_GRACE + Duration::from_secs(5)) {
            // SAFETY: as above, and the service's own process group.
            unsafe {
                libc::kill(r.supervisor as i32, libc::SIGKILL);
                libc::kill(-(r.service as i32), libc::SIGKILL);
            }
            if !wait_gone(r.supervisor, Duration::from_secs(5)) {
                return Err(SwitchError::Unstoppable { pid: r.supervisor });
            }
        }
    }
    Ok(())
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Points `current` at `releases/<version>` atomically: a new symlink under a
/// temporary name, renamed over the old one.
pub fn point_current(layout: &Layout, version: &str) -> Result<(), SwitchError> {
    let current = layout.current();
    let tmp = layout
        .destination
        .join(format!(".current.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let target = PathBuf::from("releases").join(version);
    symlink(&target, &tmp).map_err(io_err("creating", &tmp))?;
    fs::rename(&tmp, &current).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("switching", &current)(e)
    })
}

/// Starts the supervisor, detached; returns once the instance is healthy and
/// registered, or has failed.
fn start(a: &SwitchArgs, ready: &Ready, hot: &HotSetSpec) -> Result<Option<String>, SwitchError> {
    let exe = std::env::current_exe().map_err(io_err("finding", Path::new("rookery")))?;
    let log = a
        .destination
        .join(".rookery")
        .join(format!("{}.log", a.service));
    // The same store, as the flags this switch was given name it.
    let store = Location::from_args(&a.store).map_err(|e| SwitchError::Store(format!("{e:#}")))?;
    let run = RunServiceArgs {
        service: a.service.clone(),
        host: a.host.clone(),
        version: a.version.clone(),
        release: ready.release.clone(),
        health: HealthArgs {
            health: ready.health.clone(),
            ..a.health.clone()
        },
        detach: true,
        log: Some(log.clone()),
        run_file: Some(ready.run_file.clone()),
        lock: hot.globs.clone(),
        lock_max: (!hot.globs.is_empty()).then_some(hot.max),
        store: store.store_args(&a.store.cluster),
        command: vec![ready.start_cmd.clone()],
    };
    let argv = run.argv(&exe.display().to_string());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(io_err("starting the supervisor", &exe))?;
    // The result line says why (or what is pending); the log has the rest.
    let field = |name: &str| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v[name].as_str().map(str::to_string))
    };
    if out.status.success() {
        return Ok(field("note"));
    }
    Err(SwitchError::Unhealthy {
        service: a.service.clone(),
        version: a.version.clone(),
        reason: field("error").unwrap_or_else(|| "the supervisor failed".into()),
        log,
    })
}

/// What `agent releases` prints.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Releases {
    pub current: Option<String>,
    /// Installed releases, oldest first.
    pub releases: Vec<String>,
    /// The release each service switched here starts at boot (`agent start`): its
    /// last successful switch's. (Absent from older agents' answers.)
    #[serde(default)]
    pub on_boot: BTreeMap<String, String>,
}

pub fn releases(destination: &Path) -> Releases {
    let layout = Layout::new(destination);
    let mut found: Vec<(std::time::SystemTime, String)> = fs::read_dir(layout.releases())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !e.path().is_dir() {
                return None;
            }
            let t = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((t, name))
        })
        .collect();
    found.sort();
    let on_boot = fs::read_dir(layout.logs().join("services"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice::<SwitchArgs>(&fs::read(e.path()).ok()?).ok())
        .map(|spec| (spec.service, spec.version))
        .collect();
    Releases {
        current: current_version(&layout),
        releases: found.into_iter().map(|(_, n)| n).collect(),
        on_boot,
    }
}

/// Removes the oldest releases beyond `keep`; never the current one, the previous
/// one, or one a supervisor runs from.
pub fn prune(destination: &Path, keep: u32, previous: Option<&str>) -> Vec<String> {
    let r = releases(destination);
    let layout = Layout::new(destination);
    let in_use: Vec<String> = fs::read_dir(layout.logs().join("run"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| RunFile::read(&e.path()))
        .filter(|r| alive(r.supervisor))
        .map(|r| r.version)
        .collect();
    let excess = r.releases.len().saturating_sub(keep.max(1) as usize);
    let mut removed = Vec::new();
    for v in r.releases.iter().take(excess) {
        if Some(v) == r.current.as_ref() || Some(v.as_str()) == previous || in_use.contains(v) {
            continue;
        }
        if fs::remove_dir_all(layout.release(v)).is_ok() {
            // Its metainfo and its files' looks go with it: nothing starts from a
            // release that is gone.
            let _ = fs::remove_file(layout.metainfo(v));
            let _ = fs::remove_file(layout.looks(v));
            removed.push(v.clone());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_switches_atomically_and_prune_keeps_current_and_previous() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        fs::create_dir_all(layout.logs()).unwrap();
        for v in ["v1", "v2", "v3", "v4"] {
            fs::create_dir_all(layout.release(v)).unwrap();
            fs::write(layout.metainfo(v), "d").unwrap();
            fs::write(layout.looks(v), "{}").unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        point_current(&layout, "v2").unwrap();
        assert_eq!(current_version(&layout).as_deref(), Some("v2"));
        point_current(&layout, "v4").unwrap();
        assert_eq!(current_version(&layout).as_deref(), Some("v4"));
        assert_eq!(releases(d.path()).releases, ["v1", "v2", "v3", "v4"]);
        // Keep 1: v1 and v3 go; v4 is current, v2 the previous.
        let removed = prune(d.path(), 1, Some("v2"));
        assert_eq!(removed, ["v1", "v3"]);
        assert_eq!(releases(d.path()).releases, ["v2", "v4"]);
        // With their metainfo and looks; the kept releases keep theirs.
        for (v, kept) in [("v1", false), ("v2", true), ("v3", false), ("v4", true)] {
            assert_eq!(layout.metainfo(v).exists(), kept, "{v}");
            assert_eq!(layout.looks(v).exists(), kept, "{v}");
        }
        // No temporary symlink is left behind.
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
