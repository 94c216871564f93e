//! `rookery agent fetch`: one host's side of a distribution.
//!
//! Download the release into a staging directory (starting from the previous release
//! so only changed pieces travel), let librqbit verify every piece, restore the
//! manifest, rename into `releases/<version>`, and report one JSON result line. Then
//! keep seeding for the seed window, which `daemon.rs` runs in the background so the
//! SSH command returns as soon as the copy is verified.
//!
//! Output is JSON lines on the event channel: `progress` lines while downloading and
//! exactly one `result` line, whose `ok` is true only for a complete, verified,
//! installed copy.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent::page_cache::Care;
use crate::agent::release::{self, Layout};
use crate::config::playbook::SeedMode;
use crate::torrent::engine::{self, PeerBytes};
use crate::torrent::metainfo::Metainfo;

/// Everything `agent fetch` is told.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub torrent: Vec<u8>,
    pub metainfo: Metainfo,
    pub destination: PathBuf,
    pub version: String,
    pub host: String,
    pub engine: engine::Options,
    /// The origin's address, to tell its bytes from other hosts' (port 0: any port).
    pub origin: Option<SocketAddr>,
    pub seed_window: Duration,
    pub seed_mode: SeedMode,
    pub seed_window_max: Duration,
    /// Give up when no byte arrives for this long.
    pub stall_timeout: Duration,
    pub page_cache: crate::config::playbook::PageCache,
    /// Shell commands run in the release once it is verified and installed.
    pub after_fetch: Vec<String>,
}

/// The one result line.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub event: &'static str,
    pub host: String,
    pub ok: bool,
    pub version: String,
    pub path: String,
    pub bytes: u64,
    pub seconds: f64,
    pub bytes_from_origin: u64,
    pub bytes_from_peers: u64,
    pub bytes_reused: u64,
    /// The address this agent listened on (what other agents' `fetched_from` name).
    pub listen: String,
    /// Bytes fetched from each peer address: who fed this host.
    pub fetched_from: std::collections::BTreeMap<String, u64>,
    /// The release was already installed; nothing was fetched.
    pub already_present: bool,
    /// The process that keeps seeding after this line (gone after the window).
    pub seeder_pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where events go: stdout, or the pipe to the foreground half of a daemonized agent.
pub type Events = Box<dyn Write + Send>;

fn emit(out: &mut Events, value: &impl Serialize) {
    // The reader may be gone (SSH session closed); the copy goes on regardless.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Runs the fetch, reports, drops `events` (so the foreground half can exit), then
/// seeds. Returns whether the copy is installed.
pub async fn run(f: Fetch, mut events: Events, cancel: CancellationToken) -> bool {
    let started = Instant::now();
    let layout = Layout::new(&f.destination);
    let mut report = Report {
        event: "result",
        host: f.host.clone(),
        version: f.version.clone(),
        path: layout.release(&f.version).display().to_string(),
        bytes: f.metainfo.total_length(),
        seeder_pid: std::process::id(),
        listen: f.engine.listen.to_string(),
        ..Report::default()
    };
    let outcome = download(&f, &layout, &mut events, &cancel).await;
    report.seconds = started.elapsed().as_secs_f64();
    let seeding = match outcome {
        Ok((counts, reused, seeding)) => {
            report.ok = true;
            report.already_present = seeding.is_none();
            report.bytes_from_origin = counts.from_origin;
            report.bytes_from_peers = counts.from_peers;
            report.bytes_reused = reused;
            if let Some((session, torrent)) = &seeding {
                if let Some(port) = session.announce_port() {
                    report.listen = SocketAddr::new(f.engine.listen.ip(), port).to_string();
                }
                report.fetched_from = engine::peer_counters(torrent)
                    .into_iter()
                    .filter(|p| p.fetched > 0)
                    .map(|p| (p.addr, p.fetched))
                    .collect();
            }
            seeding
        }
        Err(e) => {
            // The log says why too: it is what an operator opens on the host.
            tracing::error!("the fetch failed: {e:#}");
            report.error = Some(format!("{e:#}"));
            None
        }
    };
    if report.ok
        && let Err(e) = after_fetch(&f, &layout)
    {
        tracing::error!("{e}");
        report.ok = false;
        report.error = Some(e.to_string());
    }
    emit(&mut events, &report);
    drop(events);
    if let Some((session, torrent)) = seeding {
        seed(&f, &torrent, &cancel).await;
        // librqbit never announces `stopped`: tell the tracker, so hosts fed by this
        // one move on at their next announce instead of waiting it out.
        if let Some(url) = &f.engine.tracker {
            // The port bound, which differs from `--listen` when that asked for 0.
            let port = session
                .listen_addr()
                .map_or(f.engine.listen.port(), |a| a.port());
            // Bounded: a stalled tracker must not keep this seeder serving past its
            // window (its successors find it gone at their next announce anyway).
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                crate::tracker::client::announce_stopped(url, &torrent.info_hash().0, port),
            )
            .await;
        }
        session.stop().await;
    }
    report.ok
}

type Seeding = (Arc<librqbit::Session>, Arc<librqbit::ManagedTorrent>);

/// Why an `after_fetch` hook failed: it could not start, or it exited non-zero.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("after_fetch hook `{command}`: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    #[error("after_fetch hook `{command}`: {status}{}", tail.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        /// The last line it wrote on stderr.
        tail: Option<String>,
    },
}

/// Runs the `after_fetch` hooks in the installed release, in order; the first that
/// fails stops the rest and says why.
fn after_fetch(f: &Fetch, layout: &Layout) -> Result<(), HookError> {
    let release = layout.release(&f.version);
    for cmd in &f.after_fetch {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&release)
            .env("ROOKERY_HOST", &f.host)
            .env("ROOKERY_VERSION", &f.version)
            .env("ROOKERY_RELEASE", &release)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| HookError::Start {
                command: cmd.clone(),
                source,
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail = stderr.lines().last().unwrap_or("").trim();
            return Err(HookError::Failed {
                command: cmd.clone(),
                status: out.status,
                tail: (!tail.is_empty()).then(|| tail.to_string()),
            });
        }
    }
    Ok(())
}

async fn download(
    f: &Fetch,
    layout: &Layout,
    events: &mut Events,
    cancel: &CancellationToken,
) -> anyhow::Result<(PeerBytes, u64, Option<Seeding>)> {
    let total = f.metainfo.total_length();
    // The switch and the supervisor read the release's hot set from here.
    crate::agent::page_cache::HotSetSpec::of(&f.page_cache)
        .save(layout, &f.version)
        .with_context(|| {
            format!(
                "keeping the hot set of {} in {}",
                f.version,
                layout.logs().display()
            )
        })?;
    if layout.release(&f.version).is_dir() {
        // Installed by an earlier run: the rename happens only after verification.
        return Ok((PeerBytes::default(), total, None));
    }
    let began = Instant::now();
    let staging = layout.staging(&f.version);
    let fresh = !staging.exists();
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let started = start(f, layout, &staging, cancel).await;
    if started.is_err() && fresh {
        // Refused before the engine wrote anything: leave nothing behind. A staging
        // directory that holds downloaded pieces is kept for the next fetch.
        let _ = std::fs::remove_dir_all(&staging);
    }
    let (storage, session, torrent, _hot) = started?;
    tracing::info!(elapsed = ?began.elapsed(), "engine started");
    wait(f, &torrent, events, cancel).await?;
    tracing::info!(elapsed = ?began.elapsed(), "verified");

    let live = torrent.live().context("the torrent stopped")?;
    let fetched = live.stats_snapshot().downloaded_and_checked_bytes;
    let counts = engine::peer_bytes(&torrent, f.origin);
    let reused = total.saturating_sub(fetched);
    (|| {
        release::prune(&staging, &f.metainfo)?;
        // Seeding goes on from the installed release: read-only, so that its
        // programs can be executed (see `SealableFactory`).
        storage.seal();
        release::restore_manifest(&staging, &f.metainfo)?;
        f.page_cache.after_write(&staging, &f.metainfo)?;
        release::install(layout, &f.version)?;
        // Without the record the next release copies and checks these files
        // instead of linking them: slower, not wrong.
        if let Err(e) = release::record_installed(layout, &f.version, &f.torrent, &f.metainfo) {
            tracing::warn!("recording the files of {}: {e}", f.version);
        }
        Ok::<(), std::io::Error>(())
    })()
    .with_context(|| format!("installing {}", layout.release(&f.version).display()))?;
    tracing::info!(elapsed = ?began.elapsed(), "installed");
    Ok((counts, reused, Some((session, torrent))))
}

/// The engine on the staging directory, and the current release's hot set, locked
/// in memory until the download is over.
type Started = (
    crate::torrent::storage::SealableFactory,
    Arc<librqbit::Session>,
    Arc<librqbit::ManagedTorrent>,
    Option<crate::agent::page_cache::HotSet>,
);

/// Readies the staging directory (cleaned, seeded from the previous release) and
/// starts the engine on it.
async fn start(
    f: &Fetch,
    layout: &Layout,
    staging: &Path,
    cancel: &CancellationToken,
) -> anyhow::Result<Started> {
    let began = Instant::now();
    let staging = staging.to_path_buf();
    release::prune(&staging, &f.metainfo)
        .with_context(|| format!("cleaning {}", staging.display()))?;
    let mut seeded = release::Seeded::default();
    if let Some(previous) = layout.previous(&f.version) {
        // Its metainfo, saved beside the logs when it was fetched, and its files'
        // looks, recorded when it was installed, if still there.
        let name = previous
            .file_name()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        let previous_meta = std::fs::read(layout.metainfo(&name))
            .ok()
            .and_then(|b| Metainfo::from_bytes(&b).ok());
        let looks = release::recorded_looks(layout, &name);
        seeded = release::seed_from_previous(
            &staging,
            &previous,
            previous_meta.as_ref(),
            looks.as_ref(),
            &f.metainfo,
        )
        .with_context(|| {
            format!(
                "reusing files of {} in {}",
                previous.display(),
                staging.display()
            )
        })?;
    }
    tracing::info!(
        elapsed = ?began.elapsed(),
        copied = seeded.copied,
        linked = seeded.linked_bytes(&f.metainfo),
        "staging ready"
    );
    let hot = f
        .page_cache
        .lock_hot_set(layout)
        .context("locking the hot set of the current release")?;
    let session = engine::session(&f.engine, &staging, cancel.child_token()).await?;
    // Linked files hold verified bytes: the engine's check skips their pieces.
    let opts = engine::Options {
        verified: seeded
            .linked
            .contains(&true)
            .then(|| release::linked_pieces(&f.metainfo, &seeded.linked)),
        ..f.engine.clone()
    };
    let storage = crate::torrent::storage::SealableFactory::with_linked(&staging, seeded.linked);
    let torrent = engine::add(
        &session,
        &opts,
        &f.torrent,
        &staging,
        Some(storage.boxed_factory()),
    )
    .await?;
    Ok((storage, session, torrent, hot))
}

/// A fetch gives up when its tracker has been silent this long and nothing arrived
/// meanwhile: the controller (and the deploy) that started it is gone.
pub const TRACKER_GONE: Duration = Duration::from_secs(15);

/// Waits for a complete, verified copy, reporting progress every second.
async fn wait(
    f: &Fetch,
    torrent: &librqbit::ManagedTorrent,
    events: &mut Events,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let total = f.metainfo.total_length();
    let mut last_progress = (0u64, Instant::now());
    let mut last_logged = (0u64, Instant::now());
    let mut feeders: Vec<SocketAddr> = Vec::new();
    let mut tracker_heard = Instant::now();
    let mut done = std::pin::pin!(torrent.wait_until_completed());
    // Every second: progress, the stall check, the tracker's feeders. While some
    // stripe still waits for its feeder to announce, the tracker is asked every
    // 200 ms instead: each level of a tree would otherwise add up to a second to the
    // start of everything below it.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut ticks = 0u64;
    let mut waiting = false;
    let mut stalls = Stalls::default();
    loop {
        tokio::select! {
            r = &mut done => return r.context("the engine failed"),
            _ = cancel.cancelled() => anyhow::bail!("interrupted"),
            _ = tick.tick() => {}
        }
        let second = ticks.is_multiple_of(5);
        ticks += 1;
        // The engine's per-peer counters, read once a tick for the stall check and
        // the log line.
        let peers = if feeders.is_empty() && !second {
            Vec::new()
        } else {
            engine::peer_counters(torrent)
        };
        // Feeders gone (connection dropped) or stalled (owing blocks, sending
        // nothing) are looked for on every tick and reported at once.
        let lost = if feeders.is_empty() {
            Vec::new()
        } else {
            let striped = f.engine.stripes.is_some();
            stalls.lost(&peers, &feeders, striped, Instant::now())
        };
        if !second && !waiting && lost.is_empty() {
            continue;
        }
        let stats = torrent.stats();
        if let Some(e) = stats.error {
            anyhow::bail!("the engine failed: {}", one_line(&e));
        }
        if let Some(url) = &f.engine.tracker {
            let followed = follow_feeders(url, torrent, &f.host, &lost, &mut feeders).await;
            waiting = followed.waiting;
            if followed.answered {
                tracker_heard = Instant::now();
            } else if tracker_heard.elapsed() > TRACKER_GONE
                && last_progress.1.elapsed() > TRACKER_GONE
            {
                // The tracker lives in the controller that started this fetch (or is
                // the deploy's own); silent, with nothing arriving, the deploy is gone.
                // Waiting out the stall timeout would only keep retrying dead peers.
                anyhow::bail!(
                    "the tracker {} has not answered for {} and no piece arrived meanwhile (at {} of {} bytes): the deploy that started this fetch is gone; the partial copy stays staged for the next run",
                    url,
                    crate::config::units::format_duration(TRACKER_GONE),
                    stats.progress_bytes,
                    total
                );
            }
        }
        if !second {
            continue;
        }
        log_progress(&peers, stats.progress_bytes, total, &mut last_logged);
        emit(
            events,
            &serde_json::json!({
                "event": "progress",
                "host": f.host,
                "bytes": stats.progress_bytes,
                "total": total,
            }),
        );
        if stats.progress_bytes > last_progress.0 {
            last_progress = (stats.progress_bytes, Instant::now());
        } else if last_progress.1.elapsed() > f.stall_timeout {
            anyhow::bail!(
                "no progress for {} at {} of {} bytes; no peer could send the missing pieces",
                crate::config::units::format_duration(f.stall_timeout),
                stats.progress_bytes,
                total
            );
        }
    }
}

/// librqbit reports a torrent's error as anyhow's `{:?}`: the message, then
/// "Caused by:" and a numbered line per cause (and a backtrace, if one was captured).
/// The result line wants the whole chain on one line, as `{:#}` would give it: the
/// cause at the end is what names the file and the reason.
fn one_line(debug: &str) -> String {
    debug
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Stack backtrace:"))
        .filter(|l| !l.is_empty() && *l != "Caused by:")
        .map(|l| match l.split_once(": ") {
            Some((n, rest)) if n.bytes().all(|b| b.is_ascii_digit()) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// Pipeline sharing: keeps the engine's outgoing connections to exactly the feeders
/// the tracker last named for this host (`current`, the list applied last, is for
/// the log). Each tracker answer only adds peers to librqbit, so without this every
/// feeder a host was ever given stayed connected: the in-order picker spread requests
/// over all of them, and the hosts that fed several successors split their upload
/// (measured with bench/swarm.sh: 2.3 origin copies and 3.2 x S/C for 8 hosts). An
/// empty or missing answer changes nothing, so a tracker hiccup never leaves the host
/// without peers. The poll also names the feeders `lost` ([`Stalls::lost`]), for a
/// faster re-link.
async fn follow_feeders(
    url: &str,
    torrent: &librqbit::ManagedTorrent,
    host: &str,
    lost: &[SocketAddr],
    current: &mut Vec<SocketAddr>,
) -> Followed {
    let hash = torrent.info_hash().0;
    let asked = tokio::time::timeout(
        Duration::from_millis(800),
        crate::tracker::client::status(url, &hash, host, lost),
    );
    let Ok(Ok(status)) = asked.await else {
        return Followed {
            answered: false,
            waiting: false,
        };
    };
    // A stripe without a feeder, or a feeder lost: ask again in 200 ms.
    let waiting = status
        .stripes
        .as_ref()
        .is_some_and(|s| s.iter().any(Option::is_none))
        || !lost.is_empty();
    let answered = Followed {
        answered: true,
        waiting,
    };
    let Some(mut feeders) = status.feeders.filter(|f| !f.is_empty()) else {
        return answered;
    };
    feeders.sort();
    let Some(live) = torrent.live() else {
        return answered;
    };
    // Striped sharing: each feeder is asked only for the stripes it was named for,
    // so it uploads what it forwards and nothing else it happens to hold.
    live.set_stripes(
        status.stripes.as_ref().map(|per_stripe| {
            stripe_masks(per_stripe, status.helpers.as_deref().unwrap_or_default())
        }),
    );
    // Applied every time, not only on a change: librqbit may have added a feeder of
    // an answer that came and went between two calls.
    live.retain_outgoing_peers(&feeders);
    if feeders != *current {
        if let Some(h) = status.helpers.as_ref().filter(|h| !h.is_empty()) {
            tracing::info!("helped by {h:?}, a rack-mate that has its copy");
        }
        tracing::info!("feeders now {feeders:?} (were {current:?})");
        *current = feeders;
    }
    answered
}

/// A feeder that owes blocks and has sent nothing for this long is stalled: at the
/// slowest stripe this agent meets (a 16 KiB block at an eighth of 20 Mbit/s) a
/// block takes 0.05 s.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// What each feeder had sent when last seen to move, for [`Stalls::lost`].
#[derive(Default)]
struct Stalls {
    moved: std::collections::HashMap<SocketAddr, (u64, Instant)>,
    /// The last report, not logged again while it stands.
    reported: Vec<SocketAddr>,
}

impl Stalls {
    /// The feeders among `current` that look gone: the connection of one that sent
    /// something dropped (a killed agent's connections drop at once), or a live one
    /// has sent nothing for [`STALLED_AFTER`] (a host that lost power or its
    /// network, or a frozen agent, leaves its connections open). With striped trees
    /// only one that owes blocks counts: a stripe complete here leaves its feeder
    /// nothing to send while the others go on. In the chain a host is usually right
    /// behind its feeder, asking for nothing until the next piece is announced, so
    /// one that had been sending and stopped counts. The tracker gives a reported
    /// feeder up only once it is silent there too (see
    /// [`crate::tracker::swarm::LOST_SILENT_AFTER`]), so a feeder that is alive (slow,
    /// or itself starved upstream) is not re-linked around.
    fn lost(
        &mut self,
        peers: &[engine::PeerCounters],
        current: &[SocketAddr],
        striped: bool,
        now: Instant,
    ) -> Vec<SocketAddr> {
        let mut dropped = Vec::new();
        let mut stalled = Vec::new();
        for p in peers {
            let Ok(a) = p.addr.parse::<SocketAddr>() else {
                continue;
            };
            if !current.contains(&a) {
                continue;
            }
            if p.state != "live" {
                if p.fetched > 0 {
                    dropped.push(a);
                }
                continue;
            }
            let moved = self.moved.entry(a).or_insert((p.fetched, now));
            let owes = if striped {
                p.inflight > 0
            } else {
                p.fetched > 0
            };
            if p.fetched != moved.0 || !owes {
                *moved = (p.fetched, now);
            } else if now.duration_since(moved.1) >= STALLED_AFTER {
                stalled.push(a);
            }
        }
        self.moved.retain(|a, _| current.contains(a));
        let mut lost: Vec<SocketAddr> = dropped.iter().chain(&stalled).copied().collect();
        lost.sort();
        if lost != self.reported {
            if !dropped.is_empty() {
                tracing::info!("lost the connection to feeder(s) {dropped:?}");
            }
            if !stalled.is_empty() {
                tracing::info!(
                    "feeder(s) {stalled:?} stalled: nothing sent for {}{}",
                    crate::config::units::format_duration(STALLED_AFTER),
                    if striped { " with blocks owed" } else { "" }
                );
            }
            self.reported = lost.clone();
        }
        lost
    }
}

/// What a poll of the tracker gave.
struct Followed {
    answered: bool,
    /// Striped sharing: some stripe's feeder has not announced yet.
    waiting: bool,
}

/// The engine's per-peer stripe masks from the tracker's feeder of each stripe; a
/// helper (a finished rack-mate) may be asked for every stripe.
fn stripe_masks(per_stripe: &[Option<SocketAddr>], helpers: &[SocketAddr]) -> librqbit::Stripes {
    let mut by_peer = std::collections::HashMap::new();
    for (s, feeder) in per_stripe.iter().enumerate().take(64) {
        if let Some(a) = feeder {
            *by_peer.entry(*a).or_insert(0u64) |= 1u64 << s;
        }
    }
    let all = match per_stripe.len().min(64) {
        64 => u64::MAX,
        n => (1u64 << n) - 1,
    };
    for a in helpers {
        by_peer.insert(*a, all);
    }
    librqbit::Stripes {
        count: per_stripe.len().min(64) as u32,
        by_peer,
    }
}

/// One line per tick in the agent's log: progress, rate, and what each peer has sent
/// and taken so far (`addr state fetched/uploaded MiB`), to see who fed whom.
fn log_progress(peers: &[engine::PeerCounters], bytes: u64, total: u64, last: &mut (u64, Instant)) {
    let dt = last.1.elapsed().as_secs_f64().max(1e-3);
    let rate = bytes.saturating_sub(last.0) as f64 / dt;
    *last = (bytes, Instant::now());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let peers: Vec<String> = peers
        .iter()
        .map(|p| {
            format!(
                "{} {} {:.0}/{:.0}",
                p.addr,
                p.state,
                mib(p.fetched),
                mib(p.uploaded)
            )
        })
        .collect();
    tracing::info!(
        "{:.0}/{:.0} MiB at {:.1} MiB/s; peers (fetched/uploaded MiB): {}",
        mib(bytes),
        mib(total),
        rate / (1 << 20) as f64,
        peers.join(", ")
    );
}

/// Keeps serving the release for the seed window, then returns.
///
/// `fixed`: for `seed_window`. `adaptive` (with a tracker): until the tracker says
/// that every host of this one's rack has the copy and none is fed by this one, and
/// for `seed_window_max` at most. A tracker that stops answering ends the wait (the
/// deploy that ran it is over), falling back to the fixed window; one slow answer
/// does not (see [`leave`]).
async fn seed(f: &Fetch, torrent: &librqbit::ManagedTorrent, cancel: &CancellationToken) {
    use crate::config::units::format_duration as d;
    let started = Instant::now();
    let hash = torrent.info_hash().0;
    let window = Window {
        mode: f.seed_mode,
        window: f.seed_window,
        max: f.seed_window_max,
    };
    let adaptive = f.seed_mode == SeedMode::Adaptive && f.engine.tracker.is_some();
    let bound = if adaptive {
        tracing::info!(
            "seeding until every host of the rack has the copy and none is fed by this one, for at most {}",
            d(f.seed_window_max)
        );
        f.seed_window_max
    } else {
        tracing::info!("seeding for {}", d(f.seed_window));
        f.seed_window
    };
    let mut answered = started;
    let mut last: Option<(bool, usize)> = None;
    let why = loop {
        // Polled every second whatever the mode: the poll is also how the tracker
        // knows this seeder is alive (striped trees re-link the children of a parent
        // silent for two seconds).
        let heard = match &f.engine.tracker {
            Some(url) => match tokio::time::timeout(
                Duration::from_millis(800),
                crate::tracker::client::status(url, &hash, &f.host, &[]),
            )
            .await
            {
                Ok(Ok(s)) => {
                    answered = Instant::now();
                    Heard::Status(s)
                }
                Ok(Err(e)) => Heard::Nothing { gone: refused(&e) },
                Err(_) => Heard::Nothing { gone: false },
            },
            None => Heard::NoTracker,
        };
        if let (true, Heard::Status(s)) = (adaptive, &heard) {
            let now = (s.rack_complete, s.waiting_on_me);
            if last != Some(now) && now != (true, 0) {
                tracing::info!(
                    "seeding: the rack {}; {} host(s) fed by this one",
                    if s.rack_complete {
                        "has its copies"
                    } else {
                        "lacks copies"
                    },
                    s.waiting_on_me
                );
            }
            last = Some(now);
        }
        let elapsed = started.elapsed();
        if let Some(why) = leave(window, elapsed, &heard, answered.elapsed()) {
            break why.describe(window);
        }
        let pause = Duration::from_secs(1).min(bound.saturating_sub(elapsed));
        tokio::select! {
            _ = cancel.cancelled() => break "interrupted".to_string(),
            _ = tokio::time::sleep(pause.max(Duration::from_millis(10))) => {}
        }
    };
    tracing::info!(
        "leaving the swarm after seeding {:.1}s: {why}",
        started.elapsed().as_secs_f64()
    );
}

/// Whether a tracker request failed because nothing listens at its address: the
/// tracker is not running any more, rather than slow.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// What one `/status` poll of the tracker gave a seeder.
#[derive(Debug)]
enum Heard {
    /// No tracker to ask (`--peer` only).
    NoTracker,
    Status(crate::tracker::swarm::Status),
    /// No answer. `gone`: the tracker refused the connection, so it is not running
    /// any more (the deploy that ran it is over); otherwise it may only be slow.
    Nothing {
        gone: bool,
    },
}

/// How long a seeder stays: the seed-mode flags of [`Fetch`].
#[derive(Debug, Clone, Copy)]
struct Window {
    mode: SeedMode,
    window: Duration,
    max: Duration,
}

/// Why a seeder leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leave {
    /// `fixed` (or no tracker to ask): `seed_window` is over.
    Window,
    /// `adaptive`: every host of the rack has the copy and none is fed by this one.
    RackComplete,
    /// `adaptive`: `seed_window_max` is reached, whatever the rack.
    Max,
    /// `adaptive`: `seed_window` is over and the tracker is gone (`refused` the
    /// connection, or silent for [`TRACKER_GONE`]).
    TrackerGone { refused: bool },
}

impl Leave {
    /// For the log.
    fn describe(self, w: Window) -> String {
        use crate::config::units::format_duration as d;
        let window = format!("the seed window of {} is over", d(w.window));
        match self {
            Leave::Window => window,
            Leave::RackComplete => {
                "every host of the rack has the copy and none is fed by this one".into()
            }
            Leave::Max => format!(
                "seed_window_max {} reached (the rack may still lack copies)",
                d(w.max)
            ),
            Leave::TrackerGone { refused: true } => {
                format!("{window} and the tracker is gone (it refused the connection)")
            }
            Leave::TrackerGone { refused: false } => format!(
                "{window} and the tracker is gone (silent for {})",
                d(TRACKER_GONE)
            ),
        }
    }
}

/// Whether a seeder that has seeded for `elapsed`, and last heard from its tracker
/// `silent` ago, leaves now, and why.
///
/// `adaptive` with a tracker: it leaves once every host of its rack has the copy and
/// none is fed by it, at `seed_window_max` at the latest. Without an answer it falls
/// back to the fixed window, but only once the tracker is gone: it refused the
/// connection, or has been silent for [`TRACKER_GONE`]. One missed answer is not
/// enough: a tracker busy with a burst of polls may take longer than the 800 ms a
/// poll waits, and every seeder past its `seed_window` would leave at once while a
/// rack-mate still needs it.
fn leave(w: Window, elapsed: Duration, heard: &Heard, silent: Duration) -> Option<Leave> {
    let window_over = elapsed >= w.window;
    match heard {
        _ if w.mode == SeedMode::Fixed || matches!(heard, Heard::NoTracker) => {
            window_over.then_some(Leave::Window)
        }
        _ if elapsed >= w.max => Some(Leave::Max),
        Heard::Status(s) if s.rack_complete && s.waiting_on_me == 0 => Some(Leave::RackComplete),
        Heard::Nothing { gone } if window_over && (*gone || silent >= TRACKER_GONE) => {
            Some(Leave::TrackerGone { refused: *gone })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Heard, Leave, TRACKER_GONE, Window, leave};
    use crate::config::playbook::SeedMode;
    use crate::tracker::swarm::Status;

    const S: Duration = Duration::from_secs(1);

    fn status(rack_complete: bool, waiting_on_me: usize) -> Heard {
        Heard::Status(Status {
            rack_complete,
            waiting_on_me,
            complete: 1,
            incomplete: 1,
            feeders: None,
            stripes: None,
            helpers: None,
        })
    }

    fn window(mode: SeedMode) -> Window {
        Window {
            mode,
            window: 30 * S,
            max: 300 * S,
        }
    }

    #[test]
    fn a_fixed_seeder_leaves_at_its_window_whatever_the_rack() {
        let w = window(SeedMode::Fixed);
        for heard in [status(false, 2), status(true, 0), Heard::NoTracker] {
            assert_eq!(leave(w, 29 * S, &heard, S), None, "{heard:?}");
            assert_eq!(
                leave(w, 30 * S, &heard, S),
                Some(Leave::Window),
                "{heard:?}"
            );
        }
    }

    #[test]
    fn an_adaptive_seeder_stays_until_its_rack_is_complete_and_nobody_waits_on_it() {
        let w = window(SeedMode::Adaptive);
        // A rack-mate lacks the copy, or a host is fed by this one: past the window.
        assert_eq!(leave(w, 31 * S, &status(false, 0), S), None);
        assert_eq!(leave(w, 299 * S, &status(false, 1), S), None);
        assert_eq!(leave(w, 299 * S, &status(true, 1), S), None);
        // Done: within the window too.
        assert_eq!(
            leave(w, 2 * S, &status(true, 0), S),
            Some(Leave::RackComplete)
        );
        // Never past the max.
        for heard in [status(false, 3), Heard::Nothing { gone: false }] {
            assert_eq!(leave(w, 300 * S, &heard, S), Some(Leave::Max), "{heard:?}");
        }
        // Without a tracker to ask, the fixed window.
        assert_eq!(leave(w, 29 * S, &Heard::NoTracker, S), None);
        assert_eq!(leave(w, 30 * S, &Heard::NoTracker, S), Some(Leave::Window));
    }

    #[test]
    fn an_adaptive_seeder_falls_back_to_its_window_only_once_the_tracker_is_gone() {
        let w = window(SeedMode::Adaptive);
        let slow = Heard::Nothing { gone: false };
        let refused = Heard::Nothing { gone: true };
        // A missed answer or two: the tracker may only be busy.
        assert_eq!(leave(w, 40 * S, &slow, 3 * S), None);
        assert_eq!(
            leave(w, 40 * S, &slow, TRACKER_GONE),
            Some(Leave::TrackerGone { refused: false })
        );
        assert_eq!(
            leave(w, 40 * S, &refused, S),
            Some(Leave::TrackerGone { refused: true })
        );
        // Within the window it stays either way.
        assert_eq!(leave(w, 29 * S, &refused, TRACKER_GONE), None);
    }

    #[tokio::test]
    async fn a_tracker_that_is_not_running_is_told_from_a_slow_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is closed: nothing listens on the port now.
        let url = format!("http://127.0.0.1:{port}/announce?host=a");
        let e = crate::tracker::client::status(&url, &[7; 20], "a", &[])
            .await
            .unwrap_err();
        assert!(super::refused(&e), "{e:#}");
        assert!(!super::refused(&anyhow::anyhow!(
            "the tracker did not answer in time"
        )));
    }

    #[test]
    fn an_engine_error_chain_becomes_one_line() {
        let e = anyhow::anyhow!("Is a directory (os error 21)")
            .context("opening /d/x.py")
            .context("error writing to file 15");
        assert_eq!(
            super::one_line(&format!("{e:?}")),
            "error writing to file 15: opening /d/x.py: Is a directory (os error 21)"
        );
    }

    #[test]
    fn a_helper_may_be_asked_for_every_stripe_and_a_parent_for_its_own() {
        let a = |p: u16| std::net::SocketAddr::from(([10, 0, 0, 1], p));
        let m = super::stripe_masks(&[Some(a(1)), Some(a(2)), Some(a(1)), None], &[a(9)]);
        assert_eq!(m.count, 4);
        assert_eq!(m.by_peer[&a(1)], 0b0101);
        assert_eq!(m.by_peer[&a(2)], 0b0010);
        assert_eq!(m.by_peer[&a(9)], 0b1111);
        assert_eq!(m.by_peer.len(), 3);
    }
}
