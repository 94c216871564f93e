//! The text report of a simulation.

use super::*;

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
            + &t.origin_read
                .map(|r| format!(", the origin reads {}", rate(r)))
                .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  failures   {} host(s) fail during the transfer (seed {}), re-linked after {:.1}s",
        o.failed_hosts, t.seed, t.detect
    );
    if let Some(k) = &o.killed {
        let _ = writeln!(
            s,
            "  killed     {} at {:.1}s, {:.0}% of the artifact in",
            k.host,
            k.at_seconds,
            t.kill.map_or(0.0, |k| k.fraction * 100.0)
        );
    }
    let _ = writeln!(
        s,
        "  hops       each adds {:.2}s beyond its piece",
        t.hop_lag
    );
    if t.start_spread > 0.0 {
        let _ = writeln!(
            s,
            "  agents     come up over {:.1}s, each at a random moment (seed {})",
            t.start_spread, t.seed
        );
    }
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
    traffic(&mut s, o);
    s
}

/// Where the bytes went: the origin, the interconnects, the hosts, the uplinks.
fn traffic(s: &mut String, o: &Outcome) {
    let t = &o.topology;
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
}
