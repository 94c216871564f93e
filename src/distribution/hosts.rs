//! The agents: one command per host (save the metainfo, check the binary, start
//! `agent fetch`), a second round trip only to install rookery, each agent's JSON
//! lines read as progress and its result as the host's report.

use super::*;

/// What [`fetch_command`] prints when it cannot save the metainfo.
pub(super) const METAINFO_FAILED: &str = "metainfo_failed";

/// The one command that starts a host's fetch: it saves the metainfo read on stdin
/// at `torrent` (atomically: a temporary file, then a rename), then, with
/// `Some((path, binary))`, stops with a [`bootstrap::NEEDS_BINARY`] event unless
/// `path` holds that binary, and then runs `argv`.
pub(super) fn fetch_command(
    torrent: &str,
    check: Option<(&str, &Binary)>,
    argv: &[String],
) -> String {
    let q = |a: &str| shell_quote(a);
    let (dir, _) = torrent.rsplit_once('/').unwrap_or((".", torrent));
    let mut s = format!(
        "t={}; mkdir -p -- {} && cat > \"$t.tmp.$$\" && mv -f -- \"$t.tmp.$$\" \"$t\" \
         || {{ echo '{{\"event\":\"{METAINFO_FAILED}\"}}'; exit 1; }}; ",
        q(torrent),
        q(dir)
    );
    if let Some((path, bin)) = check {
        s.push_str(&bootstrap::guard(path, bin));
        s.push_str("; ");
    }
    s.push_str("exec");
    for a in argv {
        s.push(' ');
        s.push_str(&q(a));
    }
    s
}

/// A directory of rookery's own on host `h`: beside the agent binary over SSH, under
/// the host's root (which the inventory always sets) on the local transport.
pub(super) fn host_state_dir(config: &Config, h: usize, agent: &str) -> String {
    match &config.inventory.transport {
        inventory::Transport::Ssh(_) => match agent.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/../origin"),
            None => ".rookery/origin".to_string(),
        },
        inventory::Transport::Local { .. } => config.inventory.hosts[h]
            .root
            .clone()
            .unwrap_or_default()
            .join(".rookery/origin")
            .display()
            .to_string(),
    }
}

/// Names each host's feeders: the agents report bytes per peer address, and every
/// agent reports the address it listened on.
pub(super) fn name_feeders(reports: &mut [HostReport], origin: &str) {
    let mut names: HashMap<String, String> = reports
        .iter()
        .filter_map(|r| Some((r.listen.clone()?, r.host.clone())))
        .collect();
    names.insert(origin.to_string(), "origin".into());
    for r in reports.iter_mut() {
        r.fed_by = r
            .fetched_from
            .iter()
            .map(|(a, b)| (names.get(a).cloned().unwrap_or_else(|| a.clone()), *b))
            .collect();
    }
}

/// One host's fetch (step 4 of [`orchestrate`]), with everything it needs owned.
pub(super) struct HostJob<C> {
    pub(super) name: String,
    pub(super) dc: String,
    pub(super) rack: String,
    pub(super) conn: Arc<C>,
    /// [`fetch_command`] for this host.
    pub(super) command: String,
    pub(super) torrent: Arc<Vec<u8>>,
    /// Where the command saves the metainfo on the host.
    pub(super) torrent_file: String,
    /// This build, when hosts need it installed (SSH).
    pub(super) binary: Option<Binary>,
    pub(super) agent_path: String,
    /// Installs of the binary in flight at once: `--forks`.
    pub(super) installs: Arc<tokio::sync::Semaphore>,
    pub(super) install_timeout: Option<std::time::Duration>,
    pub(super) withdraw: Option<Tracker>,
    pub(super) tell_withdrawn: Option<super::origin::Withdrawer>,
    pub(super) events: progress::Sender,
    pub(super) cancel: CancellationToken,
}

impl<C: Connection> HostJob<C> {
    /// Runs the fetch command, installs the binary and runs it again if the host
    /// lacks this build, and reports.
    pub(super) async fn run(self) -> HostReport {
        let mut rep = HostReport {
            bootstrap: self.binary.as_ref().map(|_| Outcome::Present),
            ..HostReport::new(&self.name, &self.dc, &self.rack)
        };
        let t0 = Instant::now();
        let mut result: Option<serde_json::Value> = None;
        let (finished, said) = loop {
            self.events.stage(&self.name, "fetch");
            let (finished, mut said) = self.fetch_once().await;
            if let Some(r) = said.result.take() {
                result = Some(r);
            }
            let Some(bin) = self.binary.as_ref().filter(|_| said.needs_binary) else {
                break (finished, said);
            };
            if rep.bootstrap == Some(Outcome::Uploaded) {
                let e = std::io::Error::other(format!(
                    "{} still differs from this build after its upload",
                    self.agent_path
                ));
                break (Err(e), said);
            }
            match self.install(bin).await {
                Ok(o) => rep.bootstrap = Some(o),
                Err(e) => {
                    // Neither present nor uploaded: the field says nothing untrue.
                    rep.bootstrap = None;
                    rep.stage = Some(e.stage);
                    rep.error = Some(format!("{}: {}", e.stage, e.message));
                    break (Ok(Finished::default()), said);
                }
            }
        };
        rep.seconds = t0.elapsed().as_secs_f64();
        if rep.error.is_none() {
            read_result(
                &mut rep,
                finished,
                result,
                said.metainfo_failed,
                &self.torrent_file,
            );
        }
        // Its command is over: a host that failed is withdrawn (which also ends its
        // launch), one that finished is no longer waited for as starting.
        if let Some(tracker) = &self.withdraw {
            if rep.ok {
                tracker.launched(&self.name, true);
            } else {
                tracker.withdraw(&self.name);
            }
        } else if !rep.ok
            && let Some(tell) = &self.tell_withdrawn
        {
            tell(self.name.clone()).await;
        }
        let summary = match &rep.error {
            None => format!("in {:.1}s", rep.seconds),
            Some(e) => e.clone(),
        };
        self.events.send(Event::Done {
            host: self.name.clone(),
            ok: rep.ok,
            summary,
        });
        rep
    }

    /// The fetch command once: its progress lines become events; what else it says
    /// is returned.
    async fn fetch_once(&self) -> (std::io::Result<Finished>, Said) {
        let mut said = Said::default();
        let events = self.events.clone();
        let name = self.name.clone();
        let mut running = false;
        let mut on_line = |l: &str| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return;
            };
            match v["event"].as_str() {
                Some("progress") => {
                    if !running {
                        tracing::debug!(host = %name, "agent running");
                        if let Some(tracker) = &self.withdraw {
                            // The agent runs: it has `expiry` to announce.
                            tracker.launched(&name, false);
                        }
                    }
                    running = true;
                    events.send(Event::Bytes {
                        host: name.clone(),
                        bytes: v["bytes"].as_u64().unwrap_or(0),
                    })
                }
                Some("result") => said.result = Some(v),
                Some(bootstrap::NEEDS_BINARY) => said.needs_binary = true,
                Some(METAINFO_FAILED) => said.metainfo_failed = true,
                _ => {}
            }
        };
        tracing::debug!(host = %self.name, "fetch command going out");
        let finished = self
            .conn
            .exec_with_input(
                &self.command,
                Some(&self.torrent),
                &mut on_line,
                &self.cancel,
            )
            .await;
        (finished, said)
    }

    /// Puts this build on the host, `--forks` hosts at a time.
    async fn install(&self, bin: &Binary) -> Result<Outcome, HostError> {
        self.events.stage(&self.name, "bootstrap");
        let _permit = self.installs.acquire().await.expect("never closed");
        let install = bootstrap::install(
            self.conn.as_ref(),
            &self.name,
            &self.agent_path,
            bin,
            &self.cancel,
        );
        bootstrap::within(self.install_timeout, &self.name, install).await
    }
}

/// What a fetch command said besides its progress.
#[derive(Default)]
struct Said {
    result: Option<serde_json::Value>,
    needs_binary: bool,
    metainfo_failed: bool,
}

/// The host's report from how its fetch command ended and its result line.
fn read_result(
    rep: &mut HostReport,
    finished: std::io::Result<Finished>,
    result: Option<serde_json::Value>,
    metainfo_failed: bool,
    torrent_file: &str,
) {
    match (finished, result) {
        (Ok(f), _) if metainfo_failed => {
            rep.stage = Some(Stage::Upload);
            rep.error = Some(format!(
                "upload: metainfo to {torrent_file}: {}",
                f.describe()
            ));
        }
        (Err(e), _) => {
            rep.stage = Some(Stage::Fetch);
            rep.error = Some(format!("fetch: {e}"));
        }
        (Ok(f), Some(v)) => {
            rep.ok = v["ok"] == true && f.success();
            rep.seconds = v["seconds"].as_f64().unwrap_or(rep.seconds);
            rep.bytes_from_origin = v["bytes_from_origin"].as_u64().unwrap_or(0);
            rep.bytes_from_peers = v["bytes_from_peers"].as_u64().unwrap_or(0);
            rep.bytes_reused = v["bytes_reused"].as_u64().unwrap_or(0);
            rep.listen = v["listen"].as_str().map(str::to_string);
            if let Some(m) = v["fetched_from"].as_object() {
                rep.fetched_from = m
                    .iter()
                    .filter_map(|(a, b)| Some((a.clone(), b.as_u64()?)))
                    .collect();
            }
            if !rep.ok {
                rep.stage = Some(Stage::Fetch);
                rep.error = Some(match v["error"].as_str() {
                    Some(e) => format!("fetch: {e} ({})", f.describe()),
                    None => format!("fetch: {}", f.describe()),
                });
            }
        }
        (Ok(f), None) => {
            rep.stage = Some(Stage::Fetch);
            rep.error = Some(format!(
                "fetch: the agent reported nothing; {}",
                f.describe()
            ));
        }
    }
}

/// What host `h` is asked to fetch, and how.
pub(super) fn fetch_request(
    config: &Config,
    h: usize,
    at: &Where,
    version: &str,
) -> anyhow::Result<FetchArgs> {
    let dist = &config.playbook.distribution;
    let stripes = dist.sharing == crate::config::playbook::Sharing::Stripes;
    let origin = match at.origin.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 0),
        Err(_) => at.origin.parse().context("the origin's address")?,
    };
    let fetch = FetchArgs {
        swarm: SwarmArgs {
            torrent: at.torrent.into(),
            host: config.inventory.hosts[h].name.clone(),
            listen: Some(at.listen),
            tracker: Some(at.tracker.clone()),
            peers: Vec::new(),
            max_peers: Some(dist.max_peers),
            upload_limit: dist.upload_limit,
            download_limit: dist.download_limit,
            stripes: stripes.then_some(dist.stripes),
        },
        destination: config.host_destination(h),
        version: version.to_string(),
        origin: Some(origin),
        seed_window: Some(dist.seed_window),
        seed_mode: Some(dist.seed_mode),
        seed_window_max: Some(dist.seed_window_max),
        stall_timeout: Some(dist.stall_timeout),
        drop_after_write: false,
        lock_current: Vec::new(),
        lock_max: None,
        preload: false,
        foreground: false,
        after_fetch: after_fetch(config, h, version),
    };
    Ok(fetch.with_page_cache(&dist.page_cache))
}

/// Where a host's agent finds its swarm.
pub(super) struct Where<'a> {
    pub(super) torrent: &'a str,
    pub(super) listen: SocketAddr,
    pub(super) tracker: String,
    pub(super) origin: &'a str,
}

/// What every host's agent is started with.
pub(super) struct Launch<'a> {
    pub(super) config: &'a Config,
    pub(super) side: &'a OriginSide,
    pub(super) version: &'a str,
    pub(super) torrent: Arc<Vec<u8>>,
    pub(super) binary: Option<Binary>,
    /// Local hosts: each agent listens on a port the kernel picks.
    pub(super) local: bool,
    /// At most `--forks` installs of rookery at a time.
    pub(super) installs: Arc<tokio::sync::Semaphore>,
    pub(super) events: crate::progress::Sender,
    pub(super) cancel: &'a CancellationToken,
}

impl Launch<'_> {
    /// One job per host, feeders first: with hundreds of hosts the commands go out
    /// over seconds, and a host started before its feeder waits for it. One command
    /// per host carries the metainfo on its stdin, checks the rookery binary (SSH)
    /// and starts the agent; only a host without this build makes a second round
    /// trip, to install it.
    pub(super) fn spawn<C: Connection>(
        &self,
        mut conns: Vec<(usize, Arc<C>)>,
        agent: &(dyn Fn(usize) -> String + Sync),
    ) -> anyhow::Result<tokio::task::JoinSet<HostReport>> {
        let (config, side) = (self.config, self.side);
        let inv = &config.inventory;
        let dist = &config.playbook.distribution;
        if let Some(tracker) = &side.withdraw {
            conns.sort_by_cached_key(|(h, _)| tracker.start_rank(&inv.hosts[*h].name));
        }
        let mut jobs = tokio::task::JoinSet::new();
        if let Some(tracker) = &side.withdraw {
            // Every host is waited for while its agent starts, however long the
            // commands take to go out (see `Swarm::launching`).
            for (h, _) in &conns {
                tracker.launching(&inv.hosts[*h].name);
            }
        }
        for (h, conn) in conns {
            let host = &inv.hosts[h];
            let listen = if self.local {
                // Port 0: the agent's engine binds whatever the kernel gives it and
                // announces that. A port picked free here could be taken, by some
                // connection's ephemeral port, before the agent binds it.
                SocketAddr::from(([127, 0, 0, 1], 0))
            } else {
                match host.address.parse::<IpAddr>() {
                    Ok(a) => SocketAddr::new(a, dist.port),
                    Err(_) => SocketAddr::from(([0, 0, 0, 0], dist.port)),
                }
            };
            let torrent_file = torrent_path(config, h, self.version);
            let agent_path = agent(h);
            let at = Where {
                torrent: &torrent_file,
                listen,
                tracker: format!("{}?host={}", side.announce, host.name),
                origin: &side.origin,
            };
            let argv = fetch_request(config, h, &at, self.version)?.argv(&agent_path);
            let command = fetch_command(
                &torrent_file,
                self.binary.as_ref().map(|b| (agent_path.as_str(), b)),
                &argv,
            );
            let job = HostJob {
                name: host.name.clone(),
                dc: inv.datacenters[host.dc].name.clone(),
                rack: inv.racks[host.rack].name.clone(),
                conn,
                command,
                torrent: self.torrent.clone(),
                torrent_file,
                binary: self.binary.clone(),
                agent_path,
                installs: self.installs.clone(),
                install_timeout: inv.transport.command_timeout(),
                withdraw: side.withdraw.clone(),
                tell_withdrawn: side.tell_withdrawn.clone(),
                events: self.events.clone(),
                cancel: self.cancel.clone(),
            };
            jobs.spawn(job.run());
        }
        Ok(jobs)
    }
}

/// The playbook's `after_fetch` hooks for host `h`, every placeholder filled in.
fn after_fetch(config: &Config, h: usize, version: &str) -> Vec<String> {
    let inv = &config.inventory;
    let host = &inv.hosts[h];
    let dest = config.host_destination(h);
    let dest = std::path::absolute(&dest)
        .unwrap_or(dest)
        .display()
        .to_string();
    let vars = BTreeMap::from([
        ("host", host.name.clone()),
        ("address", host.address.clone()),
        ("dc", inv.datacenters[host.dc].name.clone()),
        ("rack", inv.rack_of(h).full_name.clone()),
        ("version", version.to_string()),
        ("release", format!("{dest}/releases/{version}")),
        ("current", format!("{dest}/current")),
        ("destination", dest),
    ]);
    config
        .playbook
        .hooks
        .after_fetch
        .iter()
        .map(|t| t.render(&vars))
        .collect()
}
