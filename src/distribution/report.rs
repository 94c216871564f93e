//! The distribution's report as text for an operator.

use super::*;

pub fn render(r: &Report) -> String {
    // MiB, as the progress bars say.
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut s = format!(
        "version {} ({} MiB), origin uploaded {:.1} MiB = {:.2} copies, {:.1}s\n",
        r.version,
        mib(r.artifact_bytes).round(),
        mib(r.origin_uploaded_bytes),
        r.origin_uploaded_bytes as f64 / r.artifact_bytes.max(1) as f64,
        r.seconds
    );
    s.push_str(&format!(
        "{:<16} {:<8} {:<8} {:<7} {:>7} {:>8} {:>11} {:>11}\n",
        "HOST", "DC", "RACK", "RESULT", "TIME", "MiB/s", "FROM PEERS", "REUSED"
    ));
    for h in &r.hosts {
        let fetched = h.bytes_from_origin + h.bytes_from_peers;
        s.push_str(&format!(
            "{:<16} {:<8} {:<8} {:<7} {:>6.1}s {:>8.1} {:>8.1}MiB {:>8.1}MiB\n",
            h.host,
            h.dc,
            h.rack,
            if h.ok { "ok" } else { "FAILED" },
            h.seconds,
            mib(fetched) / h.seconds.max(0.001),
            mib(h.bytes_from_peers),
            mib(h.bytes_reused),
        ));
        if let Some(e) = &h.error {
            s.push_str(&format!("  {}: {e}\n", h.host));
        }
    }
    s
}
