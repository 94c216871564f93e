//! One host: `agent switch` to the new release (hooks, the wait for its live entry)
//! or back to the old one, and the host's release list and pruning.

use super::*;

pub(super) struct Restarted {
    pub(super) previous: Option<String>,
    pub(super) already: bool,
    pub(super) seconds: f64,
}

pub(super) struct Failure {
    pub(super) message: String,
    pub(super) previous: Option<String>,
    pub(super) back: Back,
}

/// What became of a failed host's previous release.
pub(super) enum Back {
    /// It failed before its switch began (a `before_restart` hook, no connection):
    /// it runs what it ran.
    Untouched,
    /// Switched back: the version now running, or why that failed too.
    Switched(Result<String, BackError>),
    /// It ran nothing else before (or already ran this version).
    Nowhere,
    /// Not known: the coordination session was lost after its switch, so the host
    /// stays mid-switch in the record and the rollout halts.
    Store,
}

/// Why a command rookery ran on a host did not give what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("service `{0}` has no start command")]
    NoStart(String),
    /// The transport could not run it.
    #[error("{stage}: {message}")]
    Exec {
        stage: &'static str,
        message: String,
    },
    /// It ran but printed no result line.
    #[error("{stage}: no result; {finished}")]
    NoResult {
        stage: &'static str,
        finished: String,
    },
    /// The agent answered that it failed, with its reason.
    #[error("{0}")]
    Refused(String),
    /// It exited with a failure.
    #[error("{0}")]
    Exited(String),
    #[error("reading the release list: {0}")]
    Unreadable(String),
    /// The transport could not run a command whose failure names itself.
    #[error("{0}")]
    Transport(String),
}

/// A failed `agent switch`: why, and what the host ran before, when it said.
pub(super) struct SwitchError {
    pub(super) error: AgentError,
    pub(super) previous: Option<String>,
}

/// Why switching a host back to its previous release failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BackError {
    #[error("not connected")]
    NotConnected,
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The old release did not come up again.
    #[error("{0}")]
    NotLive(String),
    #[error(transparent)]
    Store(#[from] CoordError),
}

impl From<Unsettled> for BackError {
    fn from(u: Unsettled) -> BackError {
        match u {
            Unsettled::Host(e) => BackError::NotLive(e),
            Unsettled::Store(e) => BackError::Store(e),
        }
    }
}

/// The template placeholders of one host and version.
pub(super) fn vars(
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
pub(super) fn destination(config: &Config, h: usize) -> String {
    let d = config.host_destination(h);
    std::path::absolute(&d).unwrap_or(d).display().to_string()
}

/// The `agent switch` command line that makes `service` run `version` on `h`. The
/// commands go as the playbook's templates with this host's placeholders, and the
/// host fills in the release-specific ones (so `agent start` can do so again).
pub(super) fn switch_command(
    config: &Config,
    service: usize,
    h: usize,
    version: &str,
    agent: &str,
) -> Result<String, AgentError> {
    let svc = &config.playbook.services[service];
    let v = vars(config, service, h, version);
    let start = svc
        .start
        .as_ref()
        .ok_or_else(|| AgentError::NoStart(svc.name.clone()))?;
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
pub(super) async fn switch<C: Connection>(
    conn: &C,
    command: &str,
) -> Result<(Option<String>, bool), SwitchError> {
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
    let unsaid = |error| SwitchError {
        error,
        previous: None,
    };
    let finished = conn
        .exec(command, &mut on_line, &never)
        .await
        .map_err(|e| {
            unsaid(AgentError::Exec {
                stage: "switch",
                message: e.to_string(),
            })
        })?;
    let Some(v) = line else {
        return Err(unsaid(AgentError::NoResult {
            stage: "switch",
            finished: finished.describe(),
        }));
    };
    let previous = v["previous"].as_str().map(str::to_string);
    if v["ok"] == true {
        Ok((previous, v["action"] == "already"))
    } else {
        Err(SwitchError {
            error: AgentError::Refused(v["error"].as_str().unwrap_or("failed").to_string()),
            previous,
        })
    }
}

/// One host of one service to `t.version`, or back to where it was.
pub(super) async fn restart<C: Connection>(
    env: &Env<'_>,
    service: usize,
    t: &Target,
    conn: &C,
) -> Result<Restarted, Failure> {
    let config = env.config;
    let t0 = Instant::now();
    let svc = &config.playbook.services[service];
    let v = vars(config, service, t.host, &t.version);
    let fail = |message: String| Failure {
        message,
        previous: None,
        back: Back::Untouched,
    };
    crate::transport::run_hooks(conn, &svc.before_restart, &v, "before_restart")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let command = switch_command(config, service, t.host, &t.version, &env.agent(t.host))
        .map_err(|e| fail(e.to_string()))?;
    let (previous, already, result) = match switch(conn, &command).await {
        Ok((p, a)) => (p, a, come_up(env, service, t, conn, &v).await),
        Err(e) => (e.previous, false, Err(Unsettled::Host(e.error.to_string()))),
    };
    let message = match result {
        Ok(()) => {
            let _ = env.store.clear_staging(&svc.name, &v["host"]).await;
            return Ok(Restarted {
                previous,
                already,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
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
        Err(Unsettled::Host(message)) => message,
    };
    let back = match previous.as_deref() {
        Some(p) if p != t.version => {
            Back::Switched(switch_back(env, service, t.host, p, conn).await)
        }
        _ => Back::Nowhere,
    };
    Err(Failure {
        message,
        previous,
        back,
    })
}

/// After its switch: the host's instance live on the target within
/// `health_deadline` and for `min_healthy_time`, then its `after_restart` hooks.
async fn come_up<C: Connection>(
    env: &Env<'_>,
    service: usize,
    t: &Target,
    conn: &C,
    v: &BTreeMap<&'static str, String>,
) -> Result<(), Unsettled> {
    let svc = &env.config.playbook.services[service];
    settle(
        env.store,
        &svc.name,
        &v["host"],
        &t.version,
        svc.health_deadline,
        svc.min_healthy_time,
    )
    .await?;
    crate::transport::run_hooks(conn, &svc.after_restart, v, "after_restart")
        .await
        .map_err(|e| Unsettled::Host(e.to_string()))
}

pub(super) async fn switch_back<C: Connection>(
    env: &Env<'_>,
    service: usize,
    h: usize,
    previous: &str,
    conn: &C,
) -> Result<String, BackError> {
    let (store, config) = (env.store, env.config);
    let svc = &config.playbook.services[service];
    // With the commands the host last ran `previous` with, not this playbook's: its
    // health check may be what failed.
    let command = switch_command(config, service, h, previous, &env.agent(h))? + " --restore";
    switch(conn, &command).await.map_err(|e| e.error)?;
    let host = &config.inventory.hosts[h].name;
    settle(
        store,
        &svc.name,
        host,
        previous,
        svc.health_deadline,
        Duration::ZERO,
    )
    .await?;
    Ok(previous.to_string())
}

/// Removes releases beyond `keep_releases` on the hosts that switched.
pub(super) async fn prune<C: Connection>(
    env: &Env<'_>,
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Record,
) {
    let (config, say) = (env.config, &env.say);
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
        let cmd = prune.command_line(&env.agent(h));
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
) -> Result<Releases, AgentError> {
    let cmd = ReleasesArgs {
        destination: destination(config, h).into(),
    }
    .command_line(agent);
    let mut out = String::new();
    let never = CancellationToken::new();
    let f = conn
        .exec(&cmd, &mut |l| out.push_str(l), &never)
        .await
        .map_err(|e| AgentError::Transport(e.to_string()))?;
    if !f.success() {
        return Err(AgentError::Exited(f.describe()));
    }
    serde_json::from_str(&out).map_err(|e| AgentError::Unreadable(e.to_string()))
}
