//! Striped trees (`sharing: stripes`): each stripe fed down its own tree, at each
//! hop's share of the parent's upload, failures re-linked as the tracker does.

use super::*;

/// `[stripe][member]`: from when, which parent, and how many children it feeds.
type Timeline = Vec<Vec<Vec<(f64, usize, f64)>>>;

/// Striped trees, as the tracker builds them ([`Trees`]): member m gets the pieces
/// of stripe s (i % k == s) from its parent in s, in order, at its share of the hop:
/// the parent's upload split among its children, m's download among its k parents.
/// Failures are re-linked by the tracker's own [`Trees::relink`], in the order they
/// happen; an orphan takes its later pieces from its new parent from `detect` after
/// the failure. Hosts done early then help their rack-mates furthest behind
/// ([`helpers`]), a second run.
pub(super) fn stripes_run(roster: &Roster, k: usize, tr: &Transfer) -> (Finished, Bytes, usize) {
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
    let mut sim = StripeSim {
        tr,
        k,
        timeline: &timeline,
        help: vec![None; n],
    };
    // The trees alone, then again with the help their finished hosts give, if any.
    let (done, bytes) = fill(&sim, root, pieces);
    let finished = finish(&done, fail_at);
    sim.help = helpers(roster, root, &sim, &done, &finished);
    if sim.help.iter().all(Option::is_none) {
        return (finished, bytes, max_depth);
    }
    if let Some((_, times)) = tr.probe {
        // What the probed member got in the second run only.
        times.borrow_mut().clear();
    }
    let (done, bytes) = fill(&sim, root, pieces);
    (finish(&done, fail_at), bytes, max_depth)
}

/// `done[s][m][j]`: when m has the j-th piece of stripe s; computed parents first.
type Done = Vec<Vec<Option<Vec<f64>>>>;

/// Every stripe down its trees (and from helpers): when each member has each piece,
/// and the bytes of each hop.
fn fill(sim: &StripeSim, root: usize, pieces: usize) -> (Done, Bytes) {
    let (k, n) = (sim.k, sim.help.len());
    let mut done: Done = vec![vec![None; n]; k];
    let mut bytes: Bytes = BTreeMap::new();
    for s in 0..k {
        let count = if s < pieces {
            (pieces - s).div_ceil(k)
        } else {
            0
        };
        done[s][root] = Some(vec![0.0; count]);
        for m in 0..n {
            stripe_of(sim, s, m, count, &mut done, &mut bytes);
        }
    }
    (done, bytes)
}

/// When each member has the whole artifact (None: it failed).
fn finish(done: &Done, fail_at: &[f64]) -> Finished {
    (0..fail_at.len())
        .map(|m| {
            if fail_at[m].is_finite() {
                return None;
            }
            done.iter()
                .filter_map(|d| d[m].as_ref()?.iter().copied().reduce(f64::max))
                .reduce(f64::max)
                .or(Some(0.0))
        })
        .collect()
}

/// Who helps whom, from when, as the tracker pairs them
/// ([`crate::tracker::stripes::helpee`]): a host with its copy, once every host it
/// fed in the trees has theirs, helps the rack-mate with the most bytes left that
/// no other helps; the pair starts [`HELP_AFTER`] later (a poll of each).
///
/// The helper fills what the helpee's download has left over: of its k stripes, the
/// `a` still fetched when help starts take a/k of the link from their parents, so
/// the helper sends at (k - a)/k of its hop, split evenly over those `a` stripes.
/// What frees up later, as more stripes finish, is not counted, and each host helps
/// once here (the tracker lets it help again when its helpee is done): the model
/// gives less help than the tracker does.
fn helpers(
    roster: &Roster,
    root: usize,
    sim: &StripeSim,
    done: &Done,
    finished: &Finished,
) -> Vec<Option<Help>> {
    let tr = sim.tr;
    let n = finished.len();
    // Until when each host feeds a child in the trees.
    let mut busy: Vec<f64> = finished
        .iter()
        .map(|f| f.unwrap_or(f64::INFINITY))
        .collect();
    // timeline[s][c], flattened: entry i is member i % n's feeders in a stripe.
    for (i, line) in sim.timeline.iter().flatten().enumerate() {
        let c = i % n;
        let until = finished[c].unwrap_or(tr.fail_at[c]);
        for &(_, p, _) in line {
            busy[p] = busy[p].max(until);
        }
    }
    let mut free: Vec<(f64, usize)> = (0..n)
        .filter(|&h| h != root && busy[h].is_finite())
        .map(|h| (busy[h], h))
        .collect();
    free.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let left_at = |m: usize, t: f64| -> u64 {
        let mut left = 0;
        for (s, d) in done.iter().enumerate() {
            if let Some(d) = &d[m] {
                for (j, &at) in d.iter().enumerate() {
                    if at > t {
                        left += (tr.piece_bytes)(s + j * sim.k);
                    }
                }
            }
        }
        left
    };
    let mut help: Vec<Option<Help>> = vec![None; n];
    for (at, h) in free {
        let asked = at + HELP_AFTER / 2.0;
        let candidates = roster.rack_hosts[roster.rack_of[h]]
            .iter()
            .copied()
            .filter(|&c| {
                c != h
                    && help[c].is_none()
                    && tr.fail_at[c] > asked
                    && finished[c].is_some_and(|f| f > asked)
            })
            .map(|c| (c, left_at(c, asked)));
        let Some(c) = crate::tracker::stripes::helpee(candidates) else {
            continue;
        };
        let since = at + HELP_AFTER;
        let fetching = done
            .iter()
            .filter(|d| d[c].as_ref().is_some_and(|d| d.iter().any(|&t| t > since)))
            .count();
        if fetching == 0 || fetching == sim.k {
            continue;
        }
        help[c] = Some(Help {
            from_member: h,
            since,
            share: (sim.k - fetching) as f64 / (sim.k * fetching) as f64,
        });
    }
    help
}

/// A finished rack-mate that helps a member: who, from when, and the share of its
/// hop each stripe still fetched gets.
#[derive(Debug, Clone, Copy)]
struct Help {
    from_member: usize,
    since: f64,
    share: f64,
}

/// What every stripe of one simulation shares.
struct StripeSim<'a> {
    tr: &'a Transfer<'a>,
    k: usize,
    timeline: &'a Timeline,
    /// Each member's helper ([`helpers`]).
    help: Vec<Option<Help>>,
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
    let mut prev = tr.start + tr.begin[m];
    // A helper is a second source of every stripe.
    let helper = sim.help[m];
    let mut prev_helped = helper.map_or(f64::INFINITY, |h| h.since);
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
                    prev.max(avail + tr.lag).max(since) + (tr.piece_bytes)(i) as f64 / hop,
                    p,
                ))
            });
        let helped = helper.map(|h| {
            let hop = (tr.rate)(h.from_member, m) * h.share;
            (
                prev_helped + (tr.piece_bytes)(i) as f64 / hop,
                h.from_member,
            )
        });
        let ((at, p), by_helper) = match (found, helped) {
            (Some(tree), Some(h)) if h.0 < tree.0 => (h, true),
            (Some(tree), _) => (tree, false),
            (None, Some(h)) => (h, true),
            (None, None) => break,
        };
        if at > tr.fail_at[m] {
            break;
        }
        mine.push(at);
        if by_helper {
            prev_helped = at;
        } else {
            prev = at;
        }
        *bytes.entry((p, m)).or_default() += (tr.piece_bytes)(i);
    }
    if let Some((probed, times)) = tr.probe
        && probed == m
    {
        times.borrow_mut().extend_from_slice(&mine);
    }
    done[s][m] = Some(mine);
}
