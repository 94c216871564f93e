//! `rookery simulate`: distribution over a generated topology, too large to build
//! (thousands of hosts, several datacenters), with the tracker's own pipeline order
//! ([`crate::tracker::roster::Roster`]) and its failure handling.
//!
//! The model is piece-level and deterministic for a seed. Host *k* of the chain gets
//! piece *i* from its feeder once the feeder has it, one piece after another:
//!
//! ```text
//! done[k][i] = max(done[k][i-1], done[feeder][i]) + piece / rate(feeder -> k)
//! ```
//!
//! where a hop's rate is the least of the two hosts' links, the caps, both racks'
//! uplinks when it leaves a rack and both datacenters' interconnects when it leaves a
//! datacenter. A host that fails at time `t` stops serving; its successor notices after
//! [`DETECT`] (one missed announce) and takes every later piece from the nearest live
//! host before it, as the tracker arranges. Start-up is the same as in the plan's
//! estimate ([`crate::plan::estimate::start_seconds`]: hashing the artifact, connecting,
//! one command per host, the first announce) for every host, and rates carry the
//! same TCP/IP overhead ([`crate::plan::estimate::WIRE_EFFICIENCY`]).
//!
//! What it leaves out: TCP slow start and per-piece request latency (small at these
//! piece sizes), disk speed, the hosts' CPU, and other traffic on the links.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::units::{ByteSize, Rate};
use crate::tracker::roster::{Member, Roster};
use crate::tracker::stripes::Trees;

/// How long a successor takes to notice its feeder is gone in the chain (the
/// tracker's first missed announce).
pub const DETECT: f64 = 3.0;
/// The same for striped trees: a parent silent for
/// [`crate::tracker::swarm::STRIPE_SILENT_AFTER`] (2 s) is re-linked around at its children's
/// next poll (every second).
pub const DETECT_STRIPES: f64 = 3.0;

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
    /// Fraction of hosts that fail during the transfer.
    pub fail: f64,
    /// Fraction of the artifact in files unchanged since the last release, whose
    /// hashes the controller reuses instead of reading them (see
    /// `metainfo::CreateOptions::reuse`).
    pub unchanged: f64,
    pub seed: u64,
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
}

/// A small deterministic generator (xorshift), so a seed gives the same failures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn run(t: &Topology) -> Outcome {
    // Members: the origin (in the first datacenter), then the hosts, spread evenly.
    let mut members = vec![Member {
        name: "origin".into(),
        dc: "dc1".into(),
        rack: "origin".into(),
        ip: None,
        origin: true,
    }];
    for h in 0..t.hosts {
        let dc = h * t.datacenters / t.hosts.max(1);
        let in_dc =
            (t.hosts * (dc + 1)).div_ceil(t.datacenters) - (t.hosts * dc).div_ceil(t.datacenters);
        let first = (t.hosts * dc).div_ceil(t.datacenters);
        let rack = (h - first) * t.racks / in_dc.max(1);
        members.push(Member {
            name: format!("h{h}"),
            dc: format!("dc{}", dc + 1),
            rack: format!("r{}", rack + 1),
            ip: None,
            origin: false,
        });
    }
    let roster = Roster::new(members.clone());
    let chain: Vec<usize> = roster.order().to_vec();
    let n = chain.len();
    let pieces = t.size.div_ceil(t.piece.max(1)).max(1) as usize;
    let piece = t.piece as f64;
    let cap = |x: Option<u64>| x.map(|v| v as f64).unwrap_or(f64::INFINITY);
    // Payload rate of a hop: links carry frames, the upload cap counts payload.
    let rate = |from: usize, to: usize| -> f64 {
        let (a, b) = (&members[from], &members[to]);
        let mut link = t.link as f64;
        if a.rack != b.rack || a.dc != b.dc {
            link = link.min(cap(t.uplink));
        }
        if a.dc != b.dc {
            link = link.min(cap(t.interconnect));
        }
        (link * crate::plan::estimate::WIRE_EFFICIENCY)
            .min(cap(t.upload_limit))
            .max(1.0)
    };
    // Hashing reads only what changed since the last release.
    let start = crate::plan::estimate::start_seconds((t.size as f64 * (1.0 - t.unchanged)) as u64);
    let bound = t.size as f64 / t.link as f64;

    // Failures: which hosts, and when (spread over the transfer without failures).
    let mut rng = Rng(t.seed.max(1));
    let span = start + bound + n as f64 * piece / t.link as f64;
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

    let piece_bytes = |i: usize| {
        if i + 1 == pieces {
            t.size - t.piece * (pieces as u64 - 1)
        } else {
            t.piece
        }
    };
    // Per member id: when it has the whole artifact (None: it failed); bytes per
    // (sender, receiver) member ids; the deepest host's hops.
    let fail_at = fail_at_member(&chain, &fail_at);
    let transfer = Transfer {
        pieces,
        start,
        fail_at: &fail_at,
        piece_bytes: &piece_bytes,
        rate: &rate,
        detect: t.detect,
    };
    let (finished, bytes, max_depth) = match t.shape {
        Shape::Chain => {
            let (finished, bytes) = chain_run(&chain, &transfer);
            (finished, bytes, n - 1)
        }
        Shape::Stripes => stripes_run(&roster, t.stripes, &transfer),
    };

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
    let mut interconnect_in: BTreeMap<String, u64> = BTreeMap::new();
    let mut uplink: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut origin_up = 0;
    let mut sent: BTreeMap<usize, u64> = BTreeMap::new();
    for (&(f, p), &bytes) in &bytes {
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
    let busiest = uplink
        .into_iter()
        .filter(|(k, _)| !k.ends_with("/origin"))
        .map(|(_, v)| v)
        .max_by_key(|(i, o)| (*i).max(*o))
        .unwrap_or((0, 0));
    Outcome {
        topology: t.clone(),
        bound_seconds: bound,
        percentiles,
        failed_hosts: failed,
        origin_upload_bytes: origin_up,
        interconnect_in_bytes: interconnect_in,
        busiest_uplink_bytes: busiest,
        start_seconds: start,
        max_host_upload_copies: sent.values().copied().max().unwrap_or(0) as f64
            / t.size.max(1) as f64,
        max_depth,
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
/// `[stripe][member]`: from when, which parent, and how many children it feeds.
type Timeline = Vec<Vec<Vec<(f64, usize, f64)>>>;
type Bytes = BTreeMap<(usize, usize), u64>;

/// What either shape moves, and over what: the same for the chain and the trees.
struct Transfer<'a> {
    pieces: usize,
    /// When every host may ask for its first piece.
    start: f64,
    /// When each member fails, by member id (infinite: never).
    fail_at: &'a [f64],
    piece_bytes: &'a dyn Fn(usize) -> u64,
    /// A hop's whole payload rate, from member to member.
    rate: &'a dyn Fn(usize, usize) -> f64,
    /// From a failure until those fed by the failed host are re-linked.
    detect: f64,
}

/// The chain: position p gets piece i from p - 1 once it has it, one piece after
/// another; a failed feeder is skipped after `detect`.
fn chain_run(chain: &[usize], tr: &Transfer) -> (Finished, Bytes) {
    let Transfer {
        pieces,
        start,
        fail_at,
        piece_bytes,
        rate,
        detect,
    } = *tr;
    let n = chain.len();
    // done[p][i]: when chain position p has piece i (the origin has all at 0).
    let mut done: Vec<Vec<f64>> = vec![vec![0.0; pieces]];
    let mut bytes: Bytes = BTreeMap::new();
    let mut finished = vec![None; n];
    finished[chain[0]] = Some(0.0);
    for p in 1..n {
        let mut mine = vec![f64::INFINITY; pieces];
        let mut prev = start;
        let me = chain[p];
        for i in 0..pieces {
            // The nearest live feeder for this piece: the predecessor, or, once it
            // failed (and `detect` passed), the next one up the chain.
            let mut f = p - 1;
            let mut avail = done[f][i];
            let mut earliest = 0.0f64;
            while avail > fail_at[chain[f]] && f > 0 {
                earliest = earliest.max(fail_at[chain[f]] + detect);
                f -= 1;
                avail = done[f][i];
            }
            let at = prev.max(avail).max(earliest) + piece_bytes(i) as f64 / rate(chain[f], me);
            if at > fail_at[me] {
                break; // this host fails before it has the piece
            }
            mine[i] = at;
            prev = at;
            *bytes.entry((chain[f], me)).or_default() += piece_bytes(i);
        }
        if fail_at[me].is_infinite() {
            finished[me] = Some(mine[pieces - 1]);
        }
        done.push(mine);
    }
    (finished, bytes)
}

/// Striped trees, as the tracker builds them ([`Trees`]): member m gets the pieces
/// of stripe s (i % k == s) from its parent in s, in order, at its share of the hop:
/// the parent's upload split among its children, m's download among its k parents.
/// Failures are re-linked by the tracker's own [`Trees::relink`], in the order they
/// happen; an orphan takes its later pieces from its new parent from `detect` after
/// the failure.
fn stripes_run(roster: &Roster, k: usize, tr: &Transfer) -> (Finished, Bytes, usize) {
    let (pieces, fail_at) = (tr.pieces, tr.fail_at);
    let n = roster.members().len();
    let mut trees = Trees::build(roster, k).expect("a generated roster has an origin");
    let root = trees.root();
    let children = |t: &Trees, m: usize| t.slots_used(m).max(1) as f64;
    // Who feeds (s, m) from when: the tree as built, then each re-link.
    let mut timeline: Timeline = (0..k)
        .map(|s| {
            (0..n)
                .map(|m| match trees.parent(s, m) {
                    Some(p) => vec![(0.0, p, children(&trees, p))],
                    None => Vec::new(),
                })
                .collect()
        })
        .collect();
    let mut failing: Vec<usize> = (0..n).filter(|&m| fail_at[m].is_finite()).collect();
    failing.sort_by(|&a, &b| fail_at[a].total_cmp(&fail_at[b]));
    for &f in &failing {
        let Ok(edges) = trees.relink(&[f]) else {
            continue;
        };
        for e in edges {
            let c = children(&trees, e.to);
            timeline[e.stripe][e.member].push((fail_at[f] + tr.detect, e.to, c));
        }
    }
    let max_depth = trees.max_depth() as usize;
    // done[s][m][j]: when m has the j-th piece of stripe s; computed parents first.
    let mut done: Vec<Vec<Option<Vec<f64>>>> = vec![vec![None; n]; k];
    let mut bytes: Bytes = BTreeMap::new();
    let sim = StripeSim {
        tr,
        k,
        timeline: &timeline,
    };
    for s in 0..k {
        let count = if s < pieces {
            (pieces - s).div_ceil(k)
        } else {
            0
        };
        done[s][root] = Some(vec![0.0; count]);
        for m in 0..n {
            stripe_of(&sim, s, m, count, &mut done, &mut bytes);
        }
    }
    let finished = (0..n)
        .map(|m| {
            if fail_at[m].is_finite() {
                return None;
            }
            (0..k)
                .filter_map(|s| done[s][m].as_ref().and_then(|d| d.last().copied()))
                .reduce(f64::max)
                .or(Some(0.0))
        })
        .collect();
    (finished, bytes, max_depth)
}

/// What every stripe of one simulation shares.
struct StripeSim<'a> {
    tr: &'a Transfer<'a>,
    k: usize,
    timeline: &'a Timeline,
}

/// Fills `done[s][m]` (`count` pieces), its feeders' first (depth-first up the tree).
fn stripe_of(
    sim: &StripeSim,
    s: usize,
    m: usize,
    count: usize,
    done: &mut [Vec<Option<Vec<f64>>>],
    bytes: &mut Bytes,
) {
    if done[s][m].is_some() {
        return;
    }
    // In progress: a parent that (through re-links) hangs below m cannot have been
    // its source; seen as having nothing.
    done[s][m] = Some(Vec::new());
    let line = &sim.timeline[s][m];
    for &(_, p, _) in line {
        stripe_of(sim, s, p, count, done, bytes);
    }
    let tr = sim.tr;
    let mut mine = Vec::with_capacity(count);
    let mut prev = tr.start;
    for j in 0..count {
        let i = s + j * sim.k;
        // The feeder in charge when this piece is asked for; one that fails before
        // it has the piece hands over at the next re-link.
        let found = line
            .iter()
            .enumerate()
            .find_map(|(e, &(since, p, shared))| {
                let until = line.get(e + 1).map_or(f64::INFINITY, |x| x.0);
                let avail = done[s][p]
                    .as_ref()
                    .and_then(|d| d.get(j).copied())
                    .unwrap_or(f64::INFINITY);
                if avail > tr.fail_at[p] || until <= prev.max(since) {
                    return None;
                }
                let hop = (tr.rate)(p, m) / shared.max(sim.k as f64);
                Some((
                    prev.max(avail).max(since) + (tr.piece_bytes)(i) as f64 / hop,
                    p,
                ))
            });
        let Some((at, p)) = found else { break };
        if at > tr.fail_at[m] {
            break;
        }
        mine.push(at);
        prev = at;
        *bytes.entry((p, m)).or_default() += (tr.piece_bytes)(i);
    }
    done[s][m] = Some(mine);
}

/// The text report.
pub fn render(o: &Outcome) -> String {
    let t = &o.topology;
    let mut s = String::new();
    let rate = |b: u64| Rate(b).to_string();
    let _ = writeln!(
        s,
        "Simulated {}: {} hosts in {} datacenters x {} racks, {} in {} pieces",
        match t.shape {
            Shape::Chain => "pipeline (one chain)".to_string(),
            Shape::Stripes => format!("striped trees ({} stripes)", t.stripes),
        },
        t.hosts,
        t.datacenters,
        t.racks,
        ByteSize(t.size),
        ByteSize(t.piece)
    );
    let _ = writeln!(
        s,
        "  links      host {}, rack uplink {}, interconnect {}{}",
        rate(t.link),
        t.uplink.map(rate).unwrap_or_else(|| "unlimited".into()),
        t.interconnect
            .map(rate)
            .unwrap_or_else(|| "unlimited".into()),
        t.upload_limit
            .map(|u| format!(", upload_limit {}", rate(u)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  failures   {} host(s) fail during the transfer (seed {}), re-linked after {:.1}s",
        o.failed_hosts, t.seed, t.detect
    );
    let _ = writeln!(s, "  bound      S/C = {:.1}s", o.bound_seconds);
    let _ = writeln!(
        s,
        "  start      {:.1}s before the first byte (hashing {:.0}% of the artifact)",
        o.start_seconds,
        (1.0 - t.unchanged) * 100.0
    );
    let _ = write!(s, "  finished  ");
    for (k, v) in &o.percentiles {
        let _ = write!(s, " {k} {v:.1}s ({:.2} x S/C)", v / o.bound_seconds);
    }
    let _ = writeln!(s);
    let copies = |b: u64| b as f64 / t.size as f64;
    let _ = writeln!(
        s,
        "  origin     uploads {} ({:.2} copies)",
        ByteSize(o.origin_upload_bytes),
        copies(o.origin_upload_bytes)
    );
    for (dc, b) in &o.interconnect_in_bytes {
        let _ = writeln!(
            s,
            "  into {dc:<6} {} over its interconnect ({:.2} copies)",
            ByteSize(*b),
            copies(*b)
        );
    }
    let _ = writeln!(
        s,
        "  hosts      the busiest uploads {:.2} copies; the deepest is {} hops from the origin",
        o.max_host_upload_copies, o.max_depth
    );
    let (i, out) = o.busiest_uplink_bytes;
    let _ = writeln!(
        s,
        "  uplinks    the busiest rack uplink carries {} in, {} out",
        ByteSize(i),
        ByteSize(out)
    );
    s
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
            fail,
            unchanged: 0.0,
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
    fn a_slow_interconnect_paces_the_whole_chain() {
        let mut t = topo(8, 0.0);
        t.interconnect = Some(10_000_000);
        let o = run(&t);
        assert!(o.percentiles["max"] > (512u64 << 20) as f64 / 10e6);
    }
}
