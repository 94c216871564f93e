//! The BitTorrent engine as rookery runs it: one librqbit session per process, with
//! everything that reaches beyond the deploy's own swarm turned off.
//!
//! DHT, local service discovery, UPnP, uTP and PEX (the torrents are private) are off;
//! peers come only from rookery's tracker or from `--peer`. The session listens on
//! one chosen address (librqbit listens on nothing unless told), keeps a bounded
//! number of peers and obeys the playbook's rate caps. The peer-connection timeouts
//! are tuned for the pipeline: a host waiting for its feeder to verify the next
//! piece is idle, not dead, so keep-alives are frequent and the read timeout long.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use librqbit::{
    AddTorrent, AddTorrentOptions, ConnectionOptions, ListenerMode, ListenerOptions,
    ManagedTorrent, PeerConnectionOptions, Session, SessionOptions, generate_peer_id,
    limits::LimitsConfig, storage::BoxStorageFactory,
};
use tokio_util::sync::CancellationToken;

/// Peer-id prefix of rookery's agents and origin (Azureus style).
pub const PEER_ID_PREFIX: &[u8; 8] = b"-RK0100-";

/// How one process takes part in a swarm.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub max_peers: u32,
    /// Bytes per second; `None` = unlimited.
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    /// Announce URL (with `host=NAME`), if any.
    pub tracker: Option<String>,
    /// Peers to connect to without a tracker.
    pub peers: Vec<SocketAddr>,
    /// Striped fetching over this many stripes: no peer is asked for anything until
    /// the tracker names its stripes (see `fetch.rs`).
    pub stripes: Option<u32>,
    /// Uploads kept within this many pieces of each other (the origin of striped
    /// trees, [`super::in_step`]).
    pub in_step: Option<u32>,
    /// Pieces known good without reading them, as a bitfield ([`bitfield`]): an
    /// origin's every piece (it just hashed them to make the metainfo), or the pieces
    /// a host hard-linked from a release it verified before. The engine's first check
    /// takes them as present and reads only the others (vendored librqbit patch 13).
    pub verified: Option<Vec<u8>>,
}

/// Block requests (16 KiB each) kept outstanding per peer: 8 MiB in flight. librqbit's
/// default of 128 (2 MiB) caps one connection at 2 MiB per round trip, and on a
/// shaped link whose queue holds 50 ms each way (a host's requests wait behind the
/// data it uploads to its successor) that was 13 to 20 MiB/s on a 48 MiB/s link
/// (bench/swarm.sh). librqbit announces no `reqq`, so peers accept this window.
const REQUEST_WINDOW: usize = 512;

fn peer_options() -> PeerConnectionOptions {
    PeerConnectionOptions {
        connect_timeout: Some(Duration::from_secs(5)),
        read_write_timeout: Some(Duration::from_secs(60)),
        keep_alive_interval: Some(Duration::from_secs(5)),
        max_request_window: Some(REQUEST_WINDOW),
    }
}

fn limit(bps: Option<u64>) -> Option<NonZeroU32> {
    bps.and_then(|b| NonZeroU32::new(b.min(u32::MAX as u64) as u32))
}

/// Starts a session listening on `opts.listen`; `output` is where torrents go unless
/// a storage factory says otherwise.
pub async fn session(
    opts: &Options,
    output: &Path,
    cancel: CancellationToken,
) -> anyhow::Result<Arc<Session>> {
    let session_opts = SessionOptions {
        dht: None,
        disable_trackers: false,
        fastresume: false,
        persistence: None,
        peer_id: Some(generate_peer_id(PEER_ID_PREFIX)),
        listen: Some(ListenerOptions {
            mode: ListenerMode::TcpOnly,
            listen_addr: opts.listen,
            enable_upnp_port_forwarding: false,
            // librqbit announces no port for a loopback listener unless told.
            announce_port: Some(opts.listen.port()),
            ipv4_only: opts.listen.is_ipv4(),
            // Uploads kept in step must leave as they are let through.
            tcp_notsent_lowat: opts.in_step.map(|_| super::in_step::NOTSENT_LOWAT),
            ..ListenerOptions::default()
        }),
        connect: Some(ConnectionOptions {
            proxy_url: None,
            enable_tcp: true,
            peer_opts: Some(peer_options()),
        }),
        cancellation_token: Some(cancel),
        ratelimits: LimitsConfig {
            upload_bps: limit(opts.upload_limit),
            download_bps: limit(opts.download_limit),
        },
        peer_limit: Some(opts.max_peers as usize),
        disable_local_service_discovery: true,
        ipv4_only: opts.listen.is_ipv4(),
        client_name_and_version: Some(format!("rookery {}", env!("CARGO_PKG_VERSION"))),
        ..SessionOptions::default()
    };
    Session::new_with_opts(output.to_path_buf(), session_opts)
        .await
        .with_context(|| format!("starting the BitTorrent engine on {}", opts.listen))
}

/// Stops `session` at once: pauses its torrents and cancels `token` (the one the
/// session was started with). librqbit's own `Session::stop` then sleeps a second
/// ("hopefully will be enough"), which the controller paid at the end of every
/// distribution for its in-process origin.
pub async fn stop_now(session: &Session, token: &CancellationToken) {
    let torrents: Vec<Arc<ManagedTorrent>> =
        session.with_torrents(|ts| ts.map(|(_, t)| t.clone()).collect());
    for t in torrents {
        let _ = session.pause(&t).await;
    }
    token.cancel();
}

/// Adds a torrent whose files live under `folder`; `storage` overrides librqbit's
/// read-write filesystem storage (the origin serves read-only).
pub async fn add(
    session: &Arc<Session>,
    opts: &Options,
    torrent: &[u8],
    folder: &Path,
    storage: Option<BoxStorageFactory>,
) -> anyhow::Result<Arc<ManagedTorrent>> {
    let add = AddTorrentOptions {
        overwrite: true,
        output_folder: Some(folder.to_string_lossy().into_owned()),
        peer_opts: Some(peer_options()),
        initial_peers: (!opts.peers.is_empty()).then(|| opts.peers.clone()),
        peer_limit: Some(opts.max_peers as usize),
        trackers: opts.tracker.clone().map(|t| vec![t]),
        storage_factory: storage,
        stripes: opts.stripes,
        verified: opts.verified.clone(),
        ..AddTorrentOptions::default()
    };
    let handle = session
        .add_torrent(AddTorrent::from_bytes(torrent.to_vec()), Some(add))
        .await
        .context("adding the torrent to the engine")?
        .into_handle()
        .context("the engine did not start the torrent")?;
    if let Some(window) = opts.in_step {
        keep_in_step(handle.clone(), window);
    }
    Ok(handle)
}

/// Gates the uploads of `torrent` with [`InStep`](super::in_step::InStep) as soon
/// as it is live (an origin checks its copy first); gives up when nobody else holds
/// the torrent any more.
fn keep_in_step(torrent: Arc<ManagedTorrent>, window: u32) {
    tokio::spawn(async move {
        while Arc::strong_count(&torrent) > 1 {
            if let Some(live) = torrent.live() {
                live.set_upload_gate(Some(Arc::new(super::in_step::InStep::new(window))));
                tracing::debug!(window, "uploads kept in step");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// `count` pieces as a bitfield in BitTorrent's wire format (piece 0 is the high bit
/// of the first byte), piece `i` set when `set(i)`.
pub fn bitfield(count: usize, set: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut bits = vec![0u8; count.div_ceil(8)];
    for i in (0..count).filter(|&i| set(i)) {
        bits[i / 8] |= 0x80 >> (i % 8);
    }
    bits
}

/// Byte counts from librqbit's own per-peer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerBytes {
    pub from_origin: u64,
    pub from_peers: u64,
    pub uploaded: u64,
}

/// One peer's counters, as librqbit keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCounters {
    pub addr: String,
    /// librqbit's connection state (`live`, `connecting`, `dead`, ...).
    pub state: String,
    pub fetched: u64,
    pub uploaded: u64,
    /// Block requests sent to it and not answered yet (live peers only; vendored
    /// librqbit patch 11).
    pub inflight: u64,
}

/// The counters of every peer this torrent has talked to, live or gone.
pub fn peer_counters(torrent: &ManagedTorrent) -> Vec<PeerCounters> {
    let Some(live) = torrent.live() else {
        return Vec::new();
    };
    // librqbit does not export the filter type by path, only by serde.
    let filter = serde_json::from_value(serde_json::json!({"state": "all"}))
        .expect("peer stats filter deserializes");
    let snapshot =
        serde_json::to_value(live.per_peer_stats_snapshot(filter)).expect("peer stats serialize");
    let Some(peers) = snapshot["peers"].as_object() else {
        return Vec::new();
    };
    peers
        .iter()
        .map(|(addr, stats)| PeerCounters {
            addr: addr.clone(),
            state: stats["state"].as_str().unwrap_or("?").to_string(),
            fetched: stats["counters"]["fetched_bytes"].as_u64().unwrap_or(0),
            uploaded: stats["counters"]["uploaded_bytes"].as_u64().unwrap_or(0),
            inflight: stats["inflight_requests"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Sums the counters of every peer this torrent has talked to, live or gone;
/// bytes from peers at `origin` (any port, when the port is 0) count as origin bytes.
pub fn peer_bytes(torrent: &ManagedTorrent, origin: Option<SocketAddr>) -> PeerBytes {
    let mut out = PeerBytes::default();
    for p in peer_counters(torrent) {
        out.uploaded += p.uploaded;
        let is_origin = match (origin, p.addr.parse::<SocketAddr>()) {
            (Some(o), Ok(a)) => a == o || (o.port() == 0 && a.ip() == o.ip()),
            _ => false,
        };
        if is_origin {
            out.from_origin += p.fetched;
        } else {
            out.from_peers += p.fetched;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::storage::ReadOnlyFactory;

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn options(listen: SocketAddr, peers: Vec<SocketAddr>, upload: Option<u64>) -> Options {
        Options {
            listen,
            max_peers: 8,
            upload_limit: upload,
            download_limit: None,
            tracker: None,
            peers,
            stripes: None,
            in_step: None,
            verified: None,
        }
    }

    /// A one-file artifact of `size` bytes under `dir/src`, its metainfo in pieces of
    /// `piece` bytes, and the metainfo's bytes.
    fn artifact(
        dir: &Path,
        size: u32,
        piece: u64,
    ) -> (
        std::path::PathBuf,
        crate::torrent::metainfo::Metainfo,
        Vec<u8>,
    ) {
        let src = dir.join("src");
        std::fs::create_dir(&src).unwrap();
        let blob: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4099) as u8).collect();
        std::fs::write(src.join("blob"), &blob).unwrap();
        let meta = crate::torrent::metainfo::create(
            &src,
            &crate::torrent::metainfo::CreateOptions {
                piece_size: Some(piece),
                ..Default::default()
            },
        )
        .unwrap();
        let torrent = meta.to_bytes();
        (src, meta, torrent)
    }

    fn state_of(t: &ManagedTorrent, peer: SocketAddr) -> Option<String> {
        peer_counters(t)
            .into_iter()
            .find(|p| p.addr == peer.to_string())
            .map(|p| p.state)
    }

    async fn until(t: &ManagedTorrent, what: &str, mut ok: impl FnMut() -> bool) {
        for _ in 0..200 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}: {:?}", peer_counters(t));
    }

    /// The caps as the engine holds them (vendored librqbit, patches 9 and 10), at the
    /// integration test's cap, the playbook's defaults (200 and 300 MB/s) and above:
    /// whenever `t` seconds after the start `b` bytes have passed, `b` is at most
    /// `cap * (t + 0.1)` (plus one step), and by the end at least 90% of that. Before
    /// patch 9 a cap of 300 MB/s passed 333 MB/s, 600 MB/s passed 1 GB/s and 1.25 GB/s
    /// (10 Gbit/s) passed 1 GB/s; before patch 10 a whole second passed at once. Both
    /// directions, each limiter in steps of a thousandth of a second of its cap.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cap_passes_its_rate_and_a_tenth_of_a_second_at_once() {
        use librqbit::limits::Limits;
        const RUN: f64 = 0.6;
        const BURST: f64 = 0.1;
        let caps: [u64; 5] = [
            2 << 20,
            200_000_000,
            300_000_000,
            600_000_000,
            1_250_000_000,
        ];
        let limits: Vec<Limits> = caps
            .iter()
            .map(|&c| {
                Limits::new(LimitsConfig {
                    upload_bps: limit(Some(c)),
                    download_bps: limit(Some(c)),
                })
            })
            .collect();
        let runs = caps.iter().zip(&limits).flat_map(|(&cap, l)| {
            [true, false].map(|up| async move {
                let step = (cap / 1000).max(16 << 10);
                let len = NonZeroU32::new(step as u32).unwrap();
                let start = std::time::Instant::now();
                let (mut bytes, mut t) = (0u64, 0.0);
                let mut worst = 0.0f64;
                while t < RUN {
                    if up {
                        l.prepare_for_upload(len).await.unwrap();
                    } else {
                        l.prepare_for_download(len).await.unwrap();
                    }
                    t = start.elapsed().as_secs_f64();
                    bytes += step;
                    worst = worst.max((bytes - step) as f64 / cap as f64 - t);
                }
                let way = if up { "upload" } else { "download" };
                (cap, way, worst, bytes as f64 / cap as f64, t)
            })
        });
        let mut wrong = Vec::new();
        for (cap, way, worst, passed, t) in futures_util::future::join_all(runs).await {
            if worst > BURST || passed < 0.9 * (t + BURST) {
                wrong.push(format!(
                    "{way} cap {cap} B/s: up to {worst:.3} s of the cap ahead of time, {passed:.3} s of it in {t:.3} s"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// A cap under one block (16 KiB, what one request asks for) still lets a block
    /// pass: librqbit's own burst of one second of the cap made every request fail
    /// ("insufficient capacity"), which stopped the transfer.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cap_under_one_block_passes_a_block() {
        let limits = librqbit::limits::Limits::new(LimitsConfig {
            upload_bps: limit(Some(8_000)),
            download_bps: limit(Some(8_000)),
        });
        let block = NonZeroU32::new(16 << 10).unwrap();
        limits.prepare_for_upload(block).await.unwrap();
        limits.prepare_for_download(block).await.unwrap();
    }

    /// A session with `opts` seeding `torrent` from `src`, read-only.
    async fn seeder(
        opts: &Options,
        torrent: &[u8],
        src: &Path,
        cancel: &CancellationToken,
    ) -> Arc<Session> {
        let s = session(opts, src, cancel.child_token()).await.unwrap();
        add(
            &s,
            opts,
            torrent,
            src,
            Some(ReadOnlyFactory::boxed_factory(src)),
        )
        .await
        .unwrap();
        s
    }

    /// The origin of striped trees keeps its stripes in step (vendored librqbit
    /// patch 12, [`super::super::in_step`]): two roots fetch one stripe each from it
    /// over loopback, one of them capped at 2 MB/s. Unkept, the other has its whole
    /// stripe while the capped one has a few hundred KiB of its own; kept in step,
    /// the capped one has more than half of its stripe by then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_origin_keeps_the_stripes_of_a_slow_root_and_a_fast_one_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let (src, meta, torrent) = artifact(dir.path(), 8 << 20, 64 << 10);
        let stripe = meta.total_length() / 2;
        let cancel = CancellationToken::new();
        let origin = Options {
            in_step: Some(8),
            verified: None,
            ..options(free_addr(), Vec::new(), None)
        };
        let _origin = seeder(&origin, &torrent, &src, &cancel).await;
        let mut roots = Vec::new();
        for (s, cap) in [(0u32, Some(2_000_000)), (1, None)] {
            let opts = Options {
                download_limit: cap,
                stripes: Some(2),
                ..options(free_addr(), vec![origin.listen], None)
            };
            let out = dir.path().join(format!("root{s}"));
            let session = session(&opts, &out, cancel.child_token()).await.unwrap();
            let t = add(&session, &opts, &torrent, &out, None).await.unwrap();
            until(&t, "the root is live", || t.live().is_some()).await;
            t.live().unwrap().set_stripes(Some(librqbit::Stripes {
                count: 2,
                by_peer: [(origin.listen, 1u64 << s)].into(),
            }));
            roots.push((session, t));
        }
        let (slow, fast) = (&roots[0].1, &roots[1].1);
        until(fast, "the fast root has its stripe", || {
            fast.stats().progress_bytes >= stripe
        })
        .await;
        let slow_had = slow.stats().progress_bytes;
        assert!(
            slow_had > stripe / 2,
            "the slow root had {slow_had} bytes of its stripe's {stripe} when the fast one had all of its own"
        );
        cancel.cancel();
    }

    /// The agent's side of "follow the tracker": a peer left out of
    /// `retain_outgoing_peers` (vendored librqbit, patch 4) is disconnected and stays
    /// so; named again, it is connected again.
    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_left_out_of_retain_is_dropped_and_named_again_is_reconnected() {
        let dir = tempfile::tempdir().unwrap();
        let (src, meta, torrent) = artifact(dir.path(), 16 << 20, 256 << 10);
        let cancel = CancellationToken::new();
        let mut seeders = Vec::new();
        for _ in 0..2 {
            // Slowed down so that the download outlasts every step below.
            let o = options(free_addr(), Vec::new(), Some(512 << 10));
            seeders.push((o.listen, seeder(&o, &torrent, &src, &cancel).await));
        }
        let (a, b) = (seeders[0].0, seeders[1].0);
        let o = options(free_addr(), vec![a, b], None);
        let out = dir.path().join("out");
        let s = session(&o, &out, cancel.child_token()).await.unwrap();
        let t = add(&s, &o, &torrent, &out, None).await.unwrap();
        until(&t, "both seeders are live", || {
            state_of(&t, a).as_deref() == Some("live") && state_of(&t, b).as_deref() == Some("live")
        })
        .await;

        t.live().unwrap().retain_outgoing_peers(&[a]);
        until(&t, "b is dropped", || {
            state_of(&t, b).as_deref() == Some("not needed")
        })
        .await;
        assert_eq!(state_of(&t, a).as_deref(), Some("live"));

        t.live().unwrap().retain_outgoing_peers(&[a, b]);
        until(&t, "b is live again", || {
            state_of(&t, b).as_deref() == Some("live")
        })
        .await;
        assert!(
            t.stats().progress_bytes < meta.total_length(),
            "the download finished before the test did: make it slower"
        );
        cancel.cancel();
        s.stop().await;
        for (_, s) in seeders {
            s.stop().await;
        }
    }

    /// An origin that made the metainfo itself seeds without reading its files again
    /// (vendored librqbit patch 13). Shown by a byte changed after hashing: checked,
    /// that piece is missing; vouched for, every piece is present, unread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_verified_origin_does_not_check_its_pieces_again() {
        const PIECE: u64 = 64 << 10;
        let dir = tempfile::tempdir().unwrap();
        let (src, meta, torrent) = artifact(dir.path(), 4 * PIECE as u32, PIECE);
        let blob = src.join("blob");
        let mut bytes = std::fs::read(&blob).unwrap();
        bytes[2 * PIECE as usize + 5] ^= 0xff;
        std::fs::write(&blob, &bytes).unwrap();
        let cancel = CancellationToken::new();
        // Nothing vouched for, every piece but the changed one, every piece.
        let pieces = meta.piece_count();
        for (verified, have) in [
            (None, meta.total_length() - PIECE),
            (
                Some(bitfield(pieces, |i| i != 2)),
                meta.total_length() - PIECE,
            ),
            (Some(bitfield(pieces, |_| true)), meta.total_length()),
        ] {
            let o = Options {
                verified: verified.clone(),
                ..options(free_addr(), Vec::new(), None)
            };
            let s = session(&o, &src, cancel.child_token()).await.unwrap();
            let t = add(
                &s,
                &o,
                &torrent,
                &src,
                Some(ReadOnlyFactory::boxed_factory(&src)),
            )
            .await
            .unwrap();
            until(&t, "the origin is live", || t.live().is_some()).await;
            assert_eq!(t.stats().progress_bytes, have, "verified: {verified:?}");
            s.stop().await;
        }
    }
}
