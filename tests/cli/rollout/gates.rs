//! What holds a batch back and what lets it go: instances missing elsewhere (the gate
//! stops, or re-cuts the batch at run time), the canary gate (bake, promotion, switch
//! back) and `dc_budget`.

use super::*;

/// Two instances of `a` down elsewhere: with 4 live of 6 and quorum 4, not one host
/// of a batch can go, re-cut or not. The deploy stops at the gate, nothing touched.
#[test]
fn missing_instances_elsewhere_stop_the_deploy_before_the_batch_and_the_next_run_finishes() {
    let c = Diamond::new(Store::ZooKeeper, false);
    let v1 = first_deploy(&c);
    // h5 and h6 go down: `a` has 4 live instances of 6, quorum 4.
    c.host_down("h5");
    c.host_down("h6");
    c.wait_live(total_instances() - 5);
    c.artifact("v2", None);
    let deploy = ["--json", "deploy", "pb.yml", "--limit", "!h5,!h6"];
    let r = c.run(&deploy);
    assert_eq!(r.code, 8, "exit 8 = the deploy stopped\n{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "failed", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("a: 4 live instance(s), 2 of them in the next batch (")
            && message.ends_with(
                "); quorum 4 needs 1 more live elsewhere before one of them can go; gave up after 8s (the service's health_deadline); none of them was touched"
            ),
        "{message}"
    );
    // Nothing was touched: every instance that was live still runs v1, on v1.
    let live = c.live();
    assert_eq!(live.len(), total_instances() - 5, "{live:?}");
    assert!(live.values().all(|v| v == &v1), "{live:?}");
    assert!(host_states(&rec, "a").values().all(|s| s == "pending"));
    for h in ["h1", "h2", "h3", "h4"] {
        let cur = std::fs::read_link(c.path(&format!("hosts/{h}/srv/app/current"))).unwrap();
        assert_eq!(cur, Path::new("releases").join(&v1), "{h}");
    }

    // h5 and h6 are back: the same command resumes and finishes.
    c.agent_start("h5", false);
    c.agent_start("h6", false);
    c.wait_live(total_instances());
    let r = c.run(&deploy).ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    assert_eq!(r.record()["state"], "done");
    let v2 = r.version();
    for ((s, h), v) in &c.live() {
        let left_out = h == "h5" || h == "h6";
        assert_eq!(v, if left_out { &v1 } else { &v2 }, "{s} on {h}");
    }
}

/// Issue 21: one instance of `a` down elsewhere. A planned batch of two would leave
/// 3 live of quorum 4, so the gate re-cuts it at run time: one host, then the other.
/// The deploy finishes, and the quorum holds all along, seen from outside.
#[test]
fn a_batch_that_would_break_quorum_is_recut_at_run_time_and_the_deploy_finishes() {
    let c = Diamond::new(Store::Local, false);
    // `c` also runs on h6: quorum 2 of 4 leaves it room to roll with h6 down.
    let pb = std::fs::read_to_string(c.path("pb.yml")).unwrap();
    let edited = pb.replace("  c:\n    quorum: 3\n", "  c:\n    quorum: 2\n");
    assert_ne!(pb, edited);
    std::fs::write(c.path("pb.yml"), edited).unwrap();
    let v1 = first_deploy(&c);
    c.host_down("h6");
    c.wait_live(total_instances() - 2);
    c.artifact("v2", None);
    let watcher = Watcher::start(c.location().clone(), v1.clone());
    let r = c.run(&["--json", "deploy", "pb.yml", "--limit", "!h6"]);
    let (min, _) = watcher.finish();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.record()["state"], "done");
    assert!(
        r.stderr
            .contains("a: 5 live instance(s), 2 of them in the next batch (")
            && r.stderr
                .contains("); quorum 4 leaves room for 1 down: re-cut, "),
        "{}",
        r.stderr
    );
    assert!(
        min["a"] >= 4,
        "a fell to {} live, below its quorum 4",
        min["a"]
    );
    assert!(
        min["c"] >= 2,
        "c fell to {} live, below its quorum 2",
        min["c"]
    );
    let v2 = r.version();
    for ((s, h), v) in &c.live() {
        assert_eq!(v, if h == "h6" { &v1 } else { &v2 }, "{s} on {h}");
    }
}

/// Issue 21: `canary` gates. The canary bakes, then the deploy stops waiting for
/// promotion (exit 9, recorded); running it again still waits and restarts nothing;
/// `rollout --promote` finishes it without restarting the canary.
#[test]
fn canaries_bake_then_wait_for_promotion_and_promote_finishes_the_deploy() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 1s");
    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 9, "exit 9 = waiting for promotion\n{}", r.stderr);
    let v2 = r.version();
    let rec = r.record();
    assert_eq!(rec["state"], "waiting", "{rec}");
    assert_eq!(rec["services"][0]["canary"]["state"], "waiting", "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .starts_with("a: canaries h1 baked 1s clean and wait for promotion"),
        "{rec}"
    );
    let a = host_states(&rec, "a");
    assert_eq!(a["h1"], "done", "{a:?}");
    assert_eq!(a.values().filter(|s| *s == "pending").count(), 5, "{a:?}");
    for s in ["b", "c", "d"] {
        assert!(host_states(&rec, s).values().all(|st| st == "pending"));
    }
    for ((s, h), v) in c.live() {
        let canary = s == "a" && h == "h1";
        assert_eq!(&v, if canary { &v2 } else { &v1 }, "{s} on {h}");
    }

    // Without --promote, the same command waits again and restarts nothing.
    let again = c.deploy();
    assert_eq!(again.code, 9, "{}", again.stderr);
    assert_eq!(c.starts_of(&v2).len(), 1, "{:?}", c.starts_of(&v2));

    let r = c.run(&["--json", "rollout", "pb.yml", "--promote"]).ok();
    assert_eq!(r.report()["state"], "done");
    assert!(r.stderr.contains("a: canaries h1 promoted"), "{}", r.stderr);
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());

    // Nothing waits now: --promote says so.
    let r = c.run(&["rollout", "pb.yml", "--promote"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--promote: no deploy of playbook `diamond` waits for promotion"),
        "{}",
        r.stderr
    );
}

/// Issue 21: a canary that fails its restart switches every canary back and stops the
/// deploy, although the failure budget would let the rollout go on.
#[test]
fn a_failing_canary_switches_the_canaries_back_whatever_the_failure_budget() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 2\ncanary_bake: 1s\nauto_promote: true\nfailure_budget: 5");
    c.artifact("v2", None);
    c.break_on("a", "h4", "v2");
    let r = c.deploy();
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "failed", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("a: canary h4: ")
            && message.contains("the canaries were switched back to their previous release")
            && message.contains("whatever the failure budget (5)"),
        "{message}"
    );
    let a = host_states(&rec, "a");
    assert_eq!(a["h4"], "failed", "{a:?}");
    assert_eq!(a["h1"], "pending", "{a:?}");
    let h1 = rec["services"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap()
        .clone();
    assert!(
        h1["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("switched back to {v1} with the other canaries")),
        "{h1}"
    );
    // Every instance is live, on the old release.
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == &v1), "{live:?}");
}

/// Issue 21: the canary's health is watched during the whole bake: a canary that
/// turns unhealthy during it is switched back and the deploy stops.
#[test]
fn a_canary_failing_during_the_bake_is_switched_back_and_stops_the_deploy() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 60s\nauto_promote: true");
    c.artifact("v2", None);
    let mut child = spawn_in_group(c.command(&["--json", "deploy", "pb.yml"]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    let stdout = Lines::read(child.stdout.take().unwrap());
    stderr.wait_for("a: canaries h1 baking for 1m");
    c.break_on("a", "h1", "v2");
    let status = child.wait().unwrap();
    let (said, out) = (stderr.finish(), stdout.finish());
    assert_eq!(status.code(), Some(8), "{said}");
    let rec: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rec = &rec["rollout"];
    let h1 = rec["services"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap()
        .clone();
    assert_eq!(h1["state"], "failed", "{rec}");
    let error = h1["error"].as_str().unwrap();
    assert!(
        error.contains("was withdrawn (failed health checks or exited) during the canary bake")
            && error.ends_with(&format!("; switched back to {v1}")),
        "{error}"
    );
    assert!(host_states(rec, "b").values().all(|s| s == "pending"));
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == &v1), "{live:?}");
}

/// Issue 21: a run killed during the bake is resumed by baking again, without
/// restarting the canary.
#[test]
fn a_deploy_killed_during_the_bake_resumes_the_bake_without_restarting_the_canary() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 60s");
    c.artifact("v2", None);
    let mut child = spawn_in_group(c.command(&["deploy", "pb.yml"]));
    let stderr = Lines::read(child.stderr.take().unwrap());
    stderr.wait_for("a: canaries h1 baking");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stderr);
    let pb = std::fs::read_to_string(c.path("pb.yml")).unwrap();
    std::fs::write(
        c.path("pb.yml"),
        pb.replace(
            "canary_bake: 60s",
            "canary_bake: 1s\n    auto_promote: true",
        ),
    )
    .unwrap();
    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    assert!(
        r.stderr.contains("a: canaries h1 baking for 1s"),
        "{}",
        r.stderr
    );
    assert_eq!(r.record()["state"], "done");
    assert_eq!(r.record()["services"][0]["canary"]["state"], "promoted");
    let v2 = r.version();
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
}

/// Issue 21: `dc_budget: 1` keeps each batch of `a` within one datacenter in the run,
/// as the plan cuts it.
#[test]
fn dc_budget_keeps_each_batch_in_one_datacenter() {
    let c = Diamond::new(Store::Local, false);
    c.settings_of_a("dc_budget: 1");
    let plan = c.run(&["plan", "pb.yml"]).ok();
    assert!(
        plan.stdout
            .contains("max_parallel 2, any racks, 1 datacenter at a time"),
        "{}",
        plan.stdout
    );
    let r = c.deploy().ok();
    let batches: Vec<Vec<&str>> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("a: batch "))
        .map(|l| l.split_once(": ").unwrap().1.split(", ").collect())
        .collect();
    assert_eq!(batches.len(), 4, "{}", r.stderr);
    for b in &batches {
        let east = b.iter().filter(|h| ["h1", "h2", "h3"].contains(h)).count();
        assert!(
            east == 0 || east == b.len(),
            "batch {b:?} spans both datacenters"
        );
    }
    let planned: Vec<&str> = plan
        .stdout
        .lines()
        .skip_while(|l| !l.contains(". a:"))
        .skip(1)
        .take(4)
        .collect();
    for (p, b) in planned.iter().zip(&batches) {
        assert!(p.contains(&b.join(", ")), "plan {p:?}, run {b:?}");
    }
}

/// Issue 21: the plan shows the canary gate after the canary batches.
#[test]
fn the_plan_shows_the_canary_gate() {
    let c = Diamond::new(Store::Local, false);
    c.settings_of_a("canary: 2\ncanary_bake: 2m");
    let plan = c.run(&["plan", "pb.yml"]).ok().stdout;
    let lines: Vec<&str> = plan.lines().skip_while(|l| !l.contains(". a:")).collect();
    assert!(lines[0].contains("2 canaries"), "{plan}");
    assert!(lines[1].contains("canary  h1, h4"), "{plan}");
    assert_eq!(
        lines[2].trim(),
        "gate      the canaries bake 2m healthy (a failure switches them back and stops the deploy); then the deploy waits for `rookery rollout --promote` (exit 9)",
        "{plan}"
    );
    assert!(!lines[3].contains("canary"), "{plan}");
}

/// Issue 21: `--promote` checks the canaries first: one that died while the deploy
/// waited is a failed canary, switched back, and the deploy stops.
#[test]
fn promoting_a_canary_that_died_while_waiting_switches_it_back() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.settings_of_a("canary: 1\ncanary_bake: 1s");
    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 9, "{}", r.stderr);
    c.host_down("h1");
    let r = c.run(&["--json", "rollout", "pb.yml", "--promote"]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.report();
    assert_eq!(rec["state"], "failed", "{rec}");
    let h1 = rec["services"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h1")
        .unwrap()
        .clone();
    assert_eq!(h1["state"], "failed", "{rec}");
    assert!(
        h1["error"]
            .as_str()
            .unwrap()
            .starts_with("canary h1: no longer live on "),
        "{h1}"
    );
    assert!(
        host_states(&rec, "a").values().all(|s| s != "done"),
        "{rec}"
    );
    // `a` runs the old release everywhere again, h1 included.
    let live = c.live();
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        assert_eq!(live[&("a".to_string(), h.to_string())], v1, "{live:?}");
    }
}
