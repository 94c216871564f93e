//! The canary gate: after a service's canary batches, its canaries bake for
//! `canary_bake` while their health is watched (the supervisor runs the health
//! command every second and withdraws an instance after three failures in a row;
//! the bake watches the live entries). A canary that fails, in its restart or in the
//! bake, switches every canary of the service back and stops the deploy, whatever
//! the failure budget. A clean bake goes on with `auto_promote`, else the deploy
//! stops waiting for `rookery rollout --promote`. The gate's state is in the record,
//! so a run that dies during the bake is resumed by baking again, never by
//! restarting the canaries.

use super::*;

use crate::coordination::record::{CanaryGate, GateState};

/// The canaries of `w` in the record that run the target: those the gate watches.
fn canaries(w: &Work, rec: &Record, inv: &inventory::Inventory) -> Vec<(usize, String)> {
    w.batches[..w.canaries]
        .iter()
        .flatten()
        .map(|t| (t.host, inv.hosts[t.host].name.clone()))
        .filter(|(_, name)| rec.host(&w.name, name).is_some_and(|h| h.state.finished()))
        .collect()
}

/// The gate after `w`'s last canary batch: bake, then promote or wait.
pub(super) async fn gate<C: Connection>(
    env: &Env<'_>,
    w: &Work,
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
) -> Result<(), Stop> {
    let inv = &env.config.inventory;
    let svc = &env.config.playbook.services[w.service];
    let hosts = canaries(w, &*rec.lock().await, inv);
    if hosts.is_empty() {
        // Unreachable or not distributed: nothing proved the release.
        let planned: Vec<&str> = w.batches[..w.canaries]
            .iter()
            .flatten()
            .map(|t| inv.hosts[t.host].name.as_str())
            .collect();
        return Err(Stop {
            state: State::Failed,
            message: format!(
                "{}: none of its canaries ({}) runs the new release (unreachable or not distributed), so the canary gate cannot pass: fix them and run the same command",
                w.name,
                planned.join(", ")
            ),
        });
    }
    let names: Vec<String> = hosts.iter().map(|(_, n)| n.clone()).collect();
    let state = rec
        .lock()
        .await
        .service_mut(&w.name)
        .and_then(|s| s.canary.as_ref())
        .map(|g| g.state);
    match state {
        Some(GateState::Promoted) => return Ok(()),
        Some(GateState::Waiting) if env.promote => {
            // Promoted by hand: the canaries must still be live on the target.
            let version = &w.batches[0][0].version;
            let (live, _) = read_live(env.store, &w.name).await?;
            let down = names
                .iter()
                .find(|h| !live.iter().any(|i| &i.host == *h && &i.version == version));
            if let Some(h) = down {
                let why = format!("canary {h}: no longer live on {version} at its promotion");
                return Err(revert(env, w, conns, rec, h, &why).await);
            }
            env.say.line(format!(
                "{}: canaries {} promoted",
                w.name,
                names.join(", ")
            ));
            return set(env, rec, w, &names, GateState::Promoted).await;
        }
        Some(GateState::Waiting) => return Err(waiting(w, &names, svc.canary_bake)),
        Some(GateState::Baking) | None => {}
    }
    set(env, rec, w, &names, GateState::Baking).await?;
    env.say.line(format!(
        "{}: canaries {} baking for {} (health checked every second)",
        w.name,
        names.join(", "),
        crate::config::units::format_duration(svc.canary_bake)
    ));
    let version = w.batches[0][0].version.clone();
    if let Some((h, why)) = bake(env, &w.name, &names, &version, svc.canary_bake).await? {
        return Err(revert(env, w, conns, rec, &h, &why).await);
    }
    if svc.auto_promote {
        env.say.line(format!(
            "{}: canaries baked clean; promoted (auto_promote)",
            w.name
        ));
        set(env, rec, w, &names, GateState::Promoted).await
    } else {
        set(env, rec, w, &names, GateState::Waiting).await?;
        Err(waiting(w, &names, svc.canary_bake))
    }
}

/// Records the gate's state.
async fn set(
    env: &Env<'_>,
    rec: &Shared,
    w: &Work,
    hosts: &[String],
    state: GateState,
) -> Result<(), Stop> {
    let mut rec = rec.lock().await;
    if let Some(s) = rec.service_mut(&w.name) {
        let since = match (&s.canary, state) {
            (Some(g), GateState::Waiting | GateState::Promoted) => g.since,
            _ => crate::coordination::now(),
        };
        s.canary = Some(CanaryGate {
            state,
            hosts: hosts.to_vec(),
            since,
        });
    }
    save(env.store, &mut rec).await?;
    Ok(())
}

/// The stop of a deploy whose canaries wait for promotion.
fn waiting(w: &Work, hosts: &[String], bake: Duration) -> Stop {
    Stop {
        state: State::Waiting,
        message: format!(
            "{}: canaries {} baked {} clean and wait for promotion: run `rookery rollout PLAYBOOK --promote` to go on",
            w.name,
            hosts.join(", "),
            crate::config::units::format_duration(bake)
        ),
    }
}

/// Watches the canaries' live entries for `bake`: `Some((host, why))` when one is
/// withdrawn or leaves `version`.
async fn bake(
    env: &Env<'_>,
    service: &str,
    hosts: &[String],
    version: &str,
    bake: Duration,
) -> Result<Option<(String, String)>, Stop> {
    let store = env.store;
    let (mut live, held) = read_live(store, service).await?;
    let mut until = tokio::time::Instant::now() + bake + held;
    loop {
        let down = hosts
            .iter()
            .find(|h| !live.iter().any(|i| &i.host == *h && i.version == version));
        if let Some(h) = down {
            return Ok(Some((
                h.clone(),
                format!(
                    "canary {h}: {service} {version} was withdrawn (failed health checks or exited) during the canary bake"
                ),
            )));
        }
        tokio::select! {
            r = store.changed(service, &live) => until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(until) => return Ok(None),
            _ = env.cancel.cancelled() => {
                return Err(Stop {
                    state: State::Interrupted,
                    message: format!(
                        "interrupted during the canary bake of {service}: run the same command to resume (the canaries bake again; they are not restarted)"
                    ),
                });
            }
        }
        let (l, held) = read_live(store, service).await?;
        live = l;
        until += held;
    }
}

/// Canary `failed` failed (`why`): every canary of `w` that switched in this deploy
/// goes back to the release it ran, whatever the failure budget, and the deploy
/// stops.
pub(super) async fn revert<C: Connection>(
    env: &Env<'_>,
    w: &Work,
    conns: &BTreeMap<usize, Arc<C>>,
    rec: &Shared,
    failed: &str,
    why: &str,
) -> Stop {
    let inv = &env.config.inventory;
    let mut kept = Vec::new();
    for t in w.batches[..w.canaries].iter().flatten() {
        let name = inv.hosts[t.host].name.clone();
        let Some(hr) = rec.lock().await.host(&w.name, &name).cloned() else {
            continue;
        };
        let back_to = hr.from.clone().filter(|f| f != &t.version);
        let switched = matches!(hr.state, HostState::Done | HostState::Restarting);
        let (Some(previous), true) = (back_to, switched) else {
            if hr.state == HostState::Done {
                kept.push(name); // nothing to return to: it stays, recorded done
            }
            continue;
        };
        let back = match conns.get(&t.host) {
            Some(c) => switch_back(env, w.service, t.host, &previous, c.as_ref()).await,
            None => Err(BackError::NotConnected),
        };
        let mut r = rec.lock().await;
        let hr = r.host_mut(&w.name, &name).expect("recorded");
        let (state, note) = match &back {
            Ok(v) if name == failed => (HostState::Failed, format!("{why}; switched back to {v}")),
            Ok(v) => (
                HostState::Pending,
                format!("switched back to {v} with the other canaries: {why}"),
            ),
            Err(e) => (
                HostState::Failed,
                format!("{why}; switching this canary back failed: {e}"),
            ),
        };
        env.say.line(format!("  {name}: {note}"));
        hr.state = state;
        hr.error = Some(note);
    }
    if let Some(s) = rec.lock().await.service_mut(&w.name) {
        s.canary = None;
    }
    let kept = if kept.is_empty() {
        String::new()
    } else {
        format!(
            " ({} ran nothing before and stay on the new release)",
            kept.join(", ")
        )
    };
    Stop {
        state: State::Failed,
        message: format!(
            "{}: {why}; the canaries were switched back to their previous release{kept} and the deploy stopped, whatever the failure budget ({}): fix the release and run the same command",
            w.name, w.failure_budget
        ),
    }
}
