//! The rollout: services switched to a release host by host, in dependency order,
//! never below quorum, resumable from the deploy record.
//!
//! Services roll as soon as every service they follow is done, up to
//! `rollout.max_parallel_services` at once (`schedule.rs`; one at a time, in plan
//! order, by default). For each batch of a service's plan:
//!
//! 1. **Gate.** Read the service's live instances from the store (`current/`); the
//!    batch may go down only if the live instances outside it are at least the
//!    quorum (or if none of the batch is live, so nothing is taken away). Otherwise
//!    (an instance down elsewhere) re-cut it: the largest part that keeps the quorum
//!    goes, the rest through the gate again after it. Only when not one host can go,
//!    wait on the store's watch, up to the service's `health_deadline`, then stop
//!    with a message that gives the counts.
//! 2. **Restart** every host of the batch at once: `before_restart` hooks, then
//!    `rookery agent switch` on the host (stop, switch `current` atomically, start
//!    under the supervisor, which registers the instance once healthy), then wait
//!    for the host's live entry with the new version, then require it to stay live
//!    for `min_healthy_time`, then `after_restart` hooks, then clear its staging
//!    entry.
//! 3. **Failure.** A host that fails any step after the stop is switched back to
//!    the release it ran before and restarted there. The deploy goes on while the
//!    service's failed hosts are within its `failure_budget`, else it stops.
//! 4. **Canary gate** (`canary.rs`), after a service's canary batches: the canaries
//!    bake, watched; a failed canary switches them all back and stops the deploy;
//!    a clean bake goes on (`auto_promote`) or waits for `rollout --promote`.
//!
//! The deploy record ([`crate::coordination::record`]) is written to the store before and after
//! every batch. Run again after a crash, the same command resumes it: finished
//! hosts are skipped, and a host caught mid-switch is asked again (the host-side
//! switch is idempotent and serialised per service). The first Ctrl-C lets the
//! batch in flight finish and stops before the next; a second exits at once.

mod batch;
mod canary;
mod host;
mod lock;
mod render;
mod schedule;
mod settle;
mod work;

pub use host::{AgentError, releases};
pub use lock::take_lock;
pub use render::render;
pub use work::{Move, moves, newest_deployed};

use batch::*;
use host::*;
use schedule::*;
use settle::*;
use work::*;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::agent::request::{HealthArgs, PruneArgs, ReleasesArgs, Request, SwitchArgs};
use crate::agent::switch::Releases;
use crate::config::Config;
use crate::config::inventory;
use crate::coordination::record::{
    self, HostRecord, HostState, Kind, Record, ServiceRecord, State,
};
use crate::coordination::store::{Location, Store};
use crate::coordination::{CoordError, Coordinator, Holder, Instance, reconcile_target};
use crate::error::Error;
use crate::plan::Plan;
use crate::transport::{Chosen, Connection, HostError, Transport};

/// How a rollout was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    pub json: bool,
    pub quiet: bool,
    pub forks: usize,
    pub accept_new_host_keys: bool,
    /// The address hosts reach this machine at (deploy and reconcile distribute).
    pub advertise: Option<std::net::IpAddr>,
    /// The version to roll to; default: the staged one.
    pub version: Option<String>,
    /// Rollback: only these services (empty: all).
    pub services: Vec<String>,
    /// The caller (a deploy) holds the deploy lock already.
    pub lock_held: bool,
    /// `rollout --promote`: the canaries waiting for promotion are promoted.
    pub promote: bool,
}

/// What one host of one service is to run.
#[derive(Debug, Clone)]
struct Target {
    host: usize,
    version: String,
}

/// The work of one service: batches of targets, in plan order.
#[derive(Debug)]
struct Work {
    service: usize,
    name: String,
    quorum: u32,
    failure_budget: u32,
    batches: Vec<Vec<Target>>,
    /// How many of the first batches are canaries, followed by the canary gate (0
    /// for a rollback or a reconcile: they return to releases that ran already).
    canaries: usize,
    /// The services this one starts after (its dependencies; for a rollback, its
    /// dependents): every selected host of each is done before one of this one goes.
    after: Vec<String>,
}

/// Prints progress lines on stderr (not with `--quiet`).
#[derive(Clone)]
struct Say(bool);

impl Say {
    fn line(&self, text: impl AsRef<str>) {
        if self.0 {
            eprintln!("{}", text.as_ref());
        }
    }
}

/// What every step of one rollout reads: the store, the configuration, the hosts'
/// transport, where progress goes, and the cancellation tree.
struct Env<'a> {
    store: &'a Store,
    config: &'a Config,
    transport: &'a Chosen,
    say: Say,
    cancel: CancellationToken,
    /// Promote canaries that wait for promotion.
    promote: bool,
    /// Several services may roll at once: progress lines name the service of a host.
    interleaved: bool,
}

impl Env<'_> {
    /// Where the rookery binary is on host `h`.
    fn agent(&self, h: usize) -> String {
        self.transport.agent_path(h)
    }
}

/// Runs the rollout over the inventory's transport. `skipped` are hosts a deploy's
/// distribution did not reach (with the reason).
pub async fn with_transport(
    config: &Config,
    store: &Store,
    plan: &Plan,
    opts: &Options,
    skipped: Option<&BTreeMap<usize, String>>,
    cancel: CancellationToken,
) -> anyhow::Result<Record> {
    let transport = Chosen::of(&config.inventory, opts.accept_new_host_keys)?;
    let env = Env {
        store,
        config,
        transport: &transport,
        say: Say(!opts.quiet),
        cancel,
        promote: opts.promote,
        interleaved: config.playbook.rollout.max_parallel_services > 1,
    };
    let (last, base, newest) = bases(store, config, opts).await?;
    let opts = &promoting(opts, last.as_ref(), config)?;
    let (version, work) = work(store, config, plan, opts, base.as_ref(), newest.as_ref()).await?;
    let resume = last.filter(|r| resumes(r, config, opts, &version));
    if opts.promote && resume.as_ref().is_none_or(|r| r.state != State::Waiting) {
        return Err(Error::Usage(format!(
            "--promote: no deploy of playbook `{}` to {version} waits for promotion",
            config.playbook.name
        ))
        .into());
    }
    let id = resume.as_ref().map(|r| r.id.clone()).unwrap_or_else(|| {
        record::new_id(match opts.kind {
            Kind::Rollback => "rollback",
            Kind::Reconcile => "reconcile",
            Kind::Deploy | Kind::Rollout => &version,
        })
    });
    let lock = if opts.lock_held {
        None
    } else {
        Some(take_lock(store, config, &id, |m| env.say.line(m)).await?)
    };
    let result: anyhow::Result<Record> = async {
        let mut rec = match resume {
            Some(r) => resumed(r, &id, &env.say),
            None => {
                let base_id = match opts.kind {
                    Kind::Rollback => base.as_ref().map(|b| b.id.clone()),
                    Kind::Reconcile => newest.as_ref().map(|(id, _)| id.clone()),
                    _ => None,
                };
                fresh(config, opts.kind, &id, &version, base_id, &work)
            }
        };
        extend_scope(&mut rec, &work, &config.inventory);
        if let Some(skipped) = skipped {
            mark_skipped(&mut rec, skipped, &config.inventory);
        }
        save(store, &mut rec).await?;
        let conns = connect(&env, &work, &mut rec, opts.forks).await?;
        let outcome = roll(&env, &work, &conns, &mut rec).await;
        conclude(&env, &mut rec, &work, &conns, outcome).await;
        // A lost session cannot write the record; the next run finds it as it was.
        if rec.state != State::Halted {
            save(store, &mut rec).await?;
        }
        Ok(rec)
    }
    .await;
    if let Some(l) = lock {
        store.unlock(l).await;
    }
    result
}

/// The options of a `--promote` run: without `--version`, the version of the deploy
/// that waits for promotion (not whatever is staged since).
fn promoting(opts: &Options, last: Option<&Record>, config: &Config) -> anyhow::Result<Options> {
    let mut opts = opts.clone();
    if !opts.promote || opts.version.is_some() {
        return Ok(opts);
    }
    match last {
        Some(r) if r.state == State::Waiting && r.playbook == config.playbook.name => {
            opts.version = Some(r.version.clone());
            Ok(opts)
        }
        Some(r) => Err(Error::Usage(format!(
            "--promote: no deploy of playbook `{}` waits for promotion (the last deploy, {}, is {})",
            config.playbook.name,
            r.id,
            render::state_name(r.state)
        ))
        .into()),
        None => Err(Error::Usage("--promote: no deploy is recorded".into()).into()),
    }
}

/// Whether `last` is this same run, interrupted, which this one resumes.
fn resumes(last: &Record, config: &Config, opts: &Options, version: &str) -> bool {
    let same_kind = match opts.kind {
        Kind::Deploy | Kind::Rollout => matches!(last.kind, Kind::Deploy | Kind::Rollout),
        other => last.kind == other,
    };
    last.state != State::Done
        && same_kind
        && last.playbook == config.playbook.name
        && (last.version == version || matches!(opts.kind, Kind::Rollback | Kind::Reconcile))
}

/// An interrupted record, taken over by this run.
fn resumed(mut r: Record, id: &str, say: &Say) -> Record {
    let me = Holder::me(id);
    say.line(format!(
        "resuming deploy {} ({:?}, left by {} pid {})",
        r.id, r.state, r.who, r.pid
    ));
    r.state = State::Running;
    r.who = me.who.clone();
    r.pid = me.pid;
    r.message = None;
    r
}

/// A new record: every host of the work pending.
fn fresh(
    config: &Config,
    kind: Kind,
    id: &str,
    version: &str,
    base: Option<String>,
    work: &[Work],
) -> Record {
    let inv = &config.inventory;
    let me = Holder::me(id);
    Record {
        id: id.to_string(),
        kind,
        playbook: config.playbook.name.clone(),
        cluster: inv.cluster.clone(),
        version: version.to_string(),
        who: me.who.clone(),
        pid: me.pid,
        started: me.since,
        updated: me.since,
        state: State::Running,
        message: None,
        queue: work.iter().map(|w| w.name.clone()).collect(),
        base,
        services: work
            .iter()
            .map(|w| ServiceRecord {
                name: w.name.clone(),
                hosts: w
                    .batches
                    .iter()
                    .flatten()
                    .map(|t| HostRecord {
                        host: inv.hosts[t.host].name.clone(),
                        to: t.version.clone(),
                        from: None,
                        state: HostState::Pending,
                        error: None,
                        seconds: None,
                    })
                    .collect(),
                canary: None,
            })
            .collect(),
    }
}

/// Hosts a deploy's distribution did not reach: skipped, with the reason.
fn mark_skipped(rec: &mut Record, skipped: &BTreeMap<usize, String>, inv: &inventory::Inventory) {
    for (&h, why) in skipped {
        for s in &mut rec.services {
            if let Some(hr) = s.hosts.iter_mut().find(|r| r.host == inv.hosts[h].name)
                && !hr.state.finished()
            {
                hr.state = HostState::Skipped;
                hr.error = Some(why.clone());
            }
        }
    }
}

type Conns = BTreeMap<usize, Arc<<Chosen as Transport>::Connection>>;

/// Connects to every host that has something left to do and makes sure it runs
/// this rookery; a host that cannot is recorded unreachable, and the others roll.
async fn connect(
    env: &Env<'_>,
    work: &[Work],
    rec: &mut Record,
    forks: usize,
) -> anyhow::Result<Conns> {
    let inv = &env.config.inventory;
    let mut hosts: Vec<usize> = Vec::new();
    for w in work {
        for t in w.batches.iter().flatten() {
            let hr = rec.host(&w.name, &inv.hosts[t.host].name);
            if hr.is_some_and(|r| !r.state.finished() && r.state != HostState::Skipped)
                && !hosts.contains(&t.host)
            {
                hosts.push(t.host);
            }
        }
    }
    let connected = crate::transport::connect_all(env.transport, &hosts, forks).await;
    let mut conns = Conns::new();
    for (&h, c) in hosts.iter().zip(connected) {
        match c {
            Ok(c) => {
                conns.insert(h, Arc::new(c));
            }
            Err(e) if e.fatal => return Err(Error::Untrusted(e).into()),
            Err(e) => unreachable(rec, &inv.hosts[h].name, &e, &env.say),
        }
    }
    if env.transport.needs_bootstrap() && !conns.is_empty() {
        bootstrap(env, &mut conns, rec, forks).await?;
    }
    Ok(conns)
}

/// Checks (and installs) the rookery binary on each connected host, `forks` at a
/// time: checked one after another, N hosts cost N round trips before the first
/// restart.
async fn bootstrap(
    env: &Env<'_>,
    conns: &mut Conns,
    rec: &mut Record,
    forks: usize,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let inv = &env.config.inventory;
    let bin = crate::transport::bootstrap::Binary::current()?;
    let checks = conns.iter().map(|(&h, c)| {
        let (bin, cancel, path) = (&bin, &env.cancel, env.agent(h));
        let name = &inv.hosts[h].name;
        async move {
            let ensure = crate::transport::bootstrap::ensure(c.as_ref(), name, &path, bin, cancel);
            let limit = inv.transport.command_timeout();
            let r = crate::transport::bootstrap::within(limit, name, ensure).await;
            (h, r)
        }
    });
    let checked: Vec<_> = futures_util::stream::iter(checks)
        .buffered(forks.max(1))
        .collect()
        .await;
    for (h, r) in checked {
        match r {
            Ok(_) => {}
            // Interrupted: nothing has been restarted yet, so stop as before.
            Err(e) if env.cancel.is_cancelled() => {
                return Err(anyhow::Error::new(e).context("putting rookery on the hosts"));
            }
            // A host that cannot run the agent is as good as unreachable: the
            // others roll, and the quorum gate counts it as not live.
            Err(e) => {
                conns.remove(&h);
                unreachable(rec, &inv.hosts[h].name, &e, &env.say);
            }
        }
    }
    Ok(())
}

/// The record's state after the batches: done, stopped, or done within `--limit`
/// only; old releases pruned when done.
async fn conclude(
    env: &Env<'_>,
    rec: &mut Record,
    work: &[Work],
    conns: &Conns,
    outcome: Result<(), Stop>,
) {
    let left = outside_scope(rec, work, &env.config.inventory);
    match outcome {
        Ok(()) if !left.is_empty() => {
            // This run's --limit is done, the deploy it resumed is not: never
            // `done` while recorded hosts are still to switch.
            rec.state = State::Interrupted;
            rec.message = Some(format!(
                "done within this run's --limit; {} host(s) of deploy {} are still to switch ({}): run the same command without --limit to finish",
                left.len(),
                rec.id,
                left.join(", ")
            ));
        }
        Ok(()) => {
            rec.state = State::Done;
            let failed = rec
                .services
                .iter()
                .flat_map(|s| &s.hosts)
                .filter(|h| !h.state.finished())
                .count();
            if failed > 0 {
                rec.message = Some(format!(
                    "{failed} host(s) did not switch (within the failure budget): run `rookery reconcile` once they are fixed"
                ));
            }
            prune(env, conns, rec).await;
        }
        Err(Stop { state, message }) => {
            rec.state = state;
            rec.message = Some(message);
        }
    }
}

/// Makes a resumed record cover this run's scope too. The record holds the hosts of
/// the run that began it; a run over more hosts (the same deploy run again without
/// the stopped run's `--limit`) adds its other hosts as pending, and puts back in the
/// queue every service with a host of its scope still to switch, so nothing in its
/// scope is left out.
fn extend_scope(rec: &mut Record, work: &[Work], inv: &inventory::Inventory) {
    let mut queue = Vec::new();
    for w in work {
        let service = match rec.services.iter().position(|s| s.name == w.name) {
            Some(i) => &mut rec.services[i],
            None => {
                rec.services.push(ServiceRecord {
                    name: w.name.clone(),
                    hosts: Vec::new(),
                    canary: None,
                });
                rec.services.last_mut().expect("just pushed")
            }
        };
        let mut left = false;
        for t in w.batches.iter().flatten() {
            let name = &inv.hosts[t.host].name;
            match service.hosts.iter().find(|h| &h.host == name) {
                Some(h) => left |= !h.state.finished(),
                None => {
                    service.hosts.push(HostRecord {
                        host: name.clone(),
                        to: t.version.clone(),
                        from: None,
                        state: HostState::Pending,
                        error: None,
                        seconds: None,
                    });
                    left = true;
                }
            }
        }
        // Also a service an earlier, narrower run took out of the queue once its
        // own hosts were done.
        if left || rec.queue.contains(&w.name) {
            queue.push(w.name.clone());
        }
    }
    // Services of the record this run does not know (another playbook's) stay last.
    for q in &rec.queue {
        if !queue.contains(q) && !work.iter().any(|w| &w.name == q) {
            queue.push(q.clone());
        }
    }
    rec.queue = queue;
}

/// `service/host` of every recorded host that is not finished and lies outside this
/// run's scope (its `--limit`).
fn outside_scope(rec: &Record, work: &[Work], inv: &inventory::Inventory) -> Vec<String> {
    let in_scope = |service: &str, host: &str| {
        work.iter().any(|w| {
            w.name == service
                && w.batches
                    .iter()
                    .flatten()
                    .any(|t| inv.hosts[t.host].name == host)
        })
    };
    rec.services
        .iter()
        .flat_map(|s| s.hosts.iter().map(move |h| (s, h)))
        .filter(|(s, h)| !h.state.finished() && !in_scope(&s.name, &h.host))
        .map(|(s, h)| format!("{}/{}", s.name, h.host))
        .collect()
}

/// Why a rollout stopped early.
struct Stop {
    state: State,
    message: String,
}

async fn save(store: &Store, rec: &mut Record) -> Result<(), CoordError> {
    rec.updated = crate::coordination::now();
    let bytes = rec.to_bytes();
    let began = tokio::time::Instant::now();
    loop {
        match store.put_deploy(&rec.id, &bytes).await {
            // Held like a read (see `read_live`): a slow server is no reason to stop.
            Err(e @ CoordError::Store { .. }) if began.elapsed() < STORE_HOLD_MAX => {
                tracing::warn!("writing the deploy record: {e}; holding until the store answers");
                store.check_session()?;
                tokio::time::sleep(STORE_RETRY).await;
            }
            r => return r,
        }
    }
}

/// Marks `host` unreachable in every service it has left to switch, with the error
/// (which names the host and the stage), and says so.
fn unreachable(rec: &mut Record, host: &str, e: &HostError, say: &Say) {
    say.line(format!("{e}"));
    for s in &mut rec.services {
        if let Some(hr) = s.hosts.iter_mut().find(|r| r.host == host)
            && !hr.state.finished()
        {
            hr.state = HostState::Unreachable;
            hr.error = Some(e.to_string());
        }
    }
}
