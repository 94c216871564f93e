//! `rookery simulate`: distribution over a generated topology, too large to build
//! (thousands of hosts, several datacenters), with the tracker's own pipeline order
//! ([`crate::tracker::roster::Roster`]) and its failure handling.
//!
//! The model is piece-level and deterministic for a seed. Host *k* of the chain gets
//! piece *i* from its feeder once the feeder has it, one piece after another:
//!
//! ```text
//! done[k][i] = max(done[k][i-1], done[feeder][i] + lag) + piece / rate(feeder -> k)
//! ```
//!
//! where `lag` is the fixed cost of a hop measured on the shaped benchmark
//! ([`crate::plan::estimate::HOP_LAG_SECONDS`]: the announce, the request's round
//! trip, the links' queues, the agents' scheduling), and a hop's rate is the least
//! of the two hosts' links, the caps, both racks' uplinks when it leaves a rack and
//! both datacenters' interconnects when it leaves a datacenter. A host that fails at time `t` stops serving; its successor notices after
//! [`DETECT`] (its report of a feeder gone, confirmed by silence) and takes every later piece from the nearest live
//! host before it, as the tracker arranges. Start-up is the same as in the plan's
//! estimate ([`crate::plan::estimate::start_seconds`]: hashing the artifact, connecting,
//! one command per host, the first announce), plus, with `--start-spread`, each
//! agent's own moment of coming up (`start_offsets`); rates carry the same TCP/IP
//! overhead ([`crate::plan::estimate::WIRE_EFFICIENCY`]).
//!
//! `--kill H` fails one host, as `bench/swarm.sh --kill H` does: when a third of the
//! artifact has reached it (found by a first run without the kill). Hosts are named
//! and placed as the benchmark places them (`h1`.., the datacenters in turn, racks
//! alternating within each), so the same number is the same host.
//!
//! What it leaves out: TCP slow start, disk speed, the hosts' CPU, and other traffic
//! on the links.
//!
//! Here: the topology, the run and what it measures. `chain.rs` and `stripes.rs`
//! move the pieces in each shape; `render.rs` prints the report.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::units::{ByteSize, Rate};
use crate::tracker::roster::{Member, Roster};
use crate::tracker::stripes::Trees;

mod chain;
mod render;
mod stripes;

use chain::chain_run;
pub use render::render;
use stripes::stripes_run;

/// How long a successor takes to be given a new feeder when its own is gone, in the
/// chain: it reports the feeder (connection dropped, or blocks owed and nothing sent
/// for 1 s) in polls every 200 ms, and the tracker skips a reported feeder silent
/// for 1.5 s (`Swarm::skip_lost`): at most 1.7 s, as in the trees. It was 3 s (the
/// feeder's first missed announce) before successors reported.
pub const DETECT: f64 = 1.7;
/// The same for striped trees, for a host that vanishes without closing its
/// connections (power, network): its children find it owing blocks and sending
/// nothing for 1 s (checked every 200 ms) and report it stalled; the tracker gives it
/// up once it has been silent for [`crate::tracker::swarm::LOST_SILENT_AFTER`]
/// (1.5 s; its last poll came up to a second before it vanished), at the next of
/// the children's polls, every 200 ms while they report a loss: at most 1.7 s. It
/// was 3 s (the tracker's own 2 s of silence, then a poll a second) until the agent
/// reported stalls.
pub const DETECT_STRIPES: f64 = 1.7;
/// The same for a killed agent (`--kill`, as `bench/swarm.sh --kill`): its
/// connections drop at once, its children report it lost and poll every 200 ms, and
/// the tracker gives it up after [`crate::tracker::swarm::LOST_SILENT_AFTER`] (1.5 s)
/// of silence: at most 1.7 s.
pub const DETECT_STRIPES_KILLED: f64 = 1.7;

/// From a host being done (with its children in the trees) until the rack-mate it
/// helps fetches from it: the helper's next poll gives it its helpee, the helpee's
/// next poll its helper; both poll every second ([`crate::tracker::stripes::helpee`]).
pub const HELP_AFTER: f64 = 1.0;

/// How the tracker arranges the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// The pipeline: one chain behind the origin (`sharing: pipeline`).
    Chain,
    /// Striped trees, [`crate::tracker::stripes::Trees`] (`sharing: stripes`).
    Stripes,
}

/// A generated topology and what to send over it.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    pub shape: Shape,
    /// Stripes of [`Shape::Stripes`].
    pub stripes: usize,
    /// Seconds from a host's failure until those it fed are re-linked.
    pub detect: f64,
    pub hosts: usize,
    pub datacenters: usize,
    /// Racks per datacenter.
    pub racks: usize,
    pub size: u64,
    pub piece: u64,
    /// Each host's link, bytes per second each way.
    pub link: u64,
    pub uplink: Option<u64>,
    pub interconnect: Option<u64>,
    pub upload_limit: Option<u64>,
    /// How fast the origin reads the artifact, payload bytes per second (a disk, when
    /// the files are not in its page cache); `None`: its link is the bound. A deploy
    /// that hashed the artifact has just read it (cached); one prepared long before
    /// may read it from disk.
    pub origin_read: Option<u64>,
    /// Fraction of hosts that fail during the transfer.
    pub fail: f64,
    /// One host that fails on purpose, as `bench/swarm.sh --kill` does.
    pub kill: Option<Kill>,
    /// Seconds each hop adds beyond its piece
    /// ([`crate::plan::estimate::HOP_LAG_SECONDS`] by default).
    pub hop_lag: f64,
    /// Fraction of the artifact in files unchanged since the last release, whose
    /// hashes the controller reuses instead of reading them (see
    /// `metainfo::CreateOptions::reuse`).
    pub unchanged: f64,
    /// Seconds over which the agents come up, each at a moment drawn from the seed,
    /// in no relation to its place in the chain or the trees ([`start_offsets`]).
    pub start_spread: f64,
    pub seed: u64,
}

/// A host killed once a fraction of the artifact has reached it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Kill {
    /// The host's number: `h1` is 1.
    pub host: usize,
    /// How much of the artifact it has when it dies (the benchmark: a third).
    pub fraction: f64,
}

/// The killed host and when it died.
#[derive(Debug, Clone, Serialize)]
pub struct Killed {
    pub host: String,
    pub at_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub topology: Topology,
    /// The physical bound S / C (one host's link).
    pub bound_seconds: f64,
    /// Completion time percentiles of the hosts that did not fail: p50, p90, p99, max.
    pub percentiles: BTreeMap<String, f64>,
    pub failed_hosts: usize,
    pub origin_upload_bytes: u64,
    /// Bytes into each datacenter over its interconnect.
    pub interconnect_in_bytes: BTreeMap<String, u64>,
    /// The busiest rack uplink, in bytes each way (in, out).
    pub busiest_uplink_bytes: (u64, u64),
    /// Seconds before the first byte moves (hashing what changed, connecting, the
    /// agents' start).
    pub start_seconds: f64,
    /// The most any host (not the origin) uploaded, in copies of the artifact.
    pub max_host_upload_copies: f64,
    /// Hops from the origin to the deepest host (over every stripe).
    pub max_depth: usize,
    /// The host `--kill` failed, when it did.
    pub killed: Option<Killed>,
}

/// A small deterministic generator (xorshift), so a seed gives the same failures.
struct Rng(u64);

impl Rng {
    /// The generator for `seed`, its state scrambled first (splitmix64): xorshift's
    /// first outputs from a small state are tiny, and seed 1 used to fail host `h1`
    /// first, at 2.7 s, at 5,000 hosts: the first datacenter's entry of stripe 0,
    /// above every host in that stripe. A draw of 1% should be a draw.
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Simulates one distribution over `t`: who finishes when, and what crossed where.
pub fn run(t: &Topology) -> Outcome {
    let members = members(t);
    let roster = Roster::new(members.clone());
    let chain: Vec<usize> = roster.order().to_vec();
    let n = chain.len();
    let pieces = t.size.div_ceil(t.piece.max(1)).max(1) as usize;
    let piece = t.piece as f64;
    let rate = |from: usize, to: usize| hop_rate(t, &members[from], &members[to]);
    // Hashing reads only what changed since the last release.
    let start = crate::plan::estimate::start_seconds((t.size as f64 * (1.0 - t.unchanged)) as u64);
    let bound = t.size as f64 / t.link as f64;
    // Failures spread over the transfer without failures.
    let span = start + bound + n as f64 * piece / t.link as f64;
    let (fail_at, mut failed) = failures(t, n, span);
    let piece_bytes = |i: usize| {
        if i + 1 == pieces {
            t.size - t.piece * (pieces as u64 - 1)
        } else {
            t.piece
        }
    };
    // Per member id: when it has the whole artifact (None: it failed); bytes per
    // (sender, receiver) member ids; the deepest host's hops.
    let mut fail_at = fail_at_member(&chain, &fail_at);
    let begin = start_offsets(t, n);
    let base = Transfer {
        pieces,
        start,
        begin: &begin,
        fail_at: &[],
        piece_bytes: &piece_bytes,
        rate: &rate,
        detect: t.detect,
        lag: t.hop_lag,
        probe: None,
    };
    let mut killed = None;
    if let Some(k) = t.kill.filter(|k| (1..=t.hosts).contains(&k.host))
        && fail_at[k.host].is_infinite()
        && let Some(at) = kill_time(t, &roster, &chain, &base, &fail_at, k)
    {
        fail_at[k.host] = at;
        failed += 1;
        killed = Some(Killed {
            host: members[k.host].name.clone(),
            at_seconds: at,
        });
    }
    let transfer = Transfer {
        fail_at: &fail_at,
        ..base
    };
    let (finished, bytes, max_depth) = shape_run(t, &roster, &chain, &transfer);
    let traffic = Traffic::of(&members, &bytes);
    Outcome {
        topology: t.clone(),
        bound_seconds: bound,
        percentiles: percentiles(&finished),
        failed_hosts: failed,
        origin_upload_bytes: traffic.origin_up,
        interconnect_in_bytes: traffic.interconnect_in,
        busiest_uplink_bytes: traffic.busiest_uplink,
        start_seconds: start,
        max_host_upload_copies: traffic.most_sent as f64 / t.size.max(1) as f64,
        max_depth,
        killed,
    }
}

/// When `k`'s victim has its fraction of the pieces, in a run without the kill.
fn kill_time(
    t: &Topology,
    roster: &Roster,
    chain: &[usize],
    base: &Transfer,
    fail_at: &[f64],
    k: Kill,
) -> Option<f64> {
    let probed = RefCell::new(Vec::new());
    let probe = Transfer {
        fail_at,
        probe: Some((k.host, &probed)),
        ..*base
    };
    shape_run(t, roster, chain, &probe);
    let mut times = probed.take();
    times.sort_by(|a, b| a.total_cmp(b));
    let needed = ((base.pieces as f64 * k.fraction).ceil() as usize).clamp(1, base.pieces);
    times.get(needed - 1).copied()
}

/// One run of the topology's shape: when each member finished, the bytes per hop,
/// the deepest host's hops.
fn shape_run(
    t: &Topology,
    roster: &Roster,
    chain: &[usize],
    tr: &Transfer,
) -> (Finished, Bytes, usize) {
    match t.shape {
        Shape::Chain => {
            let (finished, bytes) = chain_run(chain, tr);
            (finished, bytes, chain.len() - 1)
        }
        Shape::Stripes => stripes_run(roster, t.stripes, tr),
    }
}

/// The members: the origin (in the first datacenter), then the hosts `h1`.. as
/// `bench/swarm.sh` places them: the datacenters in turn, each an even share of the
/// hosts, racks alternating within each.
fn members(t: &Topology) -> Vec<Member> {
    let mut members = vec![Member {
        name: "origin".into(),
        dc: "dc1".into(),
        rack: "origin".into(),
        ip: None,
        origin: true,
    }];
    for h in 0..t.hosts {
        let dc = h * t.datacenters / t.hosts.max(1);
        let first = (t.hosts * dc).div_ceil(t.datacenters);
        let rack = (h - first) % t.racks.max(1);
        members.push(Member {
            name: format!("h{}", h + 1),
            dc: format!("dc{}", dc + 1),
            rack: format!("r{}", rack + 1),
            ip: None,
            origin: false,
        });
    }
    members
}

/// Payload rate of a hop from `a` to `b`: links carry frames, the upload cap counts
/// payload.
fn hop_rate(t: &Topology, a: &Member, b: &Member) -> f64 {
    let cap = |x: Option<u64>| x.map(|v| v as f64).unwrap_or(f64::INFINITY);
    let mut link = t.link as f64;
    if a.rack != b.rack || a.dc != b.dc {
        link = link.min(cap(t.uplink));
    }
    if a.dc != b.dc {
        link = link.min(cap(t.interconnect));
    }
    let read = if a.origin {
        cap(t.origin_read)
    } else {
        f64::INFINITY
    };
    (link * crate::plan::estimate::WIRE_EFFICIENCY)
        .min(cap(t.upload_limit))
        .min(read)
        .max(1.0)
}

/// Which hosts fail, and when (within `span` seconds), by chain position of `n`
/// (infinite: never), drawn from the seed; and how many fail.
fn failures(t: &Topology, n: usize, span: f64) -> (Vec<f64>, usize) {
    let mut rng = Rng::new(t.seed);
    let mut fail_at = vec![f64::INFINITY; n];
    let failures = ((t.hosts as f64) * t.fail).round() as usize;
    let mut failed = 0;
    while failed < failures.min(t.hosts) {
        let p = 1 + (rng.next() * t.hosts as f64) as usize % t.hosts;
        if fail_at[p].is_infinite() {
            fail_at[p] = rng.next() * span;
            failed += 1;
        }
    }
    (fail_at, failed)
}

/// When each member's agent comes up, seconds after `start`, by member id: the
/// origin at once, each host at a moment drawn uniformly from `start_spread`.
///
/// The controller sends every command at once, feeders first, but the agents come
/// up in their own order. A host that comes up late holds up every host it feeds
/// (the tracker keeps a chain's order and a tree's parents while they start). On
/// `bench/swarm.sh`'s 2 cores, 48 agents came up over 3.4 to 6.7 s, in no relation to
/// their place: that was the remote user's `~/.bashrc` (`pyenv init`, about 100
/// processes before every command sshd runs), paid by every host on the same 2 cores.
/// With it empty, 0.1 to 0.4 s. A real fleet pays such costs on each host's own CPU.
/// The draws come from their own generator, so a spread leaves the failures as they
/// were.
fn start_offsets(t: &Topology, n: usize) -> Vec<f64> {
    let mut rng = Rng::new(t.seed ^ 0x5eed_5eed_5eed_5eed);
    (0..n)
        .map(|m| {
            if m == 0 {
                0.0
            } else {
                rng.next() * t.start_spread
            }
        })
        .collect()
}

/// Completion time percentiles (p50, p90, p99, max) of the hosts that finished
/// (the origin, first, left out).
fn percentiles(finished: &Finished) -> BTreeMap<String, f64> {
    let mut finish: Vec<f64> = finished.iter().skip(1).flatten().copied().collect();
    finish.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| -> f64 {
        if finish.is_empty() {
            return 0.0;
        }
        let i = ((q * finish.len() as f64).ceil() as usize).clamp(1, finish.len()) - 1;
        finish[i]
    };
    let mut percentiles = BTreeMap::new();
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        percentiles.insert(name.to_string(), pct(q));
    }
    percentiles
}

/// Where the bytes went: the origin's upload, the interconnects and rack uplinks.
struct Traffic {
    origin_up: u64,
    /// Bytes into each datacenter over its interconnect.
    interconnect_in: BTreeMap<String, u64>,
    /// The busiest rack uplink (not the origin's), bytes (in, out).
    busiest_uplink: (u64, u64),
    /// The most any host (not the origin) sent.
    most_sent: u64,
}

impl Traffic {
    /// Sums `bytes` per (sender, receiver) member ids by where they crossed.
    fn of(members: &[Member], bytes: &Bytes) -> Traffic {
        let mut interconnect_in: BTreeMap<String, u64> = BTreeMap::new();
        let mut uplink: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut origin_up = 0;
        let mut sent: BTreeMap<usize, u64> = BTreeMap::new();
        for (&(f, p), &bytes) in bytes {
            let (a, b) = (&members[f], &members[p]);
            if a.origin {
                origin_up += bytes;
            } else {
                *sent.entry(f).or_default() += bytes;
            }
            if a.dc != b.dc {
                *interconnect_in.entry(b.dc.clone()).or_default() += bytes;
            }
            if a.rack != b.rack || a.dc != b.dc {
                uplink.entry(format!("{}/{}", a.dc, a.rack)).or_default().1 += bytes;
                uplink.entry(format!("{}/{}", b.dc, b.rack)).or_default().0 += bytes;
            }
        }
        let busiest_uplink = uplink
            .into_iter()
            .filter(|(k, _)| !k.ends_with("/origin"))
            .map(|(_, v)| v)
            .max_by_key(|(i, o)| (*i).max(*o))
            .unwrap_or((0, 0));
        Traffic {
            origin_up,
            interconnect_in,
            busiest_uplink,
            most_sent: sent.values().copied().max().unwrap_or(0),
        }
    }
}

/// `fail_at` by chain position, as by member id.
fn fail_at_member(chain: &[usize], fail_at: &[f64]) -> Vec<f64> {
    let mut out = vec![f64::INFINITY; chain.len()];
    for (p, &m) in chain.iter().enumerate() {
        out[m] = fail_at[p];
    }
    out
}

type Finished = Vec<Option<f64>>;
type Bytes = BTreeMap<(usize, usize), u64>;

/// What either shape moves, and over what: the same for the chain and the trees.
struct Transfer<'a> {
    pieces: usize,
    /// When the first agent may ask for its first piece.
    start: f64,
    /// When each member's agent comes up after `start`, by member id.
    begin: &'a [f64],
    /// When each member fails, by member id (infinite: never).
    fail_at: &'a [f64],
    piece_bytes: &'a dyn Fn(usize) -> u64,
    /// A hop's whole payload rate, from member to member.
    rate: &'a dyn Fn(usize, usize) -> f64,
    /// From a failure until those fed by the failed host are re-linked.
    detect: f64,
    /// What each hop adds beyond its piece.
    lag: f64,
    /// A member whose piece times to record (for `--kill`), and where.
    probe: Option<(usize, &'a RefCell<Vec<f64>>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(hosts: usize, fail: f64) -> Topology {
        Topology {
            shape: Shape::Chain,
            stripes: 8,
            detect: DETECT,
            hosts,
            datacenters: 2,
            racks: 2,
            size: 512 << 20,
            piece: 1 << 20,
            link: 50_000_000,
            uplink: None,
            interconnect: None,
            upload_limit: None,
            origin_read: None,
            fail,
            kill: None,
            hop_lag: 0.0,
            unchanged: 0.0,
            start_spread: 0.0,
            seed: 7,
        }
    }

    #[test]
    fn a_healthy_pipeline_finishes_near_the_bound_with_one_copy_per_boundary() {
        let o = run(&topo(16, 0.0));
        let max = o.percentiles["max"];
        // Start-up + S/C + one piece per hop after the first, at the payload rate.
        let payload = 50e6 * crate::plan::estimate::WIRE_EFFICIENCY;
        let want = crate::plan::estimate::start_seconds(512 << 20)
            + (512u64 << 20) as f64 / payload
            + 15.0 * (1 << 20) as f64 / payload;
        assert!((max - want).abs() < 0.01, "{max} vs {want}");
        assert_eq!(o.origin_upload_bytes, 512 << 20);
        assert_eq!(o.interconnect_in_bytes.get("dc2"), Some(&(512 << 20)));
        assert_eq!(o.interconnect_in_bytes.len(), 1);
    }

    /// An origin that reads the artifact more slowly than its link paces everyone.
    #[test]
    fn an_origin_reading_slower_than_its_link_paces_the_transfer() {
        let fast = run(&topo(16, 0.0));
        let read = 20_000_000u64;
        let slow = run(&Topology {
            origin_read: Some(read),
            ..topo(16, 0.0)
        });
        let floor =
            crate::plan::estimate::start_seconds(512 << 20) + (512u64 << 20) as f64 / read as f64;
        assert!(slow.percentiles["max"] >= floor, "{:?}", slow.percentiles);
        assert!(fast.percentiles["max"] < floor, "{:?}", fast.percentiles);
        assert_eq!(slow.origin_upload_bytes, 512 << 20);
    }

    #[test]
    fn failures_cost_time_not_completeness() {
        let healthy = run(&topo(64, 0.0));
        let o = run(&topo(64, 0.1));
        assert_eq!(o.failed_hosts, 6);
        assert!(o.percentiles["max"] >= healthy.percentiles["max"]);
        assert!(o.percentiles["max"].is_finite());
        // The same seed, the same answer.
        assert_eq!(run(&topo(64, 0.1)).percentiles, o.percentiles);
    }

    #[test]
    fn striped_trees_grow_with_log_n_where_the_chain_grows_with_n() {
        let mut chain = topo(400, 0.0);
        chain.racks = 8;
        let mut striped = chain.clone();
        striped.shape = Shape::Stripes;
        let (c, s) = (run(&chain), run(&striped));
        assert_eq!(c.max_depth, 400);
        assert!(s.max_depth <= 12, "depth {}", s.max_depth);
        // The chain pays a piece per hop; the trees a few (slower) hops.
        assert!(
            s.percentiles["max"] < c.percentiles["max"],
            "{s:?} vs {c:?}"
        );
        // Every host gets the whole artifact: the bytes into hosts add up.
        assert_eq!(s.origin_upload_bytes, 512 << 20);
        assert!(
            s.max_host_upload_copies <= 1.2 + 1e-9,
            "{}",
            s.max_host_upload_copies
        );
        assert!(s.interconnect_in_bytes["dc2"] <= (512u64 << 20) * 11 / 10);
    }

    #[test]
    fn a_late_agent_holds_up_the_hosts_it_feeds_and_no_host_starts_early() {
        for shape in [Shape::Chain, Shape::Stripes] {
            let at_once = Topology {
                shape,
                ..topo(32, 0.0)
            };
            let spread = Topology {
                start_spread: 5.0,
                ..at_once.clone()
            };
            let (a, b) = (run(&at_once), run(&spread));
            let begin = start_offsets(&spread, 33);
            assert!(begin[1..].iter().all(|&x| (0.0..5.0).contains(&x)));
            assert!(begin[1..].iter().any(|&x| x > 2.5), "{begin:?}");
            // Each host finishes no sooner than it came up plus the whole artifact
            // at its link: its own start is in the model.
            let payload = 50e6 * crate::plan::estimate::WIRE_EFFICIENCY;
            let roster = Roster::new(members(&spread));
            let (finished, _, _) = shape_run(
                &spread,
                &roster,
                roster.order(),
                &Transfer {
                    pieces: 512,
                    start: b.start_seconds,
                    begin: &begin,
                    fail_at: &[f64::INFINITY; 33],
                    piece_bytes: &|_| 1 << 20,
                    rate: &|_, _| payload,
                    detect: DETECT,
                    lag: 0.0,
                    probe: None,
                },
            );
            for m in 1..33 {
                let f = finished[m].expect("no failures");
                assert!(
                    f >= b.start_seconds + begin[m] + (512u64 << 20) as f64 / payload - 1e-9,
                    "{shape:?}: member {m} at {f} came up at {}",
                    begin[m]
                );
            }
            // And a late one holds up those it feeds: the slowest host is later than
            // when all come up at once, by most of the spread.
            assert!(
                b.percentiles["max"] > a.percentiles["max"] + 2.5,
                "{shape:?}: {:?} vs {:?}",
                b.percentiles,
                a.percentiles
            );
            // The same seed, the same draws.
            assert_eq!(run(&spread).percentiles, b.percentiles);
        }
    }

    #[test]
    fn striped_trees_survive_failures_through_the_trackers_re_link() {
        let mut t = topo(200, 0.05);
        t.shape = Shape::Stripes;
        let o = run(&t);
        assert_eq!(o.failed_hosts, 10);
        assert!(o.percentiles["max"].is_finite(), "{o:?}");
        let healthy = run(&Topology {
            fail: 0.0,
            ..t.clone()
        });
        assert!(o.percentiles["max"] >= healthy.percentiles["max"]);
        // No survivor starved: the percentiles are over every surviving host.
        assert_eq!(run(&t).percentiles, o.percentiles);
    }

    #[test]
    fn each_hop_adds_its_lag_to_the_chain_and_the_deepest_stripe() {
        let base = run(&topo(16, 0.0));
        let lagged = run(&Topology {
            hop_lag: 0.2,
            ..topo(16, 0.0)
        });
        // 15 hops after the first, each 0.2 s later.
        let added = lagged.percentiles["max"] - base.percentiles["max"];
        assert!((added - 15.0 * 0.2).abs() < 0.01, "{added}");
        let mut s = topo(16, 0.0);
        s.shape = Shape::Stripes;
        let (b, l) = (
            run(&s),
            run(&Topology {
                hop_lag: 0.2,
                ..s.clone()
            }),
        );
        let added = l.percentiles["max"] - b.percentiles["max"];
        assert!(
            added > 0.0 && added <= b.max_depth as f64 * 0.2 + 0.01,
            "{added}"
        );
    }

    #[test]
    fn a_killed_host_dies_a_third_of_the_way_and_its_successors_wait_for_the_re_link() {
        for shape in [Shape::Chain, Shape::Stripes] {
            let mut t = topo(16, 0.0);
            t.shape = shape;
            let healthy = run(&t);
            t.kill = Some(Kill {
                host: 5,
                fraction: 1.0 / 3.0,
            });
            let o = run(&t);
            let k = o.killed.clone().expect("h5 was killed");
            assert_eq!(k.host, "h5");
            assert_eq!(o.failed_hosts, 1);
            // A third of the way: after the start, before the healthy run's end.
            let start = o.start_seconds;
            let end = healthy.percentiles["max"];
            assert!(
                k.at_seconds > start + (end - start) / 4.0
                    && k.at_seconds < start + (end - start) / 2.0,
                "{shape:?}: {} in {start}..{end}",
                k.at_seconds
            );
            // Someone was fed by h5 and waited for the re-link; nobody starved.
            assert!(o.percentiles["max"] > end, "{shape:?}: {o:?}");
            assert!(
                o.percentiles["max"] <= end + t.detect + 1.0,
                "{shape:?}: {o:?}"
            );
        }
    }

    #[test]
    fn a_slow_interconnect_paces_the_whole_chain() {
        let mut t = topo(8, 0.0);
        t.interconnect = Some(10_000_000);
        let o = run(&t);
        assert!(o.percentiles["max"] > (512u64 << 20) as f64 / 10e6);
    }
}
