//! The chain (`sharing: pipeline`): each host fed by the one before it, piece after
//! piece, a failed feeder skipped once its successor notices.

use super::*;

/// The chain: position p gets piece i from p - 1 once it has it (and `lag` has
/// passed), one piece after another; a failed feeder is skipped after `detect`.
pub(super) fn chain_run(chain: &[usize], tr: &Transfer) -> (Finished, Bytes) {
    let Transfer {
        pieces,
        start,
        begin,
        fail_at,
        piece_bytes,
        rate,
        detect,
        lag,
        probe,
    } = *tr;
    let n = chain.len();
    // done[p][i]: when chain position p has piece i (the origin has all at 0).
    let mut done: Vec<Vec<f64>> = vec![vec![0.0; pieces]];
    let mut bytes: Bytes = BTreeMap::new();
    let mut finished = vec![None; n];
    finished[chain[0]] = Some(0.0);
    for p in 1..n {
        let mut mine = vec![f64::INFINITY; pieces];
        let me = chain[p];
        let mut prev = start + begin[me];
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
            let at =
                prev.max(avail + lag).max(earliest) + piece_bytes(i) as f64 / rate(chain[f], me);
            if at > fail_at[me] {
                break; // this host fails before it has the piece
            }
            mine[i] = at;
            prev = at;
            *bytes.entry((chain[f], me)).or_default() += piece_bytes(i);
        }
        if let Some((m, times)) = probe
            && m == me
        {
            times
                .borrow_mut()
                .extend(mine.iter().copied().filter(|t| t.is_finite()));
        }
        if fail_at[me].is_infinite() {
            finished[me] = Some(mine[pieces - 1]);
        }
        done.push(mine);
    }
    (finished, bytes)
}
