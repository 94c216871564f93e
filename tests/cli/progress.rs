//! What an operator sees at a terminal: `rookery distribute` run in a pseudo-terminal
//! (`script` from util-linux, in Debian's essential set) draws a bar per host and a
//! total, each with its bytes in binary units, its rate and the time left; piped, the
//! same figures come as plain lines.

use std::process::Command;

use crate::support::{BIN, Cluster, noise};

const DATACENTERS: &str =
    "  east:\n    racks:\n      r1: {services: [web], hosts: {h1: ~, h2: ~}}\n";

/// A cluster whose distribution takes several seconds (the plain lines come every 5 s):
/// 14 MiB at 2 MiB/s per host.
fn slow_cluster() -> Cluster {
    let c = Cluster::local(DATACENTERS).start();
    let d = c.dir();
    std::fs::create_dir_all(d.join("art")).unwrap();
    std::fs::write(d.join("art/blob"), noise(14 << 20, 11)).unwrap();
    std::fs::write(
        d.join("pb.yml"),
        "name: progress\nartifact: {source: art, destination: /srv/app, version: v1}\ndistribution: {seed_window: 1s, download_limit: 2MiB/s}\nservices:\n  web: {start: \"true\"}\n",
    )
    .unwrap();
    c
}

#[test]
fn a_terminal_gets_bars_with_rate_and_time_left() {
    let c = slow_cluster();
    let command = format!("{BIN} -i {} distribute pb.yml", c.inventory().display());
    // `script` gives rookery a terminal on stderr; what it drew comes out on stdout.
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(c.dir())
        .env("COLUMNS", "160")
        .env("TERM", "xterm")
        .output()
        .expect("script(1) from util-linux runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{command}: {screen}");
    assert!(
        !screen.contains("progress:"),
        "a terminal gets bars, not plain lines:\n{screen}"
    );
    for host in ["h1", "h2", "total"] {
        assert!(screen.contains(host), "no bar for {host}:\n{screen}");
    }
    // The bars are redrawn together, separated by cursor moves: h1's bar is what
    // follows its name up to the next bar's.
    let host_bar_has_rate = screen.split(['\r', '\n', '\x1b']).any(|seg| {
        seg.find("h1 ").is_some_and(|i| {
            let bar = &seg[i..];
            let end = bar
                .find("h2 ")
                .or_else(|| bar.find("total"))
                .unwrap_or(bar.len());
            let bar = &bar[..end];
            bar.contains("/14.00 MiB") && bar.contains("MiB/s")
        })
    });
    assert!(
        host_bar_has_rate,
        "no rate in binary units on a host's bar:\n{screen}"
    );
    assert!(
        screen.contains("/14.00 MiB"),
        "a host's bar counts its 14 MiB in binary units:\n{screen}"
    );
    assert!(
        screen.contains("ok in"),
        "each bar ends with the host's result:\n{screen}"
    );
}

#[test]
fn piped_output_gets_lines_with_rate_and_time_left() {
    let c = slow_cluster();
    let r = c.run(&["distribute", "pb.yml"]).ok();
    let err = &r.stderr;
    let line = err
        .lines()
        .find(|l| l.starts_with("progress: "))
        .unwrap_or_else(|| panic!("no progress line in:\n{err}"));
    assert!(
        line.contains(" MiB, ") && line.contains(" MiB/s, ETA "),
        "a progress line carries bytes, rate and time left: {line}"
    );
}
