//! Services side by side: each service starts once every service it follows
//! (`Work::after`) is done, up to `rollout.max_parallel_services` at once, and each
//! keeps its own quorum, budgets and canary gate (`batch.rs`). The record is shared
//! by the services in flight; each change to it is written to the store whole.
//!
//! A service that stops (a failure, a canary gate that waits, an interruption)
//! holds every service after it, and no new service starts; the services in flight
//! go on to their own end, so an independent branch finishes. The run's state is the
//! gravest of its stops: halted, then failed, then interrupted, then waiting. With
//! `max_parallel_services: 1` services go one after another in plan order, as they
//! always did.

use super::*;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

/// The record, shared by the services in flight.
pub(super) type Shared = tokio::sync::Mutex<Record>;

/// Rolls every service of `work` still in the record's queue.
pub(super) async fn roll<C: Connection>(
    env: &Env<'_>,
    work: &[Work],
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &mut Record,
) -> Result<(), Stop> {
    let shared = Shared::new(rec.clone());
    let outcome = run(env, work, conns, &shared).await;
    *rec = shared.into_inner();
    outcome
}

/// Starts the services whose predecessors are done, as room frees up, until none
/// is left or one stopped; returns the combined stop.
async fn run<C: Connection>(
    env: &Env<'_>,
    work: &[Work],
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
) -> Result<(), Stop> {
    let cap = env.config.playbook.rollout.max_parallel_services.max(1) as usize;
    let queue = rec.lock().await.queue.clone();
    // Finished by an earlier run: done.
    let mut done: Vec<bool> = work.iter().map(|w| !queue.contains(&w.name)).collect();
    let mut started = done.clone();
    let mut stops: Vec<(usize, Stop)> = Vec::new();
    let mut running = FuturesUnordered::new();
    loop {
        // Also after a Ctrl-C: a service started then stops before its first batch
        // and says so, as one at a time always did.
        if stops.is_empty() {
            for i in ready(work, &done, &started) {
                if running.len() >= cap {
                    break;
                }
                started[i] = true;
                let w = &work[i];
                running.push(async move { (i, roll_service(env, w, conns, rec).await) });
            }
        }
        let Some((i, outcome)) = running.next().await else {
            break;
        };
        match outcome {
            Ok(()) => done[i] = true,
            Err(stop) => stops.push((i, stop)),
        }
    }
    let held: Vec<&str> = work
        .iter()
        .zip(&started)
        .filter(|(_, s)| !**s)
        .map(|(w, _)| w.name.as_str())
        .collect();
    combine(stops, &held, cap)
}

/// The services not started whose every predecessor in `work` is done, in plan order.
fn ready(work: &[Work], done: &[bool], started: &[bool]) -> Vec<usize> {
    let finished = |name: &String| {
        work.iter()
            .position(|w| &w.name == name)
            .is_none_or(|j| done[j])
    };
    (0..work.len())
        .filter(|&i| !started[i] && work[i].after.iter().all(finished))
        .collect()
}

/// How grave a stop is: the run reports the gravest.
fn gravity(state: State) -> u8 {
    match state {
        State::Halted => 4,
        State::Failed => 3,
        State::Interrupted => 2,
        State::Waiting => 1,
        State::Running | State::Done => 0,
    }
}

/// The run's outcome from the services' stops; `held` were never started.
fn combine(mut stops: Vec<(usize, Stop)>, held: &[&str], cap: usize) -> Result<(), Stop> {
    if stops.is_empty() {
        if held.is_empty() {
            return Ok(());
        }
        // Not reached (a started service reports its own stop); never `done` anyway.
        return Err(Stop {
            state: State::Interrupted,
            message: format!(
                "interrupted before {}: run the same command to resume",
                held.join(", ")
            ),
        });
    }
    // Gravest first; ties in plan order.
    stops.sort_by_key(|(i, s)| (std::cmp::Reverse(gravity(s.state)), *i));
    let state = stops[0].1.state;
    let mut message = stops
        .into_iter()
        .map(|(_, s)| s.message)
        .collect::<Vec<_>>()
        .join("; and ");
    // One service at a time says what it always said.
    if cap > 1 && !held.is_empty() {
        message.push_str(&format!(
            "; not started: {} (held by the stop)",
            held.join(", ")
        ));
    }
    Err(Stop { state, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(name: &str, after: &[&str]) -> Work {
        Work {
            service: 0,
            name: name.into(),
            quorum: 0,
            failure_budget: 0,
            batches: Vec::new(),
            canaries: 0,
            after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_service_is_ready_once_every_service_it_follows_is_done() {
        let w = [
            work("a", &[]),
            work("b", &["a"]),
            work("c", &["a", "gone"]),
            work("d", &["b", "c"]),
        ];
        assert_eq!(ready(&w, &[false; 4], &[false; 4]), [0]);
        let done = [true, false, false, false];
        assert_eq!(ready(&w, &done, &done), [1, 2]);
        let done = [true, true, false, false];
        assert_eq!(
            ready(&w, &done, &[true, true, true, false]),
            Vec::<usize>::new()
        );
        let done = [true, true, true, false];
        assert_eq!(ready(&w, &done, &done), [3]);
    }

    #[test]
    fn the_run_reports_its_gravest_stop_and_what_it_held() {
        let stop = |state, m: &str| Stop {
            state,
            message: m.into(),
        };
        let r = combine(
            vec![
                (2, stop(State::Waiting, "c waits")),
                (1, stop(State::Failed, "b failed")),
            ],
            &["d"],
            2,
        )
        .unwrap_err();
        assert_eq!(r.state, State::Failed);
        assert_eq!(
            r.message,
            "b failed; and c waits; not started: d (held by the stop)"
        );
        let r = combine(vec![(1, stop(State::Failed, "b failed"))], &["d"], 1).unwrap_err();
        assert_eq!(r.message, "b failed");
        let r = combine(Vec::new(), &["b", "c"], 2).unwrap_err();
        assert_eq!(r.state, State::Interrupted);
        assert!(combine(Vec::new(), &[], 2).is_ok());
    }
}
