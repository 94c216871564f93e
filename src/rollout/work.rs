//! What a run has to do: the version it rolls to, the hosts of each service still
//! to move (after a resume, a reconcile or a rollback), and the dry run's moves.

use super::*;

/// The version to roll to: `--version`, else the one staged for the playbook's
/// services (it must be unique).
pub(super) async fn staged_version(store: &Store, plan: &Plan) -> anyhow::Result<String> {
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
pub(super) async fn work(
    store: &Store,
    config: &Config,
    plan: &Plan,
    opts: &Options,
    last: Option<&Record>,
    newest: Option<&(String, String)>,
) -> anyhow::Result<(String, Vec<Work>)> {
    let mut out = Vec::new();
    let version = match opts.kind {
        Kind::Deploy | Kind::Rollout => match &opts.version {
            Some(v) => v.clone(),
            None => staged_version(store, plan).await?,
        },
        // Named from the targets below.
        Kind::Rollback | Kind::Reconcile => String::new(),
    };
    let newest = newest.map(|(_, v)| v.as_str());
    for sp in &plan.services {
        if opts.kind == Kind::Rollback
            && !opts.services.is_empty()
            && !opts.services.contains(&sp.name)
        {
            continue;
        }
        let live = if opts.kind == Kind::Reconcile {
            store.live(&sp.name).await?
        } else {
            Vec::new()
        };
        let to = To {
            kind: opts.kind,
            version: &version,
            last,
            newest,
            popular: reconcile_target(&live, newest),
            live: &live,
        };
        out.push(service_work(config, sp, &to));
    }
    if opts.kind == Kind::Rollback {
        out.reverse();
        // Dependents go back first: a service waits for those that depend on it.
        let after: Vec<Vec<String>> = out
            .iter()
            .map(|w| {
                plan.services
                    .iter()
                    .filter(|s| s.depends_on.contains(&w.name))
                    .map(|s| s.name.clone())
                    .collect()
            })
            .collect();
        for (w, a) in out.iter_mut().zip(after) {
            w.after = a;
        }
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

/// What decides the version a host of one service goes to.
struct To<'a> {
    kind: Kind,
    /// A deploy's or rollout's version.
    version: &'a str,
    /// The record a rollback undoes.
    last: Option<&'a Record>,
    /// The newest deployed version, which reconcile never moves a host from.
    newest: Option<&'a str>,
    /// The version most of the service's live instances run.
    popular: Option<String>,
    live: &'a [Instance],
}

impl To<'_> {
    /// The version host `name` of `service` goes to; `None`: it stays.
    fn version_for(&self, service: &str, name: &str) -> Option<String> {
        match self.kind {
            Kind::Deploy | Kind::Rollout => Some(self.version.to_string()),
            Kind::Rollback => self
                .last
                .and_then(|r| r.host(service, name))
                .and_then(|r| r.from.clone()),
            // Never backward: a host live on the newest deployed version stays
            // there, whatever most hosts run.
            Kind::Reconcile
                if self.newest.is_some_and(|n| {
                    self.popular.as_deref() != Some(n)
                        && self.live.iter().any(|i| i.host == name && i.version == n)
                }) =>
            {
                None
            }
            Kind::Reconcile => self.popular.clone(),
        }
    }
}

/// One planned service's batches of targets.
fn service_work(config: &Config, sp: &crate::plan::ServicePlan, to: &To) -> Work {
    let inv = &config.inventory;
    let si = config
        .playbook
        .services
        .iter()
        .position(|s| s.name == sp.name)
        .expect("planned services exist");
    let mut batches = Vec::new();
    let mut canaries = 0;
    let gated = matches!(to.kind, Kind::Deploy | Kind::Rollout);
    for b in &sp.batches {
        let targets: Vec<Target> = b
            .hosts
            .iter()
            .filter_map(|name| {
                let host = inv
                    .hosts
                    .iter()
                    .position(|h| &h.name == name)
                    .expect("planned hosts exist");
                to.version_for(&sp.name, name)
                    .map(|version| Target { host, version })
            })
            .collect();
        if !targets.is_empty() {
            canaries += usize::from(gated && b.canary);
            batches.push(targets);
        }
    }
    Work {
        service: si,
        name: sp.name.clone(),
        quorum: sp.quorum,
        failure_budget: sp.failure_budget,
        batches,
        canaries,
        after: sp.depends_on.clone(),
    }
}

/// What a run starts from: the last record; for a rollback, the deploy whose `from`
/// versions it returns to (after another rollback, a partial one say, the deploy that
/// one rolled back); for a reconcile, the newest deployed version.
#[allow(clippy::type_complexity)]
pub(super) async fn bases(
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
