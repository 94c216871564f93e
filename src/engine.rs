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

use crate::swarm::PEER_ID_PREFIX;

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
}

fn peer_options() -> PeerConnectionOptions {
    PeerConnectionOptions {
        connect_timeout: Some(Duration::from_secs(5)),
        read_write_timeout: Some(Duration::from_secs(60)),
        keep_alive_interval: Some(Duration::from_secs(5)),
        max_request_window: None,
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
        ..AddTorrentOptions::default()
    };
    session
        .add_torrent(AddTorrent::from_bytes(torrent.to_vec()), Some(add))
        .await
        .context("adding the torrent to the engine")?
        .into_handle()
        .context("the engine did not start the torrent")
}

/// Byte counts from librqbit's own per-peer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerBytes {
    pub from_origin: u64,
    pub from_peers: u64,
    pub uploaded: u64,
}

/// Sums the counters of every peer this torrent has talked to, live or gone;
/// bytes from peers at `origin` (any port, when the port is 0) count as origin bytes.
pub fn peer_bytes(torrent: &ManagedTorrent, origin: Option<SocketAddr>) -> PeerBytes {
    let Some(live) = torrent.live() else {
        return PeerBytes::default();
    };
    // librqbit does not export the filter type by path, only by serde.
    let filter = serde_json::from_value(serde_json::json!({"state": "all"}))
        .expect("peer stats filter deserializes");
    let snapshot =
        serde_json::to_value(live.per_peer_stats_snapshot(filter)).expect("peer stats serialize");
    let mut out = PeerBytes::default();
    let Some(peers) = snapshot["peers"].as_object() else {
        return out;
    };
    for (addr, stats) in peers {
        let counters = &stats["counters"];
        let fetched = counters["fetched_bytes"].as_u64().unwrap_or(0);
        out.uploaded += counters["uploaded_bytes"].as_u64().unwrap_or(0);
        let is_origin = match (origin, addr.parse::<SocketAddr>()) {
            (Some(o), Ok(a)) => a == o || (o.port() == 0 && a.ip() == o.ip()),
            _ => false,
        };
        if is_origin {
            out.from_origin += fetched;
        } else {
            out.from_peers += fetched;
        }
    }
    out
}
