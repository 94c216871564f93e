//! One service's batches: the quorum gate before each, the restarts, and the failure
//! budget after.

use super::*;

/// Every batch of service `w`, its canary gate after its canary batches, and the
/// service out of the record's queue once done.
pub(super) async fn roll_service<C: Connection>(
    env: &Env<'_>,
    w: &Work,
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
) -> Result<(), Stop> {
    env.say.line(format!(
        "{}: {} batch(es), quorum {}, failure budget {}",
        w.name,
        w.batches.len(),
        w.quorum,
        w.failure_budget
    ));
    for bi in 0..w.batches.len() {
        roll_batch(env, w, bi, conns, rec).await?;
        if bi + 1 == w.canaries {
            crate::rollout::canary::gate(env, w, conns, rec).await?;
        }
    }
    let mut r = rec.lock().await;
    r.queue.retain(|s| s != &w.name);
    save(env.store, &mut r).await?;
    Ok(())
}

/// Batch `bi` of service `w`: the hosts with something to do, through the gate,
/// restarted at once, recorded, and the failure budget checked (a canary batch has
/// none: one failed canary stops the deploy). When the gate cannot pass the whole
/// batch (an instance is down elsewhere), the batch is re-cut: the part that keeps
/// the quorum goes, and the rest goes through the gate again after it.
async fn roll_batch<C: Connection>(
    env: &Env<'_>,
    w: &Work,
    bi: usize,
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
) -> Result<(), Stop> {
    let (store, config, say, cancel) = (env.store, env.config, &env.say, &env.cancel);
    let inv = &config.inventory;
    let nb = w.batches.len();
    let mut todo = to_do(store, w, bi, &mut *rec.lock().await, inv).await?;
    let deadline = config.playbook.services[w.service].health_deadline;
    while !todo.is_empty() {
        if cancel.is_cancelled() {
            return Err(Stop {
                state: State::Interrupted,
                message: format!(
                    "interrupted before {} batch {}/{nb}: run the same command to resume",
                    w.name,
                    bi + 1
                ),
            });
        }
        store.check_session()?;
        let names: Vec<String> = todo
            .iter()
            .map(|t| inv.hosts[t.host].name.clone())
            .collect();
        let going = gate(store, w, &names, deadline, say, cancel).await?;
        let (now, later): (Vec<&Target>, Vec<&Target>) = todo
            .into_iter()
            .partition(|t| going.contains(&inv.hosts[t.host].name));
        todo = later;
        let canary = if bi < w.canaries { " (canaries)" } else { "" };
        say.line(format!(
            "{}: batch {}/{nb}{canary}: {}",
            w.name,
            bi + 1,
            going.join(", ")
        ));
        restart_batch(env, w, bi, &now, conns, rec).await?;
        after_batch(env, w, bi, &going, conns, rec).await?;
    }
    Ok(())
}

/// After hosts `names` of batch `bi` restarted: a failed canary stops the deploy
/// (switching the canaries back), and so do failures beyond the failure budget.
async fn after_batch<C: Connection>(
    env: &Env<'_>,
    w: &Work,
    bi: usize,
    names: &[String],
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
) -> Result<(), Stop> {
    let failed = |rec: &Record, n: &String| {
        rec.host(&w.name, n)
            .is_some_and(|h| h.state == HostState::Failed)
    };
    let failed_canary = {
        let r = rec.lock().await;
        names
            .iter()
            .find(|n| bi < w.canaries && failed(&r, n))
            .map(|h| (h.clone(), r.host(&w.name, h).and_then(|x| x.error.clone())))
    };
    if let Some((h, error)) = failed_canary {
        let why = format!("canary {h}: {}", error.unwrap_or_default());
        return Err(crate::rollout::canary::revert(env, w, conns, rec, &h, &why).await);
    }
    // Counted from the record, not added up: a host that failed in an earlier
    // run and was retried in this batch no longer counts once it switched.
    let failures = rec.lock().await.failed(&w.name);
    if failures > w.failure_budget {
        return Err(Stop {
            state: State::Failed,
            message: format!(
                "{}: {failures} host(s) failed, more than its failure budget of {}; the deploy stopped (failed hosts were switched back; fix them and run the same command to resume)",
                w.name, w.failure_budget
            ),
        });
    }
    Ok(())
}

/// Restarts the hosts of one batch at once and records what became of each,
/// before and after.
async fn restart_batch<C: Connection>(
    env: &Env<'_>,
    w: &Work,
    bi: usize,
    todo: &[&Target],
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
) -> Result<(), Stop> {
    let inv = &env.config.inventory;
    {
        let mut r = rec.lock().await;
        for t in todo {
            if let Some(hr) = r.host_mut(&w.name, &inv.hosts[t.host].name) {
                hr.state = HostState::Restarting;
            }
        }
        save(env.store, &mut r).await?;
    }
    let jobs = todo.iter().map(|t| {
        let conn = conns.get(&t.host).cloned();
        async move {
            let r = match conn {
                Some(c) => restart(env, w.service, t, c.as_ref()).await,
                None => Err(Failure {
                    message: "not connected".into(),
                    previous: None,
                    back: Back::Untouched,
                }),
            };
            (*t, r)
        }
    });
    let results = futures_util::future::join_all(jobs).await;
    let mut rec = rec.lock().await;
    let unknown = record_results(&mut rec, w, inv, results, env);
    if !unknown.is_empty() {
        // The session is gone: the record cannot be written, and nothing more
        // may restart. The saved record has these hosts `restarting`.
        return Err(Stop {
            state: State::Halted,
            message: format!(
                "the coordination session was lost during {} batch {}/{}; {} switched but could not be confirmed and stay mid-switch in the record: run the same command to resume",
                w.name,
                bi + 1,
                w.batches.len(),
                unknown.join(", ")
            ),
        });
    }
    save(env.store, &mut rec).await?;
    Ok(())
}

/// The hosts of batch `bi` with something to do: not finished, reachable, and not
/// already live on their target (a rerun changes nothing; those are recorded
/// `unchanged`).
async fn to_do<'w>(
    store: &Store,
    w: &'w Work,
    bi: usize,
    rec: &mut Record,
    inv: &inventory::Inventory,
) -> Result<Vec<&'w Target>, Stop> {
    let live = store.live(&w.name).await?;
    let mut todo = Vec::new();
    for t in &w.batches[bi] {
        let name = &inv.hosts[t.host].name;
        let Some(hr) = rec.host_mut(&w.name, name) else {
            continue;
        };
        if hr.state.finished() || matches!(hr.state, HostState::Unreachable | HostState::Skipped) {
            continue;
        }
        if hr.state == HostState::Pending
            && live
                .iter()
                .any(|i| &i.host == name && i.version == t.version)
        {
            hr.state = HostState::Unchanged;
            store.clear_staging(&w.name, name).await?;
            continue;
        }
        todo.push(t);
    }
    Ok(todo)
}

/// Records each host's restart; returns the hosts whose outcome the store could
/// not confirm.
fn record_results(
    rec: &mut Record,
    w: &Work,
    inv: &inventory::Inventory,
    results: Vec<(&Target, Result<Restarted, Failure>)>,
    env: &Env<'_>,
) -> Vec<String> {
    let say = &env.say;
    let mut unknown = Vec::new();
    for (t, r) in results {
        let name = &inv.hosts[t.host].name;
        let hr = rec.host_mut(&w.name, name).expect("recorded");
        // With services interleaved, a host's line names its service too.
        let shown = if env.interleaved {
            format!("{}/{name}", w.name)
        } else {
            name.clone()
        };
        match r {
            // The store, not the host: left mid-switch (`restarting`) for the
            // next run to ask again, never counted as a failure.
            Err(f) if matches!(f.back, Back::Store) => {
                hr.from = hr.from.take().or(f.previous.clone());
                hr.error = Some(f.message.clone());
                say.line(format!("  {shown}: unknown: {}", f.message));
                unknown.push(name.clone());
            }
            Ok(ok) => {
                hr.state = HostState::Done;
                hr.from = hr.from.take().or(ok.previous.clone());
                hr.seconds = Some(ok.seconds);
                hr.error = None;
                say.line(format!(
                    "  {shown}: {} -> {} in {:.1}s{}",
                    ok.previous.as_deref().unwrap_or("(none)"),
                    t.version,
                    ok.seconds,
                    if ok.already {
                        " (was already running it)"
                    } else {
                        ""
                    }
                ));
            }
            Err(f) => {
                hr.state = HostState::Failed;
                hr.from = hr.from.take().or(f.previous.clone());
                let back = match &f.back {
                    Back::Untouched => "; nothing was switched".into(),
                    Back::Switched(Ok(v)) => format!("; switched back to {v}"),
                    Back::Switched(Err(e)) => format!("; switching back failed too: {e}"),
                    Back::Nowhere => "; no previous release to switch back to".into(),
                    Back::Store => unreachable!("matched above"),
                };
                hr.error = Some(format!("{}{back}", f.message));
                say.line(format!("  {shown}: FAILED: {}{back}", f.message));
            }
        }
    }
    unknown
}

/// The hosts of `batch` that may go down now without breaking the service's quorum:
/// all of them when the quorum allows; else the largest part that keeps it (the
/// hosts not live take nothing away, and as many live ones as the live instances
/// above the quorum), which keeps the batch's budgets, being part of it. When not
/// even one host can go, waits for the live instances to change, up to `deadline`.
pub(super) async fn gate(
    store: &Store,
    w: &Work,
    batch: &[String],
    deadline: Duration,
    say: &Say,
    cancel: &CancellationToken,
) -> Result<Vec<String>, Stop> {
    let mut until = tokio::time::Instant::now() + deadline;
    let mut said = false;
    loop {
        // Held while the store does not answer, that time added back to the deadline.
        let (live, held) = read_live(store, &w.name).await?;
        until += held;
        let total = live.len() as u32;
        let is_live = |h: &String| live.iter().any(|i| &i.host == h);
        let going = batch.iter().filter(|h| is_live(h)).count() as u32;
        if going == 0 || total - going >= w.quorum {
            return Ok(batch.to_vec());
        }
        let counts = format!(
            "{}: {total} live instance(s), {going} of them in the next batch ({}); quorum {}",
            w.name,
            batch.join(", "),
            w.quorum
        );
        let room = total.saturating_sub(w.quorum);
        let part = recut(batch, &is_live, room);
        if !part.is_empty() {
            say.line(format!(
                "{counts} leaves room for {room} down: re-cut, {} go first, the rest after",
                part.join(", ")
            ));
            return Ok(part);
        }
        let why = format!(
            "{counts} needs {} more live elsewhere before one of them can go",
            w.quorum + 1 - total
        );
        if !said {
            say.line(format!("{why}: waiting"));
            said = true;
        }
        tokio::select! {
            r = store.changed(&w.name, &live) => until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(until) => {
                return Err(Stop {
                    state: State::Failed,
                    message: format!(
                        "{why}; gave up after {} (the service's health_deadline); none of them was touched",
                        crate::config::units::format_duration(deadline)
                    ),
                });
            }
            _ = cancel.cancelled() => {
                return Err(Stop {
                    state: State::Interrupted,
                    message: format!("interrupted while waiting for quorum: {why}"),
                });
            }
        }
    }
}

/// The largest part of `batch` that takes at most `room` live instances down: every
/// host not live, and the first `room` live ones, in batch order.
fn recut(batch: &[String], is_live: &dyn Fn(&String) -> bool, room: u32) -> Vec<String> {
    let mut taken = 0;
    batch
        .iter()
        .filter(|h| {
            if !is_live(h) {
                return true;
            }
            taken += 1;
            taken <= room
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recut_batch_keeps_the_hosts_not_live_and_as_many_live_as_there_is_room() {
        let batch: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let live = |h: &String| h != "b";
        assert_eq!(recut(&batch, &live, 0), ["b"]);
        assert_eq!(recut(&batch, &live, 1), ["a", "b"]);
        assert_eq!(recut(&batch, &live, 2), ["a", "b", "c"]);
        let all = |_: &String| true;
        assert!(recut(&batch, &all, 0).is_empty());
    }
}
