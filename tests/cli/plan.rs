//! `rookery plan`: the text an operator reviews, and the same plan as JSON.

use crate::support::Test;

const INV: &str = "\
cluster: shop
datacenters:
  east:
    racks:
      e1: {services: [db, api], hosts: {e1a: ~, e1b: ~}}
      e2: {services: [db, api], hosts: {e2a: ~, e2b: ~}}
  west:
    racks:
      w1: {services: [db, api], hosts: {w1a: ~, w1b: ~}}
";

const PB: &str = "\
name: shop
artifact: {source: build, destination: /srv/shop, version: v42}
services:
  api: {start: ./api, depends_on: [db], quorum: 4, max_parallel: 2}
  db: {start: ./db, quorum: 50%, max_parallel: 3, rack_budget: 1, canary: 1}
";

#[test]
fn text_plan() {
    Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["plan", "-i", "inv.yml", "pb.yml"])
        .stdout(
            "\
Plan: playbook `shop` on cluster `shop` (local transport)

Distribution
  artifact   build -> /srv/shop/releases/v42
  origin     controller (this machine)
  settings   seed 30s, 64 peers max, upload 190.7 MiB/s, download 286.1 MiB/s, piece size auto, keep 5 releases
  hosts      6 in 2 datacenters, 3 racks
    east       4 hosts: e1 (2), e2 (2)
    west       2 hosts: w1 (2)

Rollout: 2 services in dependency order
  1. db: 6 hosts, quorum 3 (3 down at most), max_parallel 3, 1 rack at a time, 1 canary, failure budget 0
     batch 1   canary  e1a  [east/e1]
     gate      the canaries bake 5m healthy (a failure switches them back and stops the deploy); then the deploy waits for `rookery rollout --promote` (exit 9)
     batch 2           w1a, w1b  [west/w1]
     batch 3           e2a, e2b  [east/e2]
     batch 4           e1b  [east/e1]
  2. api (after db): 6 hosts, quorum 4 (2 down at most), max_parallel 2, any racks, 0 canaries, failure budget 0
     batch 1           e1a, w1a  [east/e1, west/w1]
     batch 2           e2a, e1b  [east/e2, east/e1]
     batch 3           w1b, e2b  [west/w1, east/e2]
  At run time a batch that would break its quorum (an instance down elsewhere) is re-cut: the part that keeps the quorum goes first, the rest after; the deploy stops only when not one host of it can go within health_deadline.
",
        )
        .run();
}

#[test]
fn limit_restricts_hosts_but_quorum_counts_all() {
    let out = Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args([
            "plan",
            "-i",
            "inv.yml",
            "pb.yml",
            "--limit",
            "dc:east,!e2b",
            "--json",
        ])
        .run();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["limit"], "dc:east,!e2b");
    assert_eq!(plan["distribution"]["hosts"], 3);
    let api = &plan["services"][1];
    assert_eq!(api["name"], "api");
    assert_eq!(api["hosts"], 6);
    assert_eq!(api["selected"], 3);
    assert_eq!(api["quorum"], 4);
    let batches: Vec<Vec<String>> = api["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(batches, [vec!["e1a", "e2a"], vec!["e1b"]]);
}

#[test]
fn json_plan_is_complete() {
    let out = Test::new()
        .file("inv.yml", INV)
        .file("pb.yml", PB)
        .args(["--json", "plan", "-i", "inv.yml", "pb.yml"])
        .run();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["cluster"], "shop");
    assert_eq!(plan["distribution"]["settings"]["seed_window"], "30s");
    assert_eq!(plan["distribution"]["artifact"]["version"]["label"], "v42");
    assert_eq!(plan["services"][0]["name"], "db");
    assert_eq!(plan["services"][0]["batches"][0]["canary"], true);
    assert!(
        plan["transport"]["local"]["root"]
            .as_str()
            .unwrap()
            .ends_with(".rookery/hosts")
    );
}

#[test]
fn completions_and_man_page() {
    Test::new()
        .args(["completions", "bash"])
        .stdout_has("_rookery()")
        .run();
    Test::new().args(["man"]).stdout_has(".TH rookery 1").run();
}

#[test]
fn help_lists_the_commands_and_hides_the_agent() {
    let out = Test::new().args(["--help"]).run();
    for cmd in [
        "deploy",
        "plan",
        "distribute",
        "rollout",
        "status",
        "rollback",
        "reconcile",
        "torrent",
        "tracker",
        "completions",
    ] {
        assert!(
            out.stdout.contains(&format!("\n  {cmd}")),
            "help lacks {cmd}:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("\n  agent"));
    assert!(out.stdout.contains("Exit codes: 0 ok"));
}

#[test]
fn simulate_reports_percentiles_and_refuses_nonsense() {
    let out = Test::new()
        .args([
            "simulate",
            "--hosts",
            "300",
            "--datacenters",
            "3",
            "--racks",
            "5",
            "--size",
            "1GiB",
            "--link",
            "1Gbit/s",
            "--fail",
            "0.02",
        ])
        .stdout_has("Simulated pipeline (one chain): 300 hosts in 3 datacenters x 5 racks, 1 GiB")
        .stdout_has("failures   6 host(s) fail during the transfer (seed 1), re-linked after 1.7s")
        .stdout_has("origin     uploads 1 GiB (1.00 copies)")
        .stdout_has("the deepest is 300 hops from the origin")
        .run();
    assert!(out.stdout.contains(" p99 "), "{}", out.stdout);
    // The tracker's striped trees, same fleet: shallow, within the upload budget.
    let out = Test::new()
        .args([
            "simulate",
            "--hosts",
            "300",
            "--datacenters",
            "3",
            "--racks",
            "5",
        ])
        .args([
            "--size",
            "1GiB",
            "--link",
            "1Gbit/s",
            "--topology",
            "stripes",
        ])
        .stdout_has("Simulated striped trees (8 stripes): 300 hosts in 3 datacenters x 5 racks")
        .run();
    let depth: usize = out
        .stdout
        .split("the deepest is ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(depth < 20, "{}", out.stdout);
    Test::new()
        .args(["simulate", "--topology", "tree"])
        .status(2)
        .stderr("error: --topology: `tree`: use chain or stripes\n")
        .run();
    Test::new()
        .args(["simulate", "--topology", "stripes", "--stripes", "2"])
        .status(2)
        .stderr("error: --stripes must be from 5 to 64, found 2\n")
        .run();
    let json = Test::new()
        .args(["--json", "simulate", "--hosts", "20", "--size", "64MiB"])
        .run();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(v["percentiles"]["max"].as_f64().unwrap() > v["bound_seconds"].as_f64().unwrap());
    Test::new()
        .args(["simulate", "--fail", "1.5"])
        .status(2)
        .stderr("error: --fail must be a fraction from 0 to below 1, found 1.5\n")
        .run();
    Test::new()
        .args(["simulate", "--link", "fast"])
        .status(2)
        .stderr_has("error: --link: ")
        .run();
    // The benchmark's kill, named as the benchmark names hosts.
    Test::new()
        .args([
            "simulate",
            "--hosts",
            "48",
            "--datacenters",
            "2",
            "--racks",
            "2",
        ])
        .args(["--size", "64MiB", "--link", "20Mbit/s", "--kill", "12"])
        .stdout_has("killed     h12 at ")
        .stdout_has("failures   1 host(s) fail during the transfer")
        .run();
    Test::new()
        .args(["simulate", "--hosts", "20", "--kill", "21"])
        .status(2)
        .stderr("error: --kill must name a host from 1 to --hosts (20), found 21\n")
        .run();
    Test::new()
        .args(["simulate", "--hop-lag=-1"])
        .status(2)
        .stderr("error: --hop-lag must be 0 or more seconds, found -1\n")
        .run();
    Test::new()
        .args([
            "simulate",
            "--hosts",
            "48",
            "--start-spread",
            "4.5",
            "--seed",
            "3",
        ])
        .stdout_has("agents     come up over 4.5s, each at a random moment (seed 3)")
        .run();
    Test::new()
        .args(["simulate", "--start-spread", "soon"])
        .status(2)
        .stderr_has("--start-spread")
        .run();
    Test::new()
        .args(["simulate", "--start-spread=-1"])
        .status(2)
        .stderr("error: --start-spread must be 0 or more seconds, found -1\n")
        .run();
}

/// With `rollout.max_parallel_services`, the plan shows which services may roll
/// together; in JSON as `waves`. A diamond: b and c follow a, d follows both.
#[test]
fn the_plan_shows_which_services_roll_together() {
    let pb = "\
name: diamond
artifact: {source: build, destination: /srv/shop, version: v42}
rollout: {max_parallel_services: 2}
services:
  a: {start: ./a}
  b: {start: ./b, depends_on: [a]}
  c: {start: ./c, depends_on: [a]}
  d: {start: ./d, depends_on: [b, c]}
";
    let inv = "datacenters:\n  east:\n    racks:\n      r1: {services: [a, b, c, d], hosts: {h1: ~, h2: ~}}\n";
    Test::new()
        .file("inv.yml", inv)
        .file("pb.yml", pb)
        .args(["plan", "-i", "inv.yml", "pb.yml"])
        .stdout_has("\nRollout: 4 services in dependency order, up to 2 at once (max_parallel_services)\n")
        .stdout_has("\n  Schedule: a, then b + c, then d; each service starts once every service it follows is done, 2 at most at once;")
        .run();
    let out = Test::new()
        .file("inv.yml", inv)
        .file("pb.yml", pb)
        .args(["plan", "-i", "inv.yml", "pb.yml", "--json"])
        .run();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["max_parallel_services"], 2);
    assert_eq!(plan["waves"], serde_json::json!([["a"], ["b", "c"], ["d"]]));
}

/// An inventory of `dcs` datacenters of `racks` racks of `per_rack` hosts each,
/// every host on a `link` (none: no speeds).
fn fleet(dcs: usize, racks: usize, per_rack: usize, link: Option<&str>) -> String {
    let mut s = String::from("cluster: fleet\n");
    if let Some(l) = link {
        s.push_str(&format!("defaults: {{link: {l}}}\n"));
    }
    s.push_str("datacenters:\n");
    for d in 0..dcs {
        s.push_str(&format!("  dc{d}:\n    racks:\n"));
        for r in 0..racks {
            let hosts: Vec<String> = (0..per_rack).map(|h| format!("d{d}r{r}h{h}: ~")).collect();
            s.push_str(&format!(
                "      r{r}: {{services: [app], hosts: {{{}}}}}\n",
                hosts.join(", ")
            ));
        }
    }
    s
}

/// `sharing: auto` (the default): the chain where its hops cost less than what the
/// trees lose (32 hosts at 10 GiB), the trees at fleet size and at the benchmark's 48
/// hosts, the chain under 4 x `stripes` hosts, and by host count without link speeds.
#[test]
fn auto_sharing_takes_the_trees_at_fleet_size_and_the_chain_below() {
    let pb = "name: app\nartifact: {source: build, destination: /srv/app, version: v1}\nservices:\n  app: {start: ./app}\n";
    // `rookery plan` of `pb` on `inv` for an artifact of `size`.
    let cmd = |inv: &str, pb: &str, size: &str| {
        Test::new().file("inv.yml", inv).file("pb.yml", pb).args([
            "plan",
            "-i",
            "inv.yml",
            "pb.yml",
            "--artifact-size",
            size,
        ])
    };
    let plan = |inv: String, size: &str| -> serde_json::Value {
        serde_json::from_str(&cmd(&inv, pb, size).args(["--json"]).run().stdout).unwrap()
    };
    let fleet_plan = plan(fleet(3, 10, 20, Some("10Gbit/s")), "10GiB");
    let e = &fleet_plan["estimate"];
    assert_eq!(e["sharing"], "stripes", "{e}");
    assert!(e["trees_seconds"].as_f64().unwrap() < e["chain_seconds"].as_f64().unwrap());
    assert_eq!(e["seconds"], e["trees_seconds"]);
    let depth = e["trees_depth"].as_u64().unwrap();
    assert!((3..=10).contains(&depth), "{depth}");

    // 32 hosts at 10 GiB, capped by the default upload_limit: the chain's 31 hops
    // cost less than the trees' shortfall.
    let close = plan(fleet(2, 2, 8, Some("10Gbit/s")), "10GiB");
    assert_eq!(
        close["estimate"]["sharing"], "pipeline",
        "{}",
        close["estimate"]
    );
    assert!(close["estimate"]["trees_seconds"].as_f64().is_some());
    // The benchmark's 48 hosts at 20 Mbit/s: the trees, since the origin keeps the
    // stripes in step (the chain until then).
    let bench = plan(fleet(2, 2, 12, Some("20Mbit/s")), "64MiB");
    assert_eq!(
        bench["estimate"]["sharing"], "stripes",
        "{}",
        bench["estimate"]
    );

    let small = plan(fleet(1, 2, 8, Some("1Gbit/s")), "1GiB");
    assert_eq!(small["estimate"]["sharing"], "pipeline");
    assert!(small["estimate"]["trees_seconds"].is_null());

    // The text, for 600 hosts on 10 Gbit/s links.
    let text = |pb: &str| cmd(&fleet(3, 10, 20, Some("10Gbit/s")), pb, "10GiB");
    text(pb)
        .stdout_has(" through striped trees over 600 hosts, ")
        .stdout_has("\n  sharing    stripes (auto: striped trees ")
        .run();
    // The playbook's choice stands.
    text(&pb.replace("services:", "distribution: {sharing: pipeline}\nservices:"))
        .stdout_has(" through a pipeline of 600 hosts ")
        .stdout_has("\n  sharing    pipeline (the playbook's `sharing`)\n")
        .run();
}
