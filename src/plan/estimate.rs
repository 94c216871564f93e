//! The distribution-time estimate that `rookery plan` prints, from the link speeds in
//! the inventory (`link` per host, `uplink` per rack, `interconnect` per datacenter)
//! and the playbook's rate caps.
//!
//! It models the tracker's pipeline (docs/distribution.md): the origin, then the hosts
//! ordered by datacenter (the origin's first), rack and inventory order, each fed by
//! the one before it. All hops stream at once, so the chain moves at its slowest hop's
//! rate `B`; each hop after the first adds one piece of latency (a host forwards a
//! piece once it has verified it) and a fixed lag ([`HOP_LAG_SECONDS`], measured);
//! the slowest host finishes after
//!
//! ```text
//! T = START + S / H + S / B' + (hosts - 1) * (piece / B' + LAG)
//! ```
//!
//! where `H` is the rate at which the controller hashes the artifact for the
//! metainfo (before any host can start) and `B' = B x` [`WIRE_EFFICIENCY`]: a link
//! rate counts Ethernet frames, of which TCP carries 1448 payload bytes in 1514.
//!
//! A hop is capped by the sender's upload (its `link`, `upload_limit`), the receiver's
//! download (its `link`, `download_limit`), the uplinks of both racks when it leaves a
//! rack, and the interconnects of both datacenters when it leaves a datacenter. The
//! chain enters and leaves each rack and datacenter once, so no link carries more
//! than one copy each way. Cross-datacenter bytes are one copy per datacenter boundary
//! the chain crosses.

use serde::Serialize;

use crate::config::Config;
use crate::config::inventory::Origin;
use crate::config::playbook::Sharing;
use crate::config::units::Rate;

/// Connecting, one command per host and the first announce round, before bytes
/// flow (0.5 to 0.9 s for 8 hosts on the shaped benchmark), with room for a larger
/// fan-out of SSH sessions.
pub const START_SECONDS: f64 = 1.0;

/// How fast the controller (or the origin host) reads and hashes the artifact for
/// the metainfo, bytes per second. Pieces are hashed on every core: 1 GiB from memory
/// took 0.44 s on the 2-core benchmark machine (2.4 GB/s), 0.75 s on one core. A disk
/// often reads slower than that, so the model keeps 1 GB/s.
pub const HASH_BYTES_PER_SECOND: f64 = 1.0e9;

/// Payload per byte of link rate: 1448 TCP payload bytes (MTU 1500, with TCP
/// timestamps) per 1514-byte Ethernet frame. BitTorrent's own framing, 13 bytes per
/// 16 KiB block, is left out.
pub const WIRE_EFFICIENCY: f64 = 1448.0 / 1514.0;

/// What each hop of a chain adds beyond the piece it must have before it forwards
/// it: the announce, the request's round trip, the queues of the links and the
/// agents' scheduling. Measured on the shaped benchmark from the agents' own logs
/// (docs/benchmarks.md, "Agents that come up late"): at 20 Mbit/s with 64 KiB
/// pieces, where nothing held them, consecutive hosts of the chain finished 0.07 to
/// 0.16 s apart, 0.107 s on average over 47 hops, of which 0.027 s is the piece at
/// the link's payload rate. The 0.15 s this was before, fitted to the slowest host's
/// time, also held the agents' start-up: hosts whose agents came up after their
/// successors', and, until the tracker judged feeders on measured rates only, the
/// tangles around them. `rookery simulate --start-spread` models those apart.
pub const HOP_LAG_SECONDS: f64 = 0.08;

/// The time before the first byte moves for an artifact of `size` bytes.
pub fn start_seconds(size: u64) -> f64 {
    START_SECONDS + size as f64 / HASH_BYTES_PER_SECOND
}

/// How far the striped trees' transfer falls short of the model on the shaped
/// benchmark, as a share of the stream (`S / B'`): at 20 Mbit/s with 64 MiB (S / B'
/// = 28.1 s) they took 0.0, 2.1 and 1.0 to 2.9 s longer than `rookery simulate` at N
/// = 16, 32 and 48 (four runs at 48), where the chain's runs were within 3%
/// (docs/benchmarks.md, "Stripes leave the origin together"). It was 12% (2.9 to 4.3
/// s) while the origin let the roots' stripes drift apart; what is left is the
/// stripes' unevenness below the roots (a host's download shared unevenly among the
/// stripes coming in). Counted in the trees' estimate, which is what `sharing: auto`
/// compares with the chain's.
pub const STRIPES_SHORTFALL: f64 = 0.05;

/// `sharing: auto` without link speeds to compare by: striped trees from this many
/// hosts. With speeds, the two estimates decide: the trees win from 32 hosts (4 x
/// `stripes`, the fewest they are built for) at the benchmark's shape (64 MiB at 20
/// Mbit/s, 2 x 2 racks) and from about 41 to 48 at 10 GiB with the default
/// `upload_limit` (3 datacenters x 4 racks).
pub const AUTO_STRIPES_HOSTS: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub artifact_bytes: u64,
    /// Where the size came from: `measured` (the source directory) or `given`.
    pub size_from: &'static str,
    pub piece_bytes: u64,
    pub hosts: usize,
    /// The slowest hop's payload rate, bytes per second (a link's rate times
    /// [`WIRE_EFFICIENCY`], or a rate cap).
    pub bottleneck_bytes_per_second: u64,
    /// What caps it, in words (`rack uplink of east/e1`, `upload_limit`, ...).
    pub bottleneck: String,
    /// The slowest host's time.
    pub seconds: f64,
    pub cross_dc_bytes: u64,
    pub origin_upload_bytes: u64,
    /// The topology the estimate is for: the playbook's `sharing`, or what `auto`
    /// chose ([`choose`]).
    pub sharing: Sharing,
    /// Why, in words (for `auto`: both figures).
    pub sharing_reason: String,
    /// The chain's figure, and the striped trees' (with their depth) where the
    /// roster is large enough for them (at least 4 x `stripes` hosts).
    pub chain_seconds: f64,
    pub trees_seconds: Option<f64>,
    pub trees_depth: Option<u32>,
}

/// One candidate cap of a hop.
struct Cap {
    rate: Option<Rate>,
    what: String,
    /// A rate cap of the playbook, on payload (librqbit's limiter), rather than a
    /// link, which carries frames.
    payload: bool,
}

/// The pipeline estimate for `targets` (inventory host indexes), or `None` when no
/// hop has any cap (no link speeds and no rate limits: nothing to estimate from).
pub fn pipeline(
    config: &Config,
    targets: &[usize],
    size: u64,
    size_from: &'static str,
) -> Option<Estimate> {
    let inv = &config.inventory;
    let set = &config.playbook.distribution;
    if targets.is_empty() {
        return None;
    }
    let origin = match inv.origin {
        Origin::Host(h) => Some(h),
        Origin::Controller => None,
    };
    let chain = chain_order(config, targets, origin);
    let mut bottleneck: Option<(u64, String)> = None;
    let mut cross_dc = 0u64;
    let mut prev: Option<usize> = origin;
    for &h in &chain {
        if prev.is_some_and(|p| inv.hosts[p].dc != inv.hosts[h].dc) {
            cross_dc += size;
        }
        for c in hop_caps(config, prev, h) {
            consider(&mut bottleneck, c);
        }
        prev = Some(h);
    }
    let (rate, what) = bottleneck?;
    let rate = rate.max(1);
    let piece = set
        .piece_size
        .map(|p| p.0)
        .unwrap_or_else(|| crate::torrent::metainfo::auto_piece_size(size));
    let b = rate as f64;
    let hops_after_first = chain.len().saturating_sub(1) as f64;
    let seconds = start_seconds(size)
        + size as f64 / b
        + hops_after_first * (piece as f64 / b + HOP_LAG_SECONDS);
    let trees_depth = trees_depth(config, targets);
    let trees_seconds = trees_depth.map(|depth| {
        let k = set.stripes as f64;
        start_seconds(size)
            + size as f64 / b * (1.0 + STRIPES_SHORTFALL)
            + f64::from(depth) * (k * piece as f64 / b + HOP_LAG_SECONDS)
    });
    let (sharing, sharing_reason) = match (set.sharing, trees_seconds) {
        (Sharing::Auto, Some(t)) if t < seconds => (
            Sharing::Stripes,
            format!(
                "auto: striped trees {t:.1} s, {} hops deep, against the chain's {seconds:.1} s",
                trees_depth.unwrap_or(0)
            ),
        ),
        (Sharing::Auto, Some(t)) => (
            Sharing::Pipeline,
            format!("auto: the chain {seconds:.1} s against striped trees' {t:.1} s"),
        ),
        (Sharing::Auto, None) => (
            Sharing::Pipeline,
            format!(
                "auto: {} hosts, fewer than 4 x {} stripes for the trees",
                chain.len(),
                set.stripes
            ),
        ),
        (other, _) => (other, "the playbook's `sharing`".to_string()),
    };
    Some(Estimate {
        artifact_bytes: size,
        size_from,
        piece_bytes: piece,
        hosts: chain.len(),
        bottleneck_bytes_per_second: rate,
        bottleneck: what,
        seconds: match sharing {
            Sharing::Stripes => trees_seconds.unwrap_or(seconds),
            _ => seconds,
        },
        cross_dc_bytes: cross_dc,
        origin_upload_bytes: size,
        sharing,
        sharing_reason,
        chain_seconds: seconds,
        trees_seconds,
        trees_depth,
    })
}

/// The topology for a distribution of `size` bytes to `targets`: the playbook's
/// `sharing`, or for `auto` the one with the lower estimate ([`pipeline`]), and
/// without link speeds to estimate from, striped trees from [`AUTO_STRIPES_HOSTS`]
/// hosts. Never striped trees under 4 x `stripes` hosts, where they can break their
/// upload budgets (`src/tracker/stripes/mod.rs`, known gaps).
pub fn choose(config: &Config, targets: &[usize], size: u64) -> (Sharing, String) {
    let set = &config.playbook.distribution;
    if set.sharing != Sharing::Auto {
        return (set.sharing, "the playbook's `sharing`".to_string());
    }
    if let Some(e) = pipeline(config, targets, size, "measured") {
        return (e.sharing, e.sharing_reason);
    }
    let n = targets.len();
    let sharing = if n >= AUTO_STRIPES_HOSTS && n >= 4 * set.stripes {
        Sharing::Stripes
    } else {
        Sharing::Pipeline
    };
    (
        sharing,
        format!(
            "auto: {n} hosts (no link speeds to estimate from; trees from {AUTO_STRIPES_HOSTS})"
        ),
    )
}

/// The depth of the striped trees over `targets`, as the tracker builds them, or
/// `None` under 4 x `stripes` hosts.
fn trees_depth(config: &Config, targets: &[usize]) -> Option<u32> {
    let k = config.playbook.distribution.stripes;
    if targets.len() < 4 * k {
        return None;
    }
    let roster = crate::tracker::server::roster(&config.inventory, targets, None);
    let trees = crate::tracker::stripes::Trees::build(&roster, k).ok()?;
    Some(trees.max_depth())
}

/// `targets` in the tracker's order: the origin's datacenter first, then
/// datacenters and racks by first appearance, then inventory order.
fn chain_order(config: &Config, targets: &[usize], origin: Option<usize>) -> Vec<usize> {
    let inv = &config.inventory;
    let mut dc_rank: Vec<usize> = Vec::new();
    if let Some(o) = origin {
        dc_rank.push(inv.hosts[o].dc);
    }
    let mut rack_rank: Vec<usize> = Vec::new();
    for &h in targets {
        let host = &inv.hosts[h];
        if !dc_rank.contains(&host.dc) {
            dc_rank.push(host.dc);
        }
        if !rack_rank.contains(&host.rack) {
            rack_rank.push(host.rack);
        }
    }
    let rank = |v: &[usize], x: usize| v.iter().position(|&y| y == x).unwrap_or(usize::MAX);
    let mut chain: Vec<usize> = targets.to_vec();
    chain.sort_by_key(|&h| {
        let host = &inv.hosts[h];
        (rank(&dc_rank, host.dc), rank(&rack_rank, host.rack), h)
    });
    chain
}

/// Keeps `c` as the bottleneck when its payload rate is below the one so far (the
/// first of equals stays).
fn consider(bottleneck: &mut Option<(u64, String)>, c: Cap) {
    // Links count frames; the caps count payload (librqbit's limiter).
    let payload = c.rate.map(|r| {
        if c.payload {
            r.0
        } else {
            (r.0 as f64 * WIRE_EFFICIENCY) as u64
        }
    });
    if let Some(r) = payload
        && bottleneck.as_ref().is_none_or(|(b, _)| r < *b)
    {
        *bottleneck = Some((r, c.what));
    }
}

/// The caps of the hop into host `to` from host `from` (`None`: the controller):
/// the receiver's download, the sender's upload, and the uplinks and interconnects
/// it crosses.
fn hop_caps(config: &Config, from: Option<usize>, to: usize) -> Vec<Cap> {
    let inv = &config.inventory;
    let set = &config.playbook.distribution;
    let to = &inv.hosts[to];
    let mut caps = vec![
        Cap {
            rate: set.download_limit,
            what: "download_limit".into(),
            payload: true,
        },
        Cap {
            rate: to.link,
            what: format!("link of {}", to.name),
            payload: false,
        },
        Cap {
            rate: set.upload_limit,
            what: "upload_limit".into(),
            payload: true,
        },
    ];
    // The controller: its own link is not in the inventory.
    let Some(from) = from else {
        return caps;
    };
    let from = &inv.hosts[from];
    caps.push(Cap {
        rate: from.link,
        what: format!("link of {}", from.name),
        payload: false,
    });
    if from.rack != to.rack {
        for r in [from.rack, to.rack] {
            caps.push(Cap {
                rate: inv.racks[r].uplink,
                what: format!("uplink of rack {}", inv.racks[r].full_name),
                payload: false,
            });
        }
    }
    if from.dc != to.dc {
        for d in [from.dc, to.dc] {
            caps.push(Cap {
                rate: inv.datacenters[d].interconnect,
                what: format!("interconnect of {}", inv.datacenters[d].name),
                payload: false,
            });
        }
    }
    caps
}

/// The total size of the regular files under `dir`, following no symlinks.
pub fn tree_size(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let t = entry.file_type()?;
            if t.is_dir() {
                stack.push(entry.path());
            } else if t.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::inventory::Inventory;
    use crate::config::playbook::Playbook;
    use std::path::Path;

    fn config(inv: &str, limits: &str) -> Config {
        let inv = Inventory::from_str("inv.yml", inv, Path::new("/")).unwrap();
        let pb = Playbook::from_str(
            "pb.yml",
            &format!(
                "artifact: {{source: b, destination: /srv}}\ndistribution: {{{limits}, piece_size: 1MiB}}\nservices:\n  s: {{start: x}}\n"
            ),
            Path::new("/"),
        )
        .unwrap();
        Config::new(inv, pb).unwrap()
    }

    const TWO_DCS: &str = "
defaults: {link: 10Gbit/s, services: [s]}
datacenters:
  east:
    interconnect: 1Gbit/s
    racks:
      e1: {uplink: 40Gbit/s, hosts: {a: ~, b: ~}}
      e2: {uplink: 4Gbit/s, hosts: {c: ~}}
  west:
    interconnect: 2Gbit/s
    racks:
      w1: {hosts: {d: ~, e: {link: 2Gbit/s}}}
";

    #[test]
    fn the_slowest_hop_sets_the_pace_and_each_dc_boundary_costs_one_copy() {
        let c = config(
            TWO_DCS,
            "upload_limit: unlimited, download_limit: unlimited",
        );
        let gib = 1 << 30;
        let e = pipeline(&c, &c.target_hosts(), gib, "given").unwrap();
        // east's 1 Gbit/s interconnect is the slowest link the chain uses.
        assert_eq!(e.bottleneck, "interconnect of east");
        // As payload: 1448 bytes of every 1514 on the wire.
        let payload = (125_000_000f64 * WIRE_EFFICIENCY) as u64;
        assert_eq!(e.bottleneck_bytes_per_second, payload);
        assert_eq!(e.cross_dc_bytes, gib);
        assert_eq!(e.hosts, 5);
        let b = payload as f64;
        let want = START_SECONDS
            + gib as f64 / 1e9
            + gib as f64 / b
            + 4.0 * ((1 << 20) as f64 / b + HOP_LAG_SECONDS);
        assert!((e.seconds - want).abs() < 1e-9, "{} vs {want}", e.seconds);
    }

    #[test]
    fn caps_and_host_links_count_and_nothing_known_means_no_estimate() {
        let c = config(TWO_DCS, "upload_limit: 50MB/s, download_limit: unlimited");
        let e = pipeline(&c, &c.target_hosts(), 1000, "given").unwrap();
        assert_eq!(e.bottleneck, "upload_limit");
        assert_eq!(e.bottleneck_bytes_per_second, 50_000_000);
        // Only the hosts of one rack: its hosts' links and the caps.
        let c = config(
            TWO_DCS,
            "upload_limit: unlimited, download_limit: unlimited",
        );
        let e = pipeline(&c, &[3, 4], 1000, "given").unwrap();
        assert_eq!(e.bottleneck, "link of e");
        assert_eq!(e.cross_dc_bytes, 0);
        let bare = "datacenters: {x: {racks: {r: {hosts: {a: {services: [s]}}}}}}";
        let c = config(bare, "upload_limit: unlimited, download_limit: unlimited");
        assert!(pipeline(&c, &c.target_hosts(), 1000, "given").is_none());
    }

    /// One rack of `n` hosts with no link speeds.
    fn rack_of(n: usize) -> String {
        let hosts: Vec<String> = (0..n).map(|i| format!("h{i}: ~")).collect();
        format!(
            "defaults: {{services: [s]}}\ndatacenters: {{x: {{racks: {{r: {{hosts: {{{}}}}}}}}}}}",
            hosts.join(", ")
        )
    }

    #[test]
    fn auto_without_link_speeds_goes_by_host_count_and_a_set_sharing_stands() {
        let limits = "upload_limit: unlimited, download_limit: unlimited";
        let c = config(&rack_of(AUTO_STRIPES_HOSTS), limits);
        assert_eq!(c.playbook.distribution.sharing, Sharing::Auto);
        let (s, why) = choose(&c, &c.target_hosts(), 1 << 30);
        assert_eq!(s, Sharing::Stripes, "{why}");
        let c = config(&rack_of(AUTO_STRIPES_HOSTS - 1), limits);
        assert_eq!(choose(&c, &c.target_hosts(), 1 << 30).0, Sharing::Pipeline);
        // Fewer than 4 x stripes never get the trees, whatever the count rule says.
        let c = config(
            &rack_of(AUTO_STRIPES_HOSTS),
            &format!("{limits}, stripes: 20"),
        );
        assert_eq!(choose(&c, &c.target_hosts(), 1 << 30).0, Sharing::Pipeline);
        for set in ["pipeline", "mesh", "stripes"] {
            let c = config(&rack_of(200), &format!("{limits}, sharing: {set}"));
            let (s, why) = choose(&c, &c.target_hosts(), 1 << 30);
            assert_eq!(serde_json::to_value(s).unwrap(), set);
            assert_eq!(why, "the playbook's `sharing`");
        }
    }
}
