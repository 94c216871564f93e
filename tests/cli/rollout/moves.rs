//! Hosts moved between releases other than by a plain deploy: a host that missed a
//! deploy (reconcile), a rebooted host (`agent start`), rollback, the switch back's
//! commands, runs under `--limit`, and the previous release a first deploy records.

use super::*;

fn catch_up(store: Store) {
    let c = Diamond::new(store, true);
    first_deploy(&c);
    // h6 goes down: its services die and its disk is gone from the network.
    c.host_down("h6");
    c.wait_live(total_instances() - 2); // a and c
    std::fs::rename(c.path("hosts/h6"), c.path("h6.away")).unwrap();
    std::fs::write(c.path("hosts/h6"), "not a directory").unwrap();

    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 4, "{}", r.stderr);
    let v2 = r.version();
    assert_eq!(host_states(&r.record(), "a")["h6"], "skipped");
    assert_eq!(host_states(&r.record(), "a")["h5"], "done");

    // h6 comes back, on the old release and with nothing running.
    std::fs::remove_file(c.path("hosts/h6")).unwrap();
    std::fs::rename(c.path("h6.away"), c.path("hosts/h6")).unwrap();
    let r = c.run(&["--json", "reconcile", "pb.yml"]).ok();
    let rec = r.report();
    assert_eq!(rec["kind"], "reconcile");
    assert_eq!(host_states(&rec, "a")["h6"], "done");
    assert_eq!(host_states(&rec, "a")["h5"], "unchanged");
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
}

#[test]
fn a_host_that_missed_a_deploy_catches_up_through_reconcile_on_zookeeper() {
    catch_up(Store::ZooKeeper);
}

#[test]
fn a_host_that_missed_a_deploy_catches_up_through_reconcile_on_the_local_store() {
    catch_up(Store::Local);
}

#[test]
fn a_rebooted_host_starts_its_services_and_catches_up_when_asked() {
    let c = Diamond::new(Store::Local, true);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    // v2 reaches every host, then h6 goes down before the rollout.
    c.run(&["distribute", "pb.yml"]).ok();
    c.host_down("h6");
    c.wait_live(total_instances() - 2);
    c.run(&["rollout", "pb.yml", "--limit", "!h6"]).ok();
    let v2 = c.live()[&("a".to_string(), "h1".to_string())].clone();
    assert_ne!(v2, v1);

    // At boot, without --catch-up: back on the release it last ran.
    let lines = c.agent_start("h6", false);
    assert_eq!(lines.len(), 2, "{lines:?}"); // a and c
    assert!(
        lines.iter().all(|l| l["version"] == v1.as_str()),
        "{lines:?}"
    );
    c.wait_live(total_instances());
    assert_eq!(c.live()[&("a".to_string(), "h6".to_string())], v1);

    // Down again; at boot with --catch-up: on the version the others run.
    c.host_down("h6");
    c.wait_live(total_instances() - 2);
    let lines = c.agent_start("h6", true);
    assert!(
        lines.iter().all(|l| l["version"] == v2.as_str()),
        "{lines:?}"
    );
    assert!(
        lines[0]["note"]
            .as_str()
            .unwrap()
            .starts_with(&format!("caught up: the live instances run {v2}")),
        "{lines:?}"
    );
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
    let cur = std::fs::read_link(c.path("hosts/h6/srv/app/current")).unwrap();
    assert_eq!(cur, Path::new("releases").join(&v2));
}

#[test]
fn rollback_returns_every_host_to_its_previous_release_dependents_first() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let v2 = c.deploy().ok().version();
    assert!(c.live().values().all(|v| v == &v2));

    // Only d first: the others stay on v2.
    let r = c
        .run(&["--json", "rollback", "pb.yml", "--service", "d"])
        .ok();
    assert_eq!(r.report()["kind"], "rollback");
    let live = c.live();
    for ((s, h), v) in &live {
        assert_eq!(v, if s == "d" { &v1 } else { &v2 }, "{s} on {h}");
    }
    // ... and at boot too: each service starts where it runs (its own release, not
    // the host-wide `current` link the rollback moved), and status agrees.
    let status = c.run(&["--json", "status", "pb.yml"]).ok().report();
    for svc in status["services"].as_array().unwrap() {
        let want = if svc["name"] == "d" { &v1 } else { &v2 };
        for h in svc["hosts"].as_array().unwrap() {
            assert_eq!(h["on_boot"], want.as_str(), "{svc}");
            assert_eq!(h["boot_differs"], false, "{svc}");
        }
    }
    c.host_down("h1"); // a, b and d run there
    c.wait_live(total_instances() - 3);
    let started = c.agent_start("h1", false);
    let versions: BTreeMap<&str, &str> = started
        .iter()
        .map(|l| {
            (
                l["service"].as_str().unwrap(),
                l["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        BTreeMap::from([("a", v2.as_str()), ("b", v2.as_str()), ("d", v1.as_str())]),
        "{started:?}"
    );
    c.wait_live(total_instances());
    for ((s, h), v) in &c.live() {
        assert_eq!(v, if s == "d" { &v1 } else { &v2 }, "{s} on {h}");
    }
    // A host set to start another release at boot than the one live is flagged.
    let spec = c.path("hosts/h3/srv/app/.rookery/services/d.json");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace(&v1, &v2)).unwrap();
    let r = c.run(&["status", "pb.yml"]).ok();
    let flagged: Vec<&str> = r.stdout.lines().filter(|l| l.contains("(!)")).collect();
    assert_eq!(flagged.len(), 1, "{}", r.stdout);
    assert!(flagged[0].trim_start().starts_with("h3 "), "{}", r.stdout);
    std::fs::write(&spec, text).unwrap();

    // Then everything, watched: dependents go back before what they depend on.
    let watcher = Watcher::start(c.location().clone(), v2.clone());
    let r = c.run(&["--json", "rollback", "pb.yml"]).ok();
    let (min, first_old) = watcher.finish();
    let rec = r.report();
    assert_eq!(rec["state"], "done", "{rec}");
    assert!(c.live().values().all(|v| v == &v1), "{:?}", c.live());
    for (s, _, quorum) in SERVICES {
        assert!(min[*s] >= *quorum as usize, "{s} fell below its quorum");
    }
    for (s, deps) in DEPS {
        if *s == "d" {
            continue; // already back before the watch started
        }
        for d in *deps {
            let last_dependent = first_old
                .iter()
                .filter(|((x, _), _)| x == s)
                .map(|(_, t)| *t)
                .max()
                .unwrap();
            let first_dependency = first_old
                .iter()
                .filter(|((x, _), _)| x == d)
                .map(|(_, t)| *t)
                .min()
                .unwrap();
            assert!(
                last_dependent < first_dependency,
                "{d} went back before all of {s}"
            );
        }
    }
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        let cur = std::fs::read_link(c.path(&format!("hosts/{h}/srv/app/current"))).unwrap();
        assert_eq!(cur, Path::new("releases").join(&v1));
    }
}

/// A switch back runs the release it returns to with the commands that host last ran
/// it with, not the new playbook's: here the new playbook's health check of `b` is
/// what is broken (`exit 1`), and it must not fail the way back too.
#[test]
fn a_switch_back_uses_the_health_check_the_old_release_ran_with() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    let (_, broken) = labelled_playbooks(&c, "v2");
    let r = c.run(&["--json", "deploy", &broken]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    let failed: Vec<&serde_json::Value> = rec["services"][1]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{rec}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .ends_with(&format!("; switched back to {v1}")),
        "{rec}"
    );
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    for ((s, h), v) in &live {
        assert_eq!(v, if s == "a" { "v2" } else { v1.as_str() }, "{s} on {h}");
    }
}

/// Issue 18's first sequence: a deploy stopped within a `--limit`, then the same
/// version deployed without it. The second run resumes the record and rolls every
/// host of its own, wider scope; it never ends `done` with hosts on the old version.
#[test]
fn a_deploy_without_the_stopped_runs_limit_finishes_every_host() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    let (pb, broken) = labelled_playbooks(&c, "v2");
    let r = c.run(&["--json", "--limit", "h1,h2", "deploy", &broken]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let r = c.run(&["--json", "deploy", &pb]).ok();
    let rec = r.record();
    assert_eq!(rec["state"], "done", "{rec}");
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == "v2"), "{live:?}");
}

/// The other order: a whole deploy stopped, then a `--limit` run of it. The limited
/// run finishes its hosts but leaves the record not done, naming the hosts left; the
/// plain run then finishes.
#[test]
fn a_limited_run_of_a_stopped_deploy_never_records_it_done() {
    let c = Diamond::new(Store::Local, false);
    first_deploy(&c);
    let (pb, broken) = labelled_playbooks(&c, "v2");
    let r = c.run(&["--json", "deploy", &broken]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let r = c.run(&["--json", "--limit", "h1", "deploy", &pb]);
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "interrupted", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("done within this run's --limit;")
            && message.contains("c/h3")
            && message.ends_with("run the same command without --limit to finish"),
        "{message}"
    );
    for ((_, host), v) in c.live() {
        if host == "h1" {
            assert_eq!(v, "v2");
        }
    }
    c.run(&["--json", "deploy", &pb]).ok();
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| v == "v2"), "{live:?}");
}

/// Issue 18's second sequence: a deploy limited to one datacenter, then `reconcile`.
/// The tie (half the hosts on each version) goes to the newest deployed version, and
/// no host is ever moved back from it; `--dry-run` prints exactly those moves first.
#[test]
fn reconcile_never_moves_a_host_back_from_the_newest_deploy() {
    let c = Diamond::new(Store::Local, false);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let v2 = c
        .run(&["--json", "--limit", "dc:east", "deploy", "pb.yml"])
        .ok()
        .version();
    let before = c.live();
    let preview = c
        .run(&["--json", "reconcile", "--dry-run", "pb.yml"])
        .ok()
        .report();
    let moves = preview["moves"].as_array().unwrap();
    let mut expected: Vec<(String, String)> = before
        .iter()
        .filter(|(_, v)| **v == v1)
        .map(|((s, h), _)| (s.clone(), h.clone()))
        .collect();
    let mut got: Vec<(String, String)> = moves
        .iter()
        .map(|m| {
            assert_eq!(m["from"], v1.as_str(), "{m}");
            assert_eq!(m["to"], v2.as_str(), "{m}");
            (
                m["service"].as_str().unwrap().into(),
                m["host"].as_str().unwrap().into(),
            )
        })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{preview}");
    assert_eq!(c.live(), before, "the dry run changed something");
    c.run(&["--json", "reconcile", "pb.yml"]).ok();
    let live = c.live();
    assert_eq!(live.len(), total_instances(), "{live:?}");
    assert!(live.values().all(|v| *v == v2), "{live:?}");
}

/// On a first deploy no service ran before, whatever another service on the same host
/// did to `current` first: the record (and the summary line) says `(none) -> <v>`,
/// not `<v> -> <v>`.
#[test]
fn a_first_deploy_records_no_previous_release_for_any_service() {
    let c = Diamond::new(Store::Local, true);
    let r = c.deploy().ok();
    let rec = r.record();
    for s in rec["services"].as_array().unwrap() {
        for h in s["hosts"].as_array().unwrap() {
            assert_eq!(h["state"], "done", "{h}");
            assert!(h["from"].is_null(), "{}: {h}", s["name"]);
        }
    }
    assert!(
        !r.stderr.contains(&format!("{0} -> {0}", r.version())),
        "{}",
        r.stderr
    );
}
