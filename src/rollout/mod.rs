//! The rollout: services switched to a release host by host, in dependency order,
//! never below quorum, resumable from the deploy record.
//!
//! For each service in plan order (every host of a dependency is done before a
//! dependent starts), for each batch of the plan:
//!
//! 1. **Gate.** Read the service's live instances from the store (`current/`); the
//!    batch may go down only if the live instances outside it are at least the
//!    quorum (or if none of the batch is live, so nothing is taken away). Otherwise
//!    wait on the store's watch until that holds, up to the service's
//!    `health_deadline`, then stop with a message that gives the counts.
//! 2. **Restart** every host of the batch at once: `before_restart` hooks, then
//!    `rookery agent switch` on the host (stop, switch `current` atomically, start
//!    under the supervisor, which registers the instance once healthy), then wait
//!    for the host's live entry with the new version, then require it to stay live
//!    for `min_healthy_time`, then `after_restart` hooks, then clear its staging
//!    entry.
//! 3. **Failure.** A host that fails any step after the stop is switched back to
//!    the release it ran before and restarted there. The deploy goes on while the
//!    service's failed hosts are within its `failure_budget`, else it stops.
//!
//! The deploy record ([`crate::coordination::record`]) is written to the store before and after
//! every batch. Run again after a crash, the same command resumes it: finished
//! hosts are skipped, and a host caught mid-switch is asked again (the host-side
//! switch is idempotent and serialised per service). The first Ctrl-C lets the
//! batch in flight finish and stops before the next; a second exits at once.

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
    drive(&transport, store, config, plan, opts, skipped, cancel).await
}

/// Takes the deploy lock. A holder that is a dead process of this same machine is
/// waited out (its ZooKeeper session expires within the session timeout) instead of
/// being reported.
pub async fn take_lock(
    store: &Store,
    config: &Config,
    deploy: &str,
    say: impl Fn(&str),
) -> anyhow::Result<<Store as Coordinator>::Lock> {
    let me = Holder::me(deploy);
    let patience = Location::of(&config.inventory).session_timeout() + Duration::from_secs(5);
    let until = Instant::now() + patience;
    let mut said = false;
    loop {
        match store.lock(&me).await {
            Ok(l) => return Ok(l),
            Err(CoordError::Locked { holder, .. })
                if holder.who == me.who
                    && holder.pid != me.pid
                    && !crate::os::alive(holder.pid)
                    && Instant::now() < until =>
            {
                if !said {
                    say(&format!(
                        "the deploy lock is held by a dead run of this machine (pid {}); waiting up to {}s for its session to expire",
                        holder.pid,
                        patience.as_secs()
                    ));
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("taking the deploy lock")),
        }
    }
}

/// The version to roll to: `--version`, else the one staged for the playbook's
/// services (it must be unique).
async fn staged_version(store: &Store, plan: &Plan) -> anyhow::Result<String> {
    let mut versions: Vec<String> = Vec::new();
    for s in &plan.services {
        for (_, v) in store.staging(&s.name).await? {
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
    }
    match versions.len() {
        1 => Ok(versions.remove(0)),
        0 => Err(Error::Usage(
            "nothing is staged for this playbook's services: run `rookery distribute` first, or pass --version".into(),
        )
        .into()),
        _ => Err(Error::Usage(format!(
            "several versions are staged ({}): pass --version",
            versions.join(", ")
        ))
        .into()),
    }
}

/// The work of this command, service by service, in plan order (reverse for a
/// rollback: dependents go back first).
async fn work(
    store: &Store,
    config: &Config,
    plan: &Plan,
    opts: &Options,
    last: Option<&Record>,
    newest: Option<&(String, String)>,
) -> anyhow::Result<(String, Vec<Work>)> {
    let inv = &config.inventory;
    let index = |name: &str| inv.hosts.iter().position(|h| h.name == name);
    let mut out = Vec::new();
    let version = match opts.kind {
        Kind::Deploy | Kind::Rollout => match &opts.version {
            Some(v) => v.clone(),
            None => staged_version(store, plan).await?,
        },
        // Named from the targets below.
        Kind::Rollback | Kind::Reconcile => String::new(),
    };
    for sp in &plan.services {
        if opts.kind == Kind::Rollback
            && !opts.services.is_empty()
            && !opts.services.contains(&sp.name)
        {
            continue;
        }
        let si = config
            .playbook
            .services
            .iter()
            .position(|s| s.name == sp.name)
            .expect("planned services exist");
        let live = if opts.kind == Kind::Reconcile {
            store.live(&sp.name).await?
        } else {
            Vec::new()
        };
        let newest = newest.map(|(_, v)| v.as_str());
        let popular = reconcile_target(&live, newest);
        let mut batches = Vec::new();
        for b in &sp.batches {
            let mut targets = Vec::new();
            for name in &b.hosts {
                let h = index(name).expect("planned hosts exist");
                let v = match opts.kind {
                    Kind::Deploy | Kind::Rollout => Some(version.clone()),
                    Kind::Rollback => last
                        .and_then(|r| r.host(&sp.name, name))
                        .and_then(|r| r.from.clone()),
                    // Never backward: a host live on the newest deployed version
                    // stays there, whatever most hosts run.
                    Kind::Reconcile
                        if newest.is_some_and(|n| {
                            popular.as_deref() != Some(n)
                                && live.iter().any(|i| &i.host == name && i.version == n)
                        }) =>
                    {
                        None
                    }
                    Kind::Reconcile => popular.clone(),
                };
                if let Some(version) = v {
                    targets.push(Target { host: h, version });
                }
            }
            if !targets.is_empty() {
                batches.push(targets);
            }
        }
        out.push(Work {
            service: si,
            name: sp.name.clone(),
            quorum: sp.quorum,
            failure_budget: sp.failure_budget,
            batches,
        });
    }
    if opts.kind == Kind::Rollback {
        out.reverse();
    }
    // A rollback or reconcile names the versions it moves hosts to, never a word.
    let version = match opts.kind {
        Kind::Rollback | Kind::Reconcile => {
            let mut to: Vec<&str> = out
                .iter()
                .flat_map(|w| w.batches.iter().flatten())
                .map(|t| t.version.as_str())
                .collect();
            to.sort_unstable();
            to.dedup();
            if to.is_empty() {
                "none".to_string()
            } else {
                to.join(",")
            }
        }
        Kind::Deploy | Kind::Rollout => version,
    };
    Ok((version, out))
}

/// What a run starts from: the last record; for a rollback, the deploy whose `from`
/// versions it returns to (after another rollback, a partial one say, the deploy that
/// one rolled back); for a reconcile, the newest deployed version.
#[allow(clippy::type_complexity)]
async fn bases(
    store: &Store,
    config: &Config,
    opts: &Options,
) -> anyhow::Result<(Option<Record>, Option<Record>, Option<(String, String)>)> {
    let last = store
        .last_deploy()
        .await?
        .and_then(|(_, b)| Record::from_bytes(&b));
    let base = match &last {
        Some(r) if r.kind == Kind::Rollback => match &r.base {
            Some(id) => store
                .get_deploy(id)
                .await?
                .and_then(|b| Record::from_bytes(&b)),
            None => None,
        },
        other => other.clone(),
    };
    if opts.kind == Kind::Rollback && base.is_none() {
        return Err(Error::Usage(
            "no deploy is recorded, so there is no previous release to return to".into(),
        )
        .into());
    }
    let newest = match opts.kind {
        Kind::Reconcile => newest_deployed(store, &config.playbook.name).await?,
        _ => None,
    };
    Ok((last, base, newest))
}

/// One host move a reconcile or a rollback would make.
#[derive(Debug, serde::Serialize)]
pub struct Move {
    pub service: String,
    pub host: String,
    /// The version live there now (`None`: not live).
    pub from: Option<String>,
    pub to: String,
}

/// The host moves `reconcile` or `rollback` would make now, in the order it would
/// make them (their `--dry-run`): nothing is locked, distributed or switched.
pub async fn moves(
    store: &Store,
    config: &Config,
    plan: &Plan,
    opts: &Options,
) -> anyhow::Result<Vec<Move>> {
    let (_, base, newest) = bases(store, config, opts).await?;
    let (_, work) = work(store, config, plan, opts, base.as_ref(), newest.as_ref()).await?;
    let mut moves = Vec::new();
    for w in &work {
        let live = store.live(&w.name).await?;
        for t in w.batches.iter().flatten() {
            let host = &config.inventory.hosts[t.host].name;
            let from = live
                .iter()
                .find(|i| &i.host == host)
                .map(|i| i.version.clone());
            if from.as_deref() != Some(t.version.as_str()) {
                moves.push(Move {
                    service: w.name.clone(),
                    host: host.clone(),
                    from,
                    to: t.version.clone(),
                });
            }
        }
    }
    Ok(moves)
}

/// The id and version of the newest deploy (or rollout) of this playbook, from the
/// last record: a reconcile's record names the deploy it followed (`base`); after a
/// rollback there is none (the rollback chose the older releases on purpose).
pub async fn newest_deployed(
    store: &Store,
    playbook: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let Some(mut rec) = store
        .last_deploy()
        .await?
        .and_then(|(_, b)| Record::from_bytes(&b))
    else {
        return Ok(None);
    };
    if rec.kind == Kind::Reconcile {
        let Some(base) = rec.base.clone() else {
            return Ok(None);
        };
        match store
            .get_deploy(&base)
            .await?
            .and_then(|b| Record::from_bytes(&b))
        {
            Some(r) => rec = r,
            None => return Ok(None),
        }
    }
    Ok(
        (matches!(rec.kind, Kind::Deploy | Kind::Rollout) && rec.playbook == playbook)
            .then_some((rec.id, rec.version)),
    )
}

#[allow(clippy::too_many_arguments)]
async fn drive<T: Transport>(
    transport: &T,
    store: &Store,
    config: &Config,
    plan: &Plan,
    opts: &Options,
    skipped: Option<&BTreeMap<usize, String>>,
    cancel: CancellationToken,
) -> anyhow::Result<Record> {
    let agent = &|h: usize| transport.agent_path(h);
    let inv = &config.inventory;
    let say = Say(!opts.quiet);
    let (last, base, newest) = bases(store, config, opts).await?;
    let (version, work) = work(store, config, plan, opts, base.as_ref(), newest.as_ref()).await?;
    let same_kind = |k: Kind| match opts.kind {
        Kind::Deploy | Kind::Rollout => matches!(k, Kind::Deploy | Kind::Rollout),
        other => k == other,
    };
    let resume = last.filter(|r| {
        r.state != State::Done
            && same_kind(r.kind)
            && r.playbook == config.playbook.name
            && (r.version == version || matches!(opts.kind, Kind::Rollback | Kind::Reconcile))
    });
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
        Some(take_lock(store, config, &id, |m| say.line(m)).await?)
    };
    let result: anyhow::Result<Record> = async {
        let me = Holder::me(&id);
        let mut rec = match resume {
            Some(mut r) => {
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
            None => Record {
                id: id.clone(),
                kind: opts.kind,
                playbook: config.playbook.name.clone(),
                cluster: inv.cluster.clone(),
                version: version.clone(),
                who: me.who.clone(),
                pid: me.pid,
                started: me.since,
                updated: me.since,
                state: State::Running,
                message: None,
                queue: work.iter().map(|w| w.name.clone()).collect(),
                base: match opts.kind {
                    Kind::Rollback => base.as_ref().map(|b| b.id.clone()),
                    Kind::Reconcile => newest.as_ref().map(|(id, _)| id.clone()),
                    _ => None,
                },
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
                    })
                    .collect(),
            },
        };
        extend_scope(&mut rec, &work, inv);
        if let Some(skipped) = skipped {
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
        save(store, &mut rec).await?;

        // Connect to every host that has something left to do.
        let mut hosts: Vec<usize> = Vec::new();
        for w in &work {
            for t in w.batches.iter().flatten() {
                let hr = rec.host(&w.name, &inv.hosts[t.host].name);
                if hr.is_some_and(|r| !r.state.finished() && r.state != HostState::Skipped)
                    && !hosts.contains(&t.host)
                {
                    hosts.push(t.host);
                }
            }
        }
        let connected = crate::transport::connect_all(transport, &hosts, opts.forks).await;
        let mut conns: BTreeMap<usize, Arc<T::Connection>> = BTreeMap::new();
        for (&h, c) in hosts.iter().zip(connected) {
            match c {
                Ok(c) => {
                    conns.insert(h, Arc::new(c));
                }
                Err(e) if e.fatal => return Err(Error::Untrusted(e).into()),
                Err(e) => unreachable(&mut rec, &inv.hosts[h].name, &e, &say),
            }
        }
        if transport.needs_bootstrap() && !conns.is_empty() {
            use futures_util::StreamExt;
            let bin = crate::transport::bootstrap::Binary::current()?;
            // `--forks` at a time: checked one after another, N hosts cost N round
            // trips before the first restart.
            let checks = conns.iter().map(|(&h, c)| {
                let (bin, cancel, path) = (&bin, &cancel, agent(h));
                let name = &inv.hosts[h].name;
                async move {
                    let ensure = crate::transport::bootstrap::ensure(c.as_ref(), name, &path, bin, cancel);
                    let limit = inv.transport.command_timeout();
                    let r = crate::transport::bootstrap::within(limit, name, ensure).await;
                    (h, r)
                }
            });
            let checked: Vec<_> = futures_util::stream::iter(checks)
                .buffered(opts.forks.max(1))
                .collect()
                .await;
            for (h, r) in checked {
                match r {
                    Ok(_) => {}
                    // Interrupted: nothing has been restarted yet, so stop as before.
                    Err(e) if cancel.is_cancelled() => {
                        return Err(anyhow::Error::new(e).context("putting rookery on the hosts"));
                    }
                    // A host that cannot run the agent is as good as unreachable: the
                    // others roll, and the quorum gate counts it as not live.
                    Err(e) => {
                        conns.remove(&h);
                        unreachable(&mut rec, &inv.hosts[h].name, &e, &say);
                    }
                }
            }
        }

        let outcome = roll(store, config, &work, &conns, agent, &mut rec, &say, &cancel).await;
        let left = outside_scope(&rec, &work, inv);
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
                prune(config, &conns, agent, &rec, &say).await;
            }
            Err(Stop { state, message }) => {
                rec.state = state;
                rec.message = Some(message);
            }
        }
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

impl From<CoordError> for Stop {
    fn from(e: CoordError) -> Stop {
        Stop {
            state: match e {
                CoordError::SessionLost => State::Halted,
                _ => State::Failed,
            },
            message: e.to_string(),
        }
    }
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

#[allow(clippy::too_many_arguments)]
async fn roll<C: Connection>(
    store: &Store,
    config: &Config,
    work: &[Work],
    conns: &BTreeMap<usize, Arc<C>>,
    agent: &(dyn Fn(usize) -> String + Sync),
    rec: &mut Record,
    say: &Say,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let inv = &config.inventory;
    for w in work {
        if !rec.queue.contains(&w.name) {
            continue; // finished by an earlier run
        }
        let svc = &config.playbook.services[w.service];
        let nb = w.batches.len();
        say.line(format!(
            "{}: {} batch(es), quorum {}, failure budget {}",
            w.name, nb, w.quorum, w.failure_budget
        ));
        for (bi, batch) in w.batches.iter().enumerate() {
            let live = store.live(&w.name).await?;
            // Hosts with something to do: not finished, reachable, and not already
            // live on their target (a rerun changes nothing).
            let mut todo: Vec<&Target> = Vec::new();
            for t in batch {
                let name = &inv.hosts[t.host].name;
                let Some(hr) = rec.host_mut(&w.name, name) else {
                    continue;
                };
                if hr.state.finished()
                    || matches!(hr.state, HostState::Unreachable | HostState::Skipped)
                {
                    continue;
                }
                if hr.state == HostState::Pending
                    && live
                        .iter()
                        .any(|i| &i.host == name && i.version == t.version)
                {
                    hr.state = HostState::Unchanged;
                    store.clear_staging(&w.name, name).await?;
                    continue;
                }
                todo.push(t);
            }
            if todo.is_empty() {
                continue;
            }
            if cancel.is_cancelled() {
                return Err(Stop {
                    state: State::Interrupted,
                    message: format!(
                        "interrupted before {} batch {}/{nb}: run the same command to resume",
                        w.name,
                        bi + 1
                    ),
                });
            }
            store.check_session()?;
            let names: Vec<String> = todo
                .iter()
                .map(|t| inv.hosts[t.host].name.clone())
                .collect();
            gate(store, w, &names, svc.health_deadline, say, cancel).await?;
            say.line(format!(
                "{}: batch {}/{nb}: {}",
                w.name,
                bi + 1,
                names.join(", ")
            ));
            for n in &names {
                if let Some(hr) = rec.host_mut(&w.name, n) {
                    hr.state = HostState::Restarting;
                }
            }
            save(store, rec).await?;
            let jobs = todo.iter().map(|t| {
                let conn = conns.get(&t.host).cloned();
                async move {
                    let r = match conn {
                        Some(c) => restart(store, config, w.service, t, c.as_ref(), agent).await,
                        None => Err(Failure {
                            message: "not connected".into(),
                            previous: None,
                            back: Back::Untouched,
                        }),
                    };
                    (t, r)
                }
            });
            let results = futures_util::future::join_all(jobs).await;
            let mut unknown = Vec::new();
            for (t, r) in results {
                let name = &inv.hosts[t.host].name;
                let hr = rec.host_mut(&w.name, name).expect("recorded");
                match r {
                    // The store, not the host: left mid-switch (`restarting`) for the
                    // next run to ask again, never counted as a failure.
                    Err(f) if matches!(f.back, Back::Store) => {
                        hr.from = hr.from.take().or(f.previous.clone());
                        hr.error = Some(f.message.clone());
                        say.line(format!("  {name}: unknown: {}", f.message));
                        unknown.push(name.clone());
                    }
                    Ok(ok) => {
                        hr.state = HostState::Done;
                        hr.from = hr.from.take().or(ok.previous.clone());
                        hr.seconds = Some(ok.seconds);
                        hr.error = None;
                        say.line(format!(
                            "  {name}: {} -> {} in {:.1}s{}",
                            ok.previous.as_deref().unwrap_or("(none)"),
                            t.version,
                            ok.seconds,
                            if ok.already {
                                " (was already running it)"
                            } else {
                                ""
                            }
                        ));
                    }
                    Err(f) => {
                        hr.state = HostState::Failed;
                        hr.from = hr.from.take().or(f.previous.clone());
                        let back = match &f.back {
                            Back::Untouched => "; nothing was switched".into(),
                            Back::Switched(Ok(v)) => format!("; switched back to {v}"),
                            Back::Switched(Err(e)) => {
                                format!("; switching back failed too: {e}")
                            }
                            Back::Nowhere => "; no previous release to switch back to".into(),
                            Back::Store => unreachable!("matched above"),
                        };
                        hr.error = Some(format!("{}{back}", f.message));
                        say.line(format!("  {name}: FAILED: {}{back}", f.message));
                    }
                }
            }
            if !unknown.is_empty() {
                // The session is gone: the record cannot be written, and nothing more
                // may restart. The saved record has these hosts `restarting`.
                return Err(Stop {
                    state: State::Halted,
                    message: format!(
                        "the coordination session was lost during {} batch {}/{nb}; {} switched but could not be confirmed and stay mid-switch in the record: run the same command to resume",
                        w.name,
                        bi + 1,
                        unknown.join(", ")
                    ),
                });
            }
            save(store, rec).await?;
            // Counted from the record, not added up: a host that failed in an earlier
            // run and was retried in this batch no longer counts once it switched.
            let failures = rec.failed(&w.name);
            if failures > w.failure_budget {
                return Err(Stop {
                    state: State::Failed,
                    message: format!(
                        "{}: {failures} host(s) failed, more than its failure budget of {}; the deploy stopped (failed hosts were switched back; fix them and run the same command to resume)",
                        w.name, w.failure_budget
                    ),
                });
            }
        }
        rec.queue.retain(|s| s != &w.name);
        save(store, rec).await?;
    }
    Ok(())
}

/// Waits until the batch may go down without breaking the service's quorum.
async fn gate(
    store: &Store,
    w: &Work,
    batch: &[String],
    deadline: Duration,
    say: &Say,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let mut until = tokio::time::Instant::now() + deadline;
    let mut said = false;
    loop {
        // Held while the store does not answer, that time added back to the deadline.
        let (live, held) = read_live(store, &w.name).await?;
        until += held;
        let total = live.len() as u32;
        let going = live.iter().filter(|i| batch.contains(&i.host)).count() as u32;
        if going == 0 || total - going >= w.quorum {
            return Ok(());
        }
        let why = format!(
            "{}: {total} live instance(s), {going} of them in the next batch ({}); quorum {} needs {} more live elsewhere",
            w.name,
            batch.join(", "),
            w.quorum,
            w.quorum - (total - going)
        );
        if !said {
            say.line(format!("{why}: waiting"));
            said = true;
        }
        tokio::select! {
            r = store.changed(&w.name, &live) => until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(until) => {
                return Err(Stop {
                    state: State::Failed,
                    message: format!(
                        "{why}; gave up after {} (the service's health_deadline); nothing of this batch was touched",
                        crate::config::units::format_duration(deadline)
                    ),
                });
            }
            _ = cancel.cancelled() => {
                return Err(Stop {
                    state: State::Interrupted,
                    message: format!("interrupted while waiting for quorum: {why}"),
                });
            }
        }
    }
}

struct Restarted {
    previous: Option<String>,
    already: bool,
    seconds: f64,
}

struct Failure {
    message: String,
    previous: Option<String>,
    back: Back,
}

/// What became of a failed host's previous release.
enum Back {
    /// It failed before its switch began (a `before_restart` hook, no connection):
    /// it runs what it ran.
    Untouched,
    /// Switched back: the version now running, or why that failed too.
    Switched(Result<String, String>),
    /// It ran nothing else before (or already ran this version).
    Nowhere,
    /// Not known: the coordination session was lost after its switch, so the host
    /// stays mid-switch in the record and the rollout halts.
    Store,
}

/// The template placeholders of one host and version.
fn vars(
    config: &Config,
    service: usize,
    h: usize,
    version: &str,
) -> BTreeMap<&'static str, String> {
    let inv = &config.inventory;
    let host = &inv.hosts[h];
    let dest = destination(config, h);
    let mut v = BTreeMap::new();
    v.insert("host", host.name.clone());
    v.insert("address", host.address.clone());
    v.insert("dc", inv.datacenters[host.dc].name.clone());
    v.insert("rack", inv.rack_of(h).full_name.clone());
    v.insert("service", config.playbook.services[service].name.clone());
    v.insert("version", version.to_string());
    v.insert("release", format!("{dest}/releases/{version}"));
    v.insert("current", format!("{dest}/current"));
    v.insert("destination", dest);
    v
}

/// The artifact's destination on host `h`, absolute.
fn destination(config: &Config, h: usize) -> String {
    let d = config.host_destination(h);
    std::path::absolute(&d).unwrap_or(d).display().to_string()
}

/// The `agent switch` command line that makes `service` run `version` on `h`. The
/// commands go as the playbook's templates with this host's placeholders, and the
/// host fills in the release-specific ones (so `agent start` can do so again).
fn switch_command(
    config: &Config,
    service: usize,
    h: usize,
    version: &str,
    agent: &str,
) -> Result<String, String> {
    let svc = &config.playbook.services[service];
    let v = vars(config, service, h, version);
    let start = svc
        .start
        .as_ref()
        .ok_or_else(|| format!("service `{}` has no start command", svc.name))?;
    let switch = SwitchArgs {
        service: svc.name.clone(),
        host: config.inventory.hosts[h].name.clone(),
        version: version.to_string(),
        destination: v["destination"].clone().into(),
        stop: svc.stop.as_ref().map(|t| t.as_str().to_string()),
        start: start.as_str().to_string(),
        vars: ["host", "address", "dc", "rack", "service"]
            .iter()
            .map(|key| format!("{key}={}", v[*key]))
            .collect(),
        health: HealthArgs {
            health: svc.health.as_ref().map(|t| t.as_str().to_string()),
            health_interval: HealthArgs::DEFAULT_INTERVAL.to_string(),
            health_deadline: crate::config::units::format_duration(svc.health_deadline),
        },
        store: Location::of(&config.inventory)
            .absolute()
            .store_args(&config.inventory.cluster),
        restore: false,
    };
    Ok(switch.command_line(agent))
}

/// Runs `agent switch`; returns `(previous, already)`.
async fn switch<C: Connection>(
    conn: &C,
    command: &str,
) -> Result<(Option<String>, bool), (String, Option<String>)> {
    let mut line: Option<serde_json::Value> = None;
    let mut on_line = |l: &str| {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
            && v["event"] == "switch"
        {
            line = Some(v);
        }
    };
    // The switch is not cancelled by Ctrl-C: a batch in flight finishes.
    let never = CancellationToken::new();
    let finished = conn
        .exec(command, &mut on_line, &never)
        .await
        .map_err(|e| (format!("switch: {e}"), None))?;
    let Some(v) = line else {
        return Err((format!("switch: no result; {}", finished.describe()), None));
    };
    let previous = v["previous"].as_str().map(str::to_string);
    if v["ok"] == true {
        Ok((previous, v["action"] == "already"))
    } else {
        Err((
            v["error"].as_str().unwrap_or("failed").to_string(),
            previous,
        ))
    }
}

/// One host of one service to `t.version`, or back to where it was.
async fn restart<C: Connection>(
    store: &Store,
    config: &Config,
    service: usize,
    t: &Target,
    conn: &C,
    agent: &(dyn Fn(usize) -> String + Sync),
) -> Result<Restarted, Failure> {
    let t0 = Instant::now();
    let svc = &config.playbook.services[service];
    let host = config.inventory.hosts[t.host].name.clone();
    let v = vars(config, service, t.host, &t.version);
    let fail = |message: String| Failure {
        message,
        previous: None,
        back: Back::Untouched,
    };
    crate::transport::run_hooks(conn, &svc.before_restart, &v, "before_restart")
        .await
        .map_err(fail)?;
    let command =
        switch_command(config, service, t.host, &t.version, &agent(t.host)).map_err(fail)?;
    let (previous, already, error) = match switch(conn, &command).await {
        Ok((p, a)) => (p, a, None),
        Err((e, p)) => (p, false, Some(e)),
    };
    let result = match error {
        Some(e) => Err(e),
        None => match settle(
            store,
            &svc.name,
            &host,
            &t.version,
            svc.health_deadline,
            svc.min_healthy_time,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Unsettled::Host(e)) => Err(e),
            // Not the host's doing: no switch back, no failure charged to it. The
            // record keeps it mid-switch; the next run asks it again.
            Err(Unsettled::Store(e)) => {
                return Err(Failure {
                    message: format!(
                        "its switch finished, but whether it came up could not be read: {e}"
                    ),
                    previous,
                    back: Back::Store,
                });
            }
        },
    };
    let result = match result {
        Ok(()) => crate::transport::run_hooks(conn, &svc.after_restart, &v, "after_restart").await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let _ = store.clear_staging(&svc.name, &host).await;
            Ok(Restarted {
                previous,
                already,
                seconds: t0.elapsed().as_secs_f64(),
            })
        }
        Err(message) => {
            let back = match previous.as_deref() {
                Some(p) if p != t.version => Back::Switched(
                    switch_back(store, config, service, t.host, p, conn, agent).await,
                ),
                _ => Back::Nowhere,
            };
            Err(Failure {
                message,
                previous,
                back,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn switch_back<C: Connection>(
    store: &Store,
    config: &Config,
    service: usize,
    h: usize,
    previous: &str,
    conn: &C,
    agent: &(dyn Fn(usize) -> String + Sync),
) -> Result<String, String> {
    let svc = &config.playbook.services[service];
    // With the commands the host last ran `previous` with, not this playbook's: its
    // health check may be what failed.
    let command = switch_command(config, service, h, previous, &agent(h))? + " --restore";
    switch(conn, &command).await.map_err(|(e, _)| e)?;
    let host = &config.inventory.hosts[h].name;
    settle(
        store,
        &svc.name,
        host,
        previous,
        svc.health_deadline,
        Duration::ZERO,
    )
    .await
    .map_err(|e| match e {
        Unsettled::Host(e) => e,
        Unsettled::Store(e) => e.to_string(),
    })?;
    Ok(previous.to_string())
}

/// Waits for the host's live entry with `version`, then requires it to stay for
/// `min_healthy`.
async fn settle(
    store: &Store,
    service: &str,
    host: &str,
    version: &str,
    deadline: Duration,
    min_healthy: Duration,
) -> Result<(), Unsettled> {
    let is_live = |live: &[Instance]| live.iter().any(|i| i.host == host && i.version == version);
    // The host's deadlines run only while the store answers: time spent holding for
    // the store is added back, so a slow coordination server is never a slow host.
    let mut until = tokio::time::Instant::now() + deadline;
    let mut live;
    loop {
        let (l, held) = read_live(store, service).await?;
        live = l;
        until += held;
        if is_live(&live) {
            break;
        }
        tokio::select! {
            r = store.changed(service, &live) => until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(until) => {
                return Err(Unsettled::Host(format!(
                    "{service} {version} is not live on {host} after {}",
                    crate::config::units::format_duration(deadline)
                )));
            }
        }
    }
    let mut healthy_until = tokio::time::Instant::now() + min_healthy;
    loop {
        tokio::select! {
            r = store.changed(service, &live) => healthy_until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(healthy_until) => return Ok(()),
        }
        let (l, held) = read_live(store, service).await?;
        live = l;
        healthy_until += held;
        if !is_live(&live) {
            return Err(Unsettled::Host(format!(
                "{service} {version} on {host} was withdrawn (failed health checks or exited) within min_healthy_time {}",
                crate::config::units::format_duration(min_healthy)
            )));
        }
    }
}

impl From<Unsettled> for Stop {
    fn from(u: Unsettled) -> Stop {
        match u {
            Unsettled::Store(e) => Stop::from(e),
            Unsettled::Host(message) => Stop {
                state: State::Failed,
                message,
            },
        }
    }
}

/// Why a host did not settle: its own doing, or the store's.
enum Unsettled {
    /// The host's instance did not become or stay live: the host failed.
    Host(String),
    /// The coordination session was lost: nothing can be said of the host.
    Store(CoordError),
}

/// How long the store is waited for between tries while it does not answer.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// The longest a rollout holds for a store that keeps failing while its session
/// lives (ZooKeeper's session ends a real outage sooner; this bounds errors that
/// do not go away, such as a local store's full disk).
const STORE_HOLD_MAX: Duration = Duration::from_secs(120);

/// Reads the live instances of `service`, holding while the store does not answer
/// (a server that is slow or gone: the client moves to another one of the ensemble
/// within the session) until it does or the session is lost. Returns them and the
/// time spent holding.
async fn read_live(store: &Store, service: &str) -> Result<(Vec<Instance>, Duration), Unsettled> {
    let began = tokio::time::Instant::now();
    loop {
        match store.live(service).await {
            Ok(live) => return Ok((live, began.elapsed())),
            Err(CoordError::SessionLost) => return Err(Unsettled::Store(CoordError::SessionLost)),
            Err(e) if began.elapsed() >= STORE_HOLD_MAX => return Err(Unsettled::Store(e)),
            Err(e) => {
                tracing::warn!(
                    "reading {service}'s live instances: {e}; holding until the store answers"
                );
                store.check_session().map_err(Unsettled::Store)?;
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }
}

/// After a watch returned `r`: nothing held when it fired; on a store error, a pause
/// before the caller reads again (the time to add back), or the lost session.
async fn hold_after(store: &Store, r: Result<(), CoordError>) -> Result<Duration, Unsettled> {
    match r {
        Ok(()) => Ok(Duration::ZERO),
        Err(CoordError::SessionLost) => Err(Unsettled::Store(CoordError::SessionLost)),
        Err(e) => {
            tracing::warn!("watching the live instances: {e}; holding until the store answers");
            store.check_session().map_err(Unsettled::Store)?;
            tokio::time::sleep(STORE_RETRY).await;
            Ok(STORE_RETRY)
        }
    }
}

/// Removes releases beyond `keep_releases` on the hosts that switched.
async fn prune<C: Connection>(
    config: &Config,
    conns: &BTreeMap<usize, Arc<C>>,
    agent: &(dyn Fn(usize) -> String + Sync),
    rec: &Record,
    say: &Say,
) {
    let keep = config.playbook.artifact.keep_releases;
    let never = CancellationToken::new();
    for (&h, conn) in conns {
        let name = &config.inventory.hosts[h].name;
        let from = rec
            .services
            .iter()
            .flat_map(|s| &s.hosts)
            .find(|r| &r.host == name && r.from.is_some())
            .and_then(|r| r.from.clone());
        let prune = PruneArgs {
            destination: destination(config, h).into(),
            keep,
            previous: from,
        };
        let cmd = prune.command_line(&agent(h));
        match conn.exec(&cmd, &mut |_| {}, &never).await {
            Ok(f) if f.success() => {}
            Ok(f) => say.line(format!("{name}: pruning old releases: {}", f.describe())),
            Err(e) => say.line(format!("{name}: pruning old releases: {e}")),
        }
    }
}

/// The releases on each host, for `status`.
pub async fn releases<C: Connection>(
    config: &Config,
    conn: &C,
    h: usize,
    agent: &str,
) -> Result<Releases, String> {
    let cmd = ReleasesArgs {
        destination: destination(config, h).into(),
    }
    .command_line(agent);
    let mut out = String::new();
    let never = CancellationToken::new();
    let f = conn
        .exec(&cmd, &mut |l| out.push_str(l), &never)
        .await
        .map_err(|e| e.to_string())?;
    if !f.success() {
        return Err(f.describe());
    }
    serde_json::from_str(&out).map_err(|e| format!("reading the release list: {e}"))
}

/// The record as an operator reads it.
pub fn render(r: &Record) -> String {
    let kind = match r.kind {
        Kind::Deploy => "Deploy",
        Kind::Rollout => "Rollout",
        Kind::Rollback => "Rollback",
        Kind::Reconcile => "Reconcile",
    };
    let state = match r.state {
        State::Done => "done",
        State::Running => "running",
        State::Failed => "stopped",
        State::Interrupted => "interrupted",
        State::Halted => "halted (coordination session lost)",
    };
    let mut s = format!(
        "{kind} {} of playbook `{}` to {}: {state}\n",
        r.id, r.playbook, r.version
    );
    for svc in &r.services {
        s.push_str(&format!("  {}\n", svc.name));
        for h in &svc.hosts {
            let state = format!("{:?}", h.state).to_lowercase();
            s.push_str(&format!(
                "    {:<16} {:<12} {} -> {}{}{}\n",
                h.host,
                state,
                h.from.as_deref().unwrap_or("-"),
                h.to,
                h.seconds.map(|t| format!("  {t:.1}s")).unwrap_or_default(),
                h.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    if let Some(m) = &r.message {
        s.push_str(&format!("{m}\n"));
    }
    s
}
