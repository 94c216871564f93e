//! The deploy record as text for an operator.

use super::*;

use crate::coordination::record::GateState;

/// A record's state as the operator reads it.
pub(super) fn state_name(state: State) -> &'static str {
    match state {
        State::Done => "done",
        State::Running => "running",
        State::Failed => "stopped",
        State::Interrupted => "interrupted",
        State::Halted => "halted (coordination session lost)",
        State::Waiting => "waiting for promotion",
    }
}

/// The record as an operator reads it.
pub fn render(r: &Record) -> String {
    let kind = match r.kind {
        Kind::Deploy => "Deploy",
        Kind::Rollout => "Rollout",
        Kind::Rollback => "Rollback",
        Kind::Reconcile => "Reconcile",
    };
    let state = state_name(r.state);
    let mut s = format!(
        "{kind} {} of playbook `{}` to {}: {state}\n",
        r.id, r.playbook, r.version
    );
    for svc in &r.services {
        let gate = match svc.canary.as_ref().map(|g| (g.state, g.hosts.join(", "))) {
            Some((GateState::Baking, h)) => format!("  (canaries {h}: baking)"),
            Some((GateState::Waiting, h)) => format!("  (canaries {h}: waiting for promotion)"),
            Some((GateState::Promoted, h)) => format!("  (canaries {h}: promoted)"),
            None => String::new(),
        };
        s.push_str(&format!("  {}{gate}\n", svc.name));
        for h in &svc.hosts {
            let state = format!("{:?}", h.state).to_lowercase();
            s.push_str(&format!(
                "    {:<16} {:<12} {} -> {}{}{}\n",
                h.host,
                state,
                h.from.as_deref().unwrap_or("-"),
                h.to,
                h.seconds.map(|t| format!("  {t:.1}s")).unwrap_or_default(),
                h.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    if let Some(m) = &r.message {
        s.push_str(&format!("{m}\n"));
    }
    s.push_str("Recap\n");
    for c in r.recap() {
        s.push_str(&format!(
            "  {:<16} changed={} unchanged={} failed={} skipped={} unreachable={} pending={}{}\n",
            c.service,
            c.changed,
            c.unchanged,
            c.failed,
            c.skipped,
            c.unreachable,
            c.pending,
            if c.failed_hosts.is_empty() {
                String::new()
            } else {
                format!("  failed: {}", c.failed_hosts.join(", "))
            }
        ));
    }
    s
}
