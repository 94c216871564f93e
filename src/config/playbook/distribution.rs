//! `distribution:`: how the copy travels (seeding, peers, rate caps, sharing, the page
//! cache).

use std::time::Duration;

use serde::Serialize;

use crate::config::decode::{Decoder, Map, join};
use crate::config::units::{ByteSize, Rate};
use crate::config::yaml::Node;

/// The stripe count `rookery simulate` uses unless told otherwise (see
/// docs/distribution.md, "Striped trees", for why 8).
pub const DEFAULT_STRIPES: usize = 8;
/// Fewer than 5 stripes leave no spare slot (floor(1.2 k) = k): a failed host's
/// orphans would have nowhere to go within the budgets; more than 64 makes slots (1/k copy) and each
/// hop's rate (C/k) too small to be worth the connections.
pub const MIN_STRIPES: usize = 5;
pub const MAX_STRIPES: usize = 64;

/// How the tracker arranges who feeds whom (`distribution.sharing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// The chain or the striped trees, whichever the estimate says is faster for
    /// the hosts and the artifact at hand ([`crate::plan::estimate::choose`]),
    /// chosen once per distribution before anything reads it.
    #[default]
    Auto,
    Pipeline,
    Mesh,
    /// Striped trees (`tracker::stripes`): one feeder per stripe.
    Stripes,
}

impl Sharing {
    /// Its name in a playbook (`auto`, `pipeline`, `mesh`, `stripes`).
    pub fn name(self) -> &'static str {
        match self {
            Sharing::Auto => "auto",
            Sharing::Pipeline => "pipeline",
            Sharing::Mesh => "mesh",
            Sharing::Stripes => "stripes",
        }
    }
}

/// What a host does with the page cache around a copy (`distribution.page_cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageCache {
    pub drop_after_write: bool,
    pub lock_current: Vec<String>,
    pub preload: bool,
    /// Bytes of the hot set locked at most (`None`: the agent's default, 1 GiB).
    pub lock_max: Option<ByteSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedMode {
    /// Seed for exactly `seed_window` after the copy is verified.
    Fixed,
    /// Seed until every host of the rack has the copy and no host is fed by this
    /// one, for `seed_window_max` at most (`seed_window` once the tracker is gone).
    /// docs/playbook.md, "The seed window".
    Adaptive,
}

#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    #[serde(with = "crate::config::units::serde_duration")]
    pub seed_window: Duration,
    pub seed_mode: SeedMode,
    #[serde(with = "crate::config::units::serde_duration")]
    pub seed_window_max: Duration,
    pub max_peers: u32,
    pub upload_limit: Option<Rate>,
    pub download_limit: Option<Rate>,
    /// `None` = chosen from the artifact size.
    pub piece_size: Option<ByteSize>,
    /// How the tracker arranges rookery agents (`pipeline`, `stripes`) or any client
    /// (`mesh`).
    pub sharing: Sharing,
    /// Stripes of `sharing: stripes`.
    pub stripes: usize,
    /// BitTorrent listen port on hosts (local hosts get consecutive ports from it).
    pub port: u16,
    /// An agent that receives nothing for this long gives up.
    #[serde(with = "crate::config::units::serde_duration")]
    pub stall_timeout: Duration,
    pub page_cache: PageCache,
}

/// The defaults of `distribution:`, documented in docs/playbook.md; the host agent
/// falls back on the same values for a flag an operator leaves out.
impl Default for Distribution {
    fn default() -> Distribution {
        Distribution {
            seed_window: Duration::from_secs(30),
            seed_mode: SeedMode::Fixed,
            seed_window_max: Duration::from_secs(300),
            max_peers: 64,
            upload_limit: Some(Rate(200_000_000)),
            download_limit: Some(Rate(300_000_000)),
            piece_size: None,
            sharing: Sharing::Auto,
            stripes: DEFAULT_STRIPES,
            port: 6881,
            stall_timeout: Duration::from_secs(300),
            page_cache: PageCache::default(),
        }
    }
}

const DISTRIBUTION_KEYS: &[&str] = &[
    "seed_window",
    "seed_mode",
    "seed_window_max",
    "max_peers",
    "upload_limit",
    "download_limit",
    "piece_size",
    "sharing",
    "stripes",
    "port",
    "stall_timeout",
    "page_cache",
];
const PAGE_CACHE_KEYS: &[&str] = &["drop_after_write", "lock_current", "preload", "lock_max"];
pub(super) fn decode_distribution(d: &mut Decoder, node: Option<&Node>) -> Distribution {
    let mut dist = Distribution::default();
    let Some(node) = node else { return dist };
    let m = d.map(node, "distribution", DISTRIBUTION_KEYS);
    decode_seeding(d, &m, &mut dist);
    decode_caps(d, &m, &mut dist);
    if let Some(n) = m
        .get("piece_size")
        .filter(|n| n.as_scalar() != Some("auto"))
        && let Some(size) = d.size(n, "distribution.piece_size")
    {
        if !crate::torrent::metainfo::valid_piece_size(size.0) {
            let text = n.as_scalar().unwrap_or_default();
            d.error(n.pos, format!("`distribution.piece_size` must be `auto` or a power of two from 16KiB to 64MiB, found `{text}`"));
        } else {
            dist.piece_size = Some(size);
        }
    }
    decode_sharing(d, &m, &mut dist);
    if let Some(n) = m.get("stall_timeout") {
        dist.stall_timeout = d
            .duration(n, "distribution.stall_timeout")
            .unwrap_or(dist.stall_timeout);
    }
    if let Some(n) = m.get("page_cache") {
        let pc = d.map(n, "distribution.page_cache", PAGE_CACHE_KEYS);
        let policy = &mut dist.page_cache;
        if let Some(v) = pc.get("drop_after_write") {
            policy.drop_after_write = d
                .bool(v, "distribution.page_cache.drop_after_write")
                .unwrap_or(false);
        }
        if let Some(v) = pc.get("preload") {
            policy.preload = d
                .bool(v, "distribution.page_cache.preload")
                .unwrap_or(false);
        }
        if let Some(v) = pc.get("lock_max") {
            policy.lock_max = d.size(v, "distribution.page_cache.lock_max");
        }
        if let Some(v) = pc.get("lock_current") {
            policy.lock_current = d
                .strings(v, "distribution.page_cache.lock_current")
                .into_iter()
                .map(|(s, _)| s)
                .collect();
        }
    }
    dist
}

/// `seed_window`, `seed_mode` and `seed_window_max`.
fn decode_seeding(d: &mut Decoder, m: &Map<'_>, dist: &mut Distribution) {
    if let Some(n) = m.get("seed_window") {
        dist.seed_window = d
            .duration(n, "distribution.seed_window")
            .unwrap_or(dist.seed_window);
    }
    if let Some(n) = m.get("seed_mode") {
        match d.string(n, "distribution.seed_mode").as_deref() {
            Some("fixed") => dist.seed_mode = SeedMode::Fixed,
            Some("adaptive") => dist.seed_mode = SeedMode::Adaptive,
            Some(other) => d.error(
                n.pos,
                format!("`distribution.seed_mode` must be `fixed` or `adaptive`, found `{other}`"),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("seed_window_max") {
        dist.seed_window_max = d
            .duration(n, "distribution.seed_window_max")
            .unwrap_or(dist.seed_window_max);
    }
    if dist.seed_mode == SeedMode::Adaptive && dist.seed_window_max < dist.seed_window {
        let pos = m
            .get("seed_window_max")
            .or(m.get("seed_window"))
            .map(|n| n.pos)
            .unwrap_or(m.pos);
        d.error(pos, "`distribution.seed_window_max` must not be shorter than `seed_window` in adaptive mode");
    }
}

/// `max_peers`, `upload_limit` and `download_limit`.
fn decode_caps(d: &mut Decoder, m: &Map<'_>, dist: &mut Distribution) {
    if let Some(n) = m.get("max_peers") {
        match d.u32(n, "distribution.max_peers") {
            Some(0) => d.error(n.pos, "`distribution.max_peers` must be at least 1"),
            Some(p) => dist.max_peers = p,
            None => {}
        }
    }
    for (key, slot) in [
        ("upload_limit", &mut dist.upload_limit),
        ("download_limit", &mut dist.download_limit),
    ] {
        if let Some(n) = m.get(key) {
            let path = join("distribution", key);
            *slot = match n.as_scalar() {
                Some("unlimited") => None,
                _ => d.rate(n, &path).or(*slot),
            };
        }
    }
}

/// `sharing` and `stripes`.
fn decode_sharing(d: &mut Decoder, m: &Map<'_>, dist: &mut Distribution) {
    if let Some(n) = m.get("sharing") {
        match d.string(n, "distribution.sharing").as_deref() {
            Some("auto") => dist.sharing = Sharing::Auto,
            Some("pipeline") => dist.sharing = Sharing::Pipeline,
            Some("mesh") => dist.sharing = Sharing::Mesh,
            Some("stripes") => dist.sharing = Sharing::Stripes,
            Some(other) => d.error(
                n.pos,
                format!(
                    "`distribution.sharing` must be `auto`, `pipeline`, `stripes` or `mesh`, found `{other}`"
                ),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("stripes") {
        match d.u32(n, "distribution.stripes") {
            Some(k) if (MIN_STRIPES..=MAX_STRIPES).contains(&(k as usize)) => {
                dist.stripes = k as usize
            }
            Some(k) => d.error(
                n.pos,
                format!("`distribution.stripes` must be {MIN_STRIPES}..={MAX_STRIPES}, found {k}"),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("port") {
        match d.u32(n, "distribution.port") {
            Some(p @ 1..=65535) => dist.port = p as u16,
            Some(p) => d.error(
                n.pos,
                format!("`distribution.port` must be 1..=65535, found {p}"),
            ),
            None => {}
        }
    }
}
