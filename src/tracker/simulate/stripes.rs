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
/// the failure.
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
    let mut prev = tr.start + tr.begin[m];
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
        let Some((at, p)) = found else { break };
        if at > tr.fail_at[m] {
            break;
        }
        mine.push(at);
        prev = at;
        *bytes.entry((p, m)).or_default() += (tr.piece_bytes)(i);
    }
    if let Some((probed, times)) = tr.probe
        && probed == m
    {
        times.borrow_mut().extend_from_slice(&mine);
    }
    done[s][m] = Some(mine);
}
