//! Scale benchmark for the configuration stages: a generated inventory of 10,000 hosts
//! (5 datacenters x 20 racks x 100 hosts) and a playbook of 50 services are loaded,
//! validated and planned, and the time of each stage is printed.
//!
//! `cargo bench --bench plan_scale` runs the full size in release mode (target: well
//! under one second in all). Under `cargo test` (no `--bench` flag) it runs a small size
//! once, as a smoke test that the generator and the stages still work.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rookery::config::Config;
use rookery::config::inventory::Inventory;
use rookery::config::playbook::Playbook;
use rookery::plan::plan;

const DCS: usize = 5;
const RACKS: usize = 20;
const SERVICES: usize = 50;

fn inventory(hosts_per_rack: usize) -> String {
    let mut s = String::from(
        "cluster: scale\ntransport: ssh\ncoordination: {zookeeper: {connect: 'zk1:2181,zk2:2181,zk3:2181'}}\ndefaults: {ssh: {user: deploy}}\ndatacenters:\n",
    );
    let mut n = 0u32;
    for d in 0..DCS {
        let _ = writeln!(s, "  dc{d}:\n    racks:");
        for r in 0..RACKS {
            // Each rack runs the services whose number matches it modulo 10: every
            // service lands on 10 racks spread over all datacenters.
            let svcs: Vec<String> = (0..SERVICES)
                .filter(|i| i % 10 == (d * RACKS + r) % 10)
                .map(|i| format!("svc{i}"))
                .collect();
            let _ = writeln!(
                s,
                "      r{r}:\n        services: [{}]\n        hosts:",
                svcs.join(", ")
            );
            for h in 0..hosts_per_rack {
                n += 1;
                let _ = writeln!(
                    s,
                    "          dc{d}-r{r}-h{h}: 10.{}.{}.{}",
                    n >> 16,
                    (n >> 8) & 255,
                    n & 255
                );
            }
        }
    }
    s
}

fn playbook() -> String {
    let mut s = String::from(
        "name: scale\nartifact: {source: build, destination: /srv/scale}\nservices:\n",
    );
    for i in 0..SERVICES {
        let deps = if i % 5 == 0 {
            String::new()
        } else {
            format!("svc{}", i - 1)
        };
        let _ = writeln!(
            s,
            "  svc{i}: {{start: 'bin/svc{i} --release {{release}}', depends_on: [{deps}], quorum: 90%, max_parallel: 20, rack_budget: 2}}"
        );
    }
    s
}

fn run(hosts_per_rack: usize) -> (usize, [Duration; 3]) {
    let inv_text = inventory(hosts_per_rack);
    let pb_text = playbook();
    let t0 = Instant::now();
    let inv = Inventory::from_str("scale-inventory.yml", &inv_text, Path::new("/"))
        .expect("valid inventory");
    let pb =
        Playbook::from_str("scale-playbook.yml", &pb_text, Path::new("/")).expect("valid playbook");
    let t1 = Instant::now();
    let config = Config::new(inv, pb).expect("valid config");
    let t2 = Instant::now();
    let p = plan(&config, None, None);
    let t3 = Instant::now();
    let batches: usize = p.services.iter().map(|s| s.batches.len()).sum();
    assert_eq!(p.distribution.hosts, DCS * RACKS * hosts_per_rack);
    assert!(batches > 0);
    (config.inventory.hosts.len(), [t1 - t0, t2 - t1, t3 - t2])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        let (hosts, _) = run(2);
        println!("plan_scale smoke run: {hosts} hosts loaded, validated and planned");
        return;
    }
    let mut best: Option<(usize, [Duration; 3])> = None;
    for _ in 0..5 {
        let r = run(100);
        let total = |r: &(usize, [Duration; 3])| r.1.iter().sum::<Duration>();
        if best.as_ref().is_none_or(|b| total(&r) < total(b)) {
            best = Some(r);
        }
    }
    let (hosts, [parse, check, planning]) = best.expect("ran");
    let total = parse + check + planning;
    println!(
        "plan_scale: {hosts} hosts, {DCS} DCs x {RACKS} racks, {SERVICES} services (best of 5)"
    );
    println!(
        "  parse + validate files   {:>8.1} ms",
        parse.as_secs_f64() * 1e3
    );
    println!(
        "  cross-check (placement)  {:>8.1} ms",
        check.as_secs_f64() * 1e3
    );
    println!(
        "  plan                     {:>8.1} ms",
        planning.as_secs_f64() * 1e3
    );
    println!(
        "  total                    {:>8.1} ms   (target: < 1000 ms)",
        total.as_secs_f64() * 1e3
    );
}
