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
//! It prints one JSON line: `{"event":"switch","ok":…,"action":…,"previous":…}`.
//! Switching back after a failure is the same command with the previous version.
//!
//! The commands arrive as the playbook's templates and are filled in here, so a
//! successful switch can keep its arguments (`.rookery/services/<service>.json`) and
//! `agent start` can start the service again at boot, on the release it ran or, with
//! `--catch-up`, on the version most of its live instances run.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::symlink;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::agent::release::Layout;
use crate::agent::request::{HealthArgs, Request, RunServiceArgs, StartArgs, SwitchArgs};
use crate::agent::supervisor::{RunFile, STOP_GRACE};
use crate::config::template::{PLACEHOLDERS, Template};
use crate::coordination::store::Location;
use crate::os::alive;

/// How long a switch waits for another switch of the same service to finish.
const LOCK_WAIT: Duration = Duration::from_secs(120);

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
    let fail = |previous: Option<String>, e: String| Outcome {
        event: "switch",
        ok: false,
        action: "failed",
        previous,
        error: Some(e),
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
    fn new(a: &SwitchArgs, layout: &Layout) -> Result<Ready, String> {
        let run_dir = layout.logs().join("run");
        fs::create_dir_all(&run_dir).map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
        let lock = lock(&run_dir.join(format!("{}.lock", a.service)))?;
        let release = layout.release(&a.version);
        if !release.is_dir() {
            return Err(format!(
                "release {} is not on this host ({} is missing): distribute it first",
                a.version,
                release.display()
            ));
        }
        // The links of the release, resolved on disk: nothing made live may lead out.
        crate::torrent::links::check_tree(&release)
            .map_err(|e| format!("release {}: {e}", a.version))?;
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
    ) -> Result<(&'static str, Option<String>), String> {
        if let Some(r) = &self.running
            && r.version == a.version
        {
            // Make `current` agree with what runs (a previous switch may have died
            // between its start and this point; the rename is harmless if it did not).
            point_current(layout, &a.version)?;
            save(layout, a);
            return Ok(("already", None));
        }
        if let Some(r) = &self.running {
            // The stop command stops what runs now: fill it in for that release.
            let stop_cmd = a
                .stop
                .as_ref()
                .map(|t| render(a, t, &r.version))
                .transpose()?;
            stop(r, stop_cmd.as_deref())?;
        }
        point_current(layout, &a.version)?;
        let note = start(
            a,
            &self.start_cmd,
            self.health.as_deref(),
            &self.release,
            &self.run_file,
        )?;
        save(layout, a);
        Ok(("restarted", note))
    }
}

/// Fills in a template for `version`: `{version}`, `{release}`, `{current}` and
/// `{destination}` here, the other placeholders from `--var`.
fn render(a: &SwitchArgs, template: &str, version: &str) -> Result<String, String> {
    let t = Template::parse(template).map_err(|e| format!("command `{template}`: {e}"))?;
    let layout = Layout::new(&a.destination);
    let mut vars: BTreeMap<&str, String> = BTreeMap::new();
    for kv in &a.vars {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--var `{kv}`: expected KEY=VALUE"))?;
        let key = PLACEHOLDERS
            .iter()
            .find(|p| **p == k)
            .ok_or_else(|| format!("--var `{kv}`: `{k}` is not a placeholder"))?;
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

/// What `agent start` prints for each service.
#[derive(Debug, Serialize)]
pub struct Started {
    pub event: &'static str,
    pub service: String,
    pub version: String,
    pub ok: bool,
    /// `already`, `restarted` or `failed`, as for a switch.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `agent start`: starts every service a switch left on this host (at boot), on the
/// release it last ran, or with `--catch-up` on the version most of the service's
/// live instances run elsewhere, if that release is here.
pub fn start_all(a: &StartArgs) -> Result<Vec<Started>, String> {
    let layout = Layout::new(&a.destination);
    let dir = layout.logs().join("services");
    let mut specs: Vec<SwitchArgs> = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| {
        format!(
            "{}: {e} (no service was ever switched on this host)",
            dir.display()
        )
    })? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let spec: SwitchArgs =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if a.service.is_empty() || a.service.contains(&spec.service) {
            specs.push(spec);
        }
    }
    for name in &a.service {
        if !specs.iter().any(|s| &s.service == name) {
            return Err(format!(
                "service `{name}` was never switched on this host ({})",
                dir.display()
            ));
        }
    }
    specs.sort_by(|x, y| x.service.cmp(&y.service));
    let mut out = Vec::new();
    for mut spec in specs {
        let mut note = None;
        if a.catch_up {
            match popular_elsewhere(&spec) {
                Ok(Some(v)) if v != spec.version => {
                    if layout.release(&v).is_dir() {
                        note = Some(format!(
                            "caught up: the live instances run {v}, this host last ran {}",
                            spec.version
                        ));
                        spec.version = v;
                    } else {
                        note = Some(format!(
                            "the live instances run {v}, which is not on this host: started {} instead; run `rookery reconcile` to bring {v} here",
                            spec.version
                        ));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    note = Some(format!(
                        "could not ask the coordination store ({e}): started {}",
                        spec.version
                    ))
                }
            }
        }
        let o = run(&spec);
        out.push(Started {
            event: "start",
            service: spec.service.clone(),
            version: spec.version.clone(),
            ok: o.ok,
            action: o.action,
            note,
            error: o.error,
        });
    }
    Ok(out)
}

/// The version most live instances of the service run on other hosts.
fn popular_elsewhere(spec: &SwitchArgs) -> Result<Option<String>, String> {
    use crate::coordination::Coordinator;
    let location = Location::from_args(&spec.store).map_err(|e| format!("{e:#}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = location
            .open(&spec.store.cluster)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let live: Vec<_> = store
            .live(&spec.service)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|i| i.host != spec.host)
            .collect();
        Ok(crate::coordination::most_popular(&live))
    })
}

/// The version `current` points to.
pub fn current_version(layout: &Layout) -> Option<String> {
    let target = fs::read_link(layout.current()).ok()?;
    Some(target.file_name()?.to_string_lossy().to_string())
}

fn lock(path: &Path) -> Result<File, String> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock(2) on an open descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "another switch of this service holds {} for over {}s",
                path.display(),
                LOCK_WAIT.as_secs()
            ));
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
fn stop(r: &RunFile, stop_cmd: Option<&str>) -> Result<(), String> {
    if let Some(cmd) = stop_cmd {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&r.release)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("running the stop command: {e}"))?;
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
                return Err(format!(
                    "the supervisor (pid {}) did not stop, even after SIGKILL",
                    r.supervisor
                ));
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
pub fn point_current(layout: &Layout, version: &str) -> Result<(), String> {
    let current = layout.current();
    let tmp = layout
        .destination
        .join(format!(".current.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let target = PathBuf::from("releases").join(version);
    symlink(&target, &tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    fs::rename(&tmp, &current).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("switching {}: {e}", current.display())
    })
}

/// Starts the supervisor, detached; returns once the instance is healthy and
/// registered, or has failed.
fn start(
    a: &SwitchArgs,
    command: &str,
    health: Option<&str>,
    release: &Path,
    run_file: &Path,
) -> Result<Option<String>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding rookery: {e}"))?;
    let log = a
        .destination
        .join(".rookery")
        .join(format!("{}.log", a.service));
    // The same store, as the flags this switch was given name it.
    let store = Location::from_args(&a.store).map_err(|e| format!("{e:#}"))?;
    let run = RunServiceArgs {
        service: a.service.clone(),
        host: a.host.clone(),
        version: a.version.clone(),
        release: release.to_path_buf(),
        health: HealthArgs {
            health: health.map(str::to_string),
            ..a.health.clone()
        },
        detach: true,
        log: Some(log.clone()),
        run_file: Some(run_file.to_path_buf()),
        store: store.store_args(&a.store.cluster),
        command: vec![command.to_string()],
    };
    let argv = run.argv(&exe.display().to_string());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("starting the supervisor: {e}"))?;
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
    let reason = field("error").unwrap_or_else(|| "the supervisor failed".into());
    Err(format!(
        "{} {} did not become healthy: {reason} (log: {})",
        a.service,
        a.version,
        log.display()
    ))
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
        for v in ["v1", "v2", "v3", "v4"] {
            fs::create_dir_all(layout.release(v)).unwrap();
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
        // No temporary symlink is left behind.
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}
