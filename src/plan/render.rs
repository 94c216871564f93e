//! Text for humans: the plan as an operator reads it before saying yes.
//!
//! JSON output is the serde form of the same structs; this file is only the text view.

use std::fmt::Write;

use crate::config::inventory::Transport;
use crate::config::playbook::SeedMode;
use crate::config::units::format_duration;
use crate::plan::Plan;

pub fn plan(p: &Plan) -> String {
    let mut s = String::new();
    let transport = match p.transport {
        Transport::Ssh(_) => "ssh",
        Transport::Local { .. } => "local",
    };
    let _ = writeln!(
        s,
        "Plan: playbook `{}` on cluster `{}` ({} transport)",
        p.playbook, p.cluster, transport
    );
    if let Some(limit) = &p.limit {
        let _ = writeln!(s, "Limit: {limit}");
    }

    distribution(&mut s, p);
    if let Some(e) = &p.estimate {
        estimate(&mut s, e);
    }
    rollout(&mut s, p);
    s
}

/// What goes where, with which settings, over which hosts.
fn distribution(s: &mut String, p: &Plan) {
    let d = &p.distribution;
    let _ = writeln!(s, "\nDistribution");
    let _ = writeln!(
        s,
        "  artifact   {} -> {}/releases/{}",
        d.artifact.source.display(),
        d.artifact.destination,
        p.version_label()
    );
    let _ = writeln!(s, "  origin     {}", d.origin);
    let set = &d.settings;
    let seed = match set.seed_mode {
        SeedMode::Fixed => format!("seed {}", format_duration(set.seed_window)),
        SeedMode::Adaptive => {
            format!(
                "seed {} adaptive (up to {})",
                format_duration(set.seed_window),
                format_duration(set.seed_window_max)
            )
        }
    };
    let cap = |r: Option<crate::config::units::Rate>| {
        r.map(|r| r.to_string())
            .unwrap_or_else(|| "unlimited".into())
    };
    let piece = set
        .piece_size
        .map(|p| p.to_string())
        .unwrap_or_else(|| "auto".into());
    let _ = writeln!(
        s,
        "  settings   {seed}, {} peers max, upload {}, download {}, piece size {piece}, keep {} releases",
        set.max_peers,
        cap(set.upload_limit),
        cap(set.download_limit),
        d.artifact.keep_releases
    );
    let racks: usize = d.datacenters.iter().map(|dc| dc.racks.len()).sum();
    let _ = writeln!(
        s,
        "  hosts      {} in {} datacenter{}, {racks} rack{}",
        d.hosts,
        d.datacenters.len(),
        plural(d.datacenters.len()),
        plural(racks)
    );
    for dc in &d.datacenters {
        let racks: Vec<String> = dc
            .racks
            .iter()
            .map(|r| format!("{} ({})", r.name, r.hosts.len()))
            .collect();
        let _ = writeln!(
            s,
            "    {:<10} {} host{}: {}",
            dc.name,
            dc.hosts,
            plural(dc.hosts),
            racks.join(", ")
        );
    }
}

/// The distribution time the plan predicts.
fn estimate(s: &mut String, e: &crate::plan::estimate::Estimate) {
    let size = crate::config::units::ByteSize(e.artifact_bytes);
    use crate::config::playbook::Sharing;
    let shape = match (e.sharing, e.trees_depth) {
        (Sharing::Stripes, Some(d)) => format!(
            "striped trees over {} host{}, {d} hops deep,",
            e.hosts,
            plural(e.hosts)
        ),
        _ => format!("a pipeline of {} host{}", e.hosts, plural(e.hosts)),
    };
    let _ = writeln!(
        s,
        "  estimate   {} for the slowest host: {size} ({}) through {shape} at {} (limited by {}), {} pieces",
        format_duration(std::time::Duration::from_secs_f64(e.seconds.ceil())),
        e.size_from,
        crate::config::units::Rate(e.bottleneck_bytes_per_second),
        e.bottleneck,
        crate::config::units::ByteSize(e.piece_bytes)
    );
    let _ = writeln!(
        s,
        "             origin uploads {}, {} cross datacenters",
        size,
        crate::config::units::ByteSize(e.cross_dc_bytes)
    );
    let _ = writeln!(
        s,
        "  sharing    {} ({})",
        e.sharing.name(),
        e.sharing_reason
    );
}

/// Services in order, each with its batches.
fn rollout(s: &mut String, p: &Plan) {
    let together = if p.max_parallel_services > 1 {
        format!(
            ", up to {} at once (max_parallel_services)",
            p.max_parallel_services
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "\nRollout: {} service{} in dependency order{together}",
        p.services.len(),
        plural(p.services.len())
    );
    for (i, svc) in p.services.iter().enumerate() {
        let after = if svc.depends_on.is_empty() {
            String::new()
        } else {
            format!(" (after {})", svc.depends_on.join(", "))
        };
        let selected = if svc.selected == svc.hosts {
            format!("{} host{}", svc.hosts, plural(svc.hosts))
        } else {
            format!("{} of {} hosts", svc.selected, svc.hosts)
        };
        let mut budget = svc
            .rack_budget
            .map(|b| format!("{b} rack{} at a time", plural(b as usize)))
            .unwrap_or_else(|| "any racks".into());
        if let Some(b) = svc.dc_budget {
            budget.push_str(&format!(", {b} datacenter{} at a time", plural(b as usize)));
        }
        let _ = writeln!(
            s,
            "  {}. {}{after}: {selected}, quorum {} ({} down at most), max_parallel {}, {budget}, {} canar{}, failure budget {}",
            i + 1,
            svc.name,
            svc.quorum,
            svc.max_down,
            svc.max_parallel,
            svc.canary,
            if svc.canary == 1 { "y" } else { "ies" },
            svc.failure_budget
        );
        if svc.batches.is_empty() {
            let _ = writeln!(s, "     (no host selected)");
        }
        for (b, batch) in svc.batches.iter().enumerate() {
            let tag = if batch.canary { "canary" } else { "" };
            let _ = writeln!(
                s,
                "     batch {:<3} {tag:<6}  {}  [{}]",
                b + 1,
                batch.hosts.join(", "),
                batch.racks.join(", ")
            );
            let last_canary = batch.canary && svc.batches.get(b + 1).is_none_or(|n| !n.canary);
            if last_canary {
                let _ = writeln!(s, "     {}", gate(svc));
            }
        }
    }
    if p.max_parallel_services > 1 {
        schedule(s, p);
    }
    if p.services.iter().any(|svc| !svc.batches.is_empty()) {
        let _ = writeln!(s, "  {RECUT}");
    }
}

/// Which services may roll together, wave after wave.
fn schedule(s: &mut String, p: &Plan) {
    let waves: Vec<String> = p.waves.iter().map(|w| w.join(" + ")).collect();
    let _ = writeln!(
        s,
        "  Schedule: {}; each service starts once every service it follows is done, {} at most at once; a service that stops holds the ones after it, and no new one starts.",
        waves.join(", then "),
        p.max_parallel_services
    );
}

/// What the run may do to the batches above.
const RECUT: &str = "At run time a batch that would break its quorum (an instance down elsewhere) is re-cut: the part that keeps the quorum goes first, the rest after; the deploy stops only when not one host of it can go within health_deadline.";

/// The canary gate: what happens between the canaries and the other hosts.
fn gate(svc: &crate::plan::ServicePlan) -> String {
    let then = if svc.auto_promote {
        "then the others go (auto_promote)"
    } else {
        "then the deploy waits for `rookery rollout --promote` (exit 9)"
    };
    format!(
        "gate      the canaries bake {} healthy (a failure switches them back and stops the deploy); {then}",
        format_duration(svc.canary_bake)
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
