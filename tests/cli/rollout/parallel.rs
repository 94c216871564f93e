//! Services side by side (`rollout.max_parallel_services`) on the diamond: `b` and
//! `c` both follow only `a`, so they roll together, each keeping its quorum, and `d`
//! waits for both. The order is read from the controller's own progress lines
//! (`S: batch I/N: HOSTS` before a batch of service S restarts, `  S/HOST: ...` once
//! that host is done), so the tests assert the order of events, never durations.

use super::*;

impl Diamond {
    /// Sets `rollout.max_parallel_services` in `pb.yml`.
    fn max_parallel_services(&self, n: u32) {
        let pb = std::fs::read_to_string(self.path("pb.yml")).unwrap();
        let edited = pb.replacen(
            "services:\n",
            &format!("rollout: {{max_parallel_services: {n}}}\nservices:\n"),
            1,
        );
        std::fs::write(self.path("pb.yml"), edited).unwrap();
    }

    /// Adds settings to `service` of `pb.yml` (YAML lines, unindented).
    fn settings_of(&self, service: &str, settings: &str) {
        let pb = std::fs::read_to_string(self.path("pb.yml")).unwrap();
        let indented: String = settings.lines().map(|l| format!("    {l}\n")).collect();
        let head = format!("  {service}:\n");
        let edited = pb.replacen(&head, &format!("{head}{indented}"), 1);
        assert_ne!(pb, edited);
        std::fs::write(self.path("pb.yml"), edited).unwrap();
    }
}

/// The controller's progress lines in order: `(service, true)` when a batch of the
/// service begins, `(service, false)` when one of its hosts is done (or failed).
fn events(stderr: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        if let Some((s, rest)) = line.split_once(": batch ")
            && !s.starts_with(' ')
            && rest.contains('/')
        {
            out.push((s.to_string(), true));
        } else if let Some(rest) = line.strip_prefix("  ")
            && let Some((s, _)) = rest.split_once('/')
            && SERVICES.iter().any(|(name, _, _)| *name == s)
        {
            out.push((s.to_string(), false));
        }
    }
    out
}

/// The index of the first batch of `service`, and of the last of its hosts done.
fn span(events: &[(String, bool)], service: &str) -> (usize, usize) {
    let first = events.iter().position(|(s, b)| s == service && *b);
    let last = events.iter().rposition(|(s, b)| s == service && !*b);
    (
        first.unwrap_or_else(|| panic!("{service} never began: {events:?}")),
        last.unwrap_or_else(|| panic!("no host of {service} finished: {events:?}")),
    )
}

/// For every dependency pair, the dependent's first batch began after the last host
/// of the dependency was done.
#[track_caller]
fn dependencies_first(events: &[(String, bool)]) {
    for (s, deps) in DEPS {
        for d in *deps {
            let (first, _) = span(events, s);
            let (_, last_dep) = span(events, d);
            assert!(
                last_dep < first,
                "{s} began before {d} was done: {events:?}"
            );
        }
    }
}

#[test]
fn independent_services_roll_together_and_dependents_wait_for_every_dependency() {
    let c = Diamond::new(Store::Local, false);
    c.max_parallel_services(2);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let watcher = Watcher::start(c.location().clone(), v1.clone());
    let r = c.deploy().ok();
    let (min, first_new) = watcher.finish();
    let v2 = r.version();
    assert_eq!(r.record()["state"], "done", "{}", r.stderr);
    let ev = events(&r.stderr);
    // b and c overlapped: each began before the other's last host was done.
    let (b_first, b_last) = span(&ev, "b");
    let (c_first, c_last) = span(&ev, "c");
    assert!(c_first < b_last && b_first < c_last, "{ev:?}");
    dependencies_first(&ev);
    // The same from the store, seen from outside: every instance of a dependency was
    // live on the new version before any instance of its dependents.
    for (s, deps) in DEPS {
        for d in *deps {
            let of = |x: &str| -> Vec<Instant> {
                first_new
                    .iter()
                    .filter(|((y, _), _)| y == x)
                    .map(|(_, t)| *t)
                    .collect()
            };
            let (last_dep, first) = (of(d).into_iter().max(), of(s).into_iter().min());
            assert!(
                last_dep.unwrap() < first.unwrap(),
                "{s} switched before all of {d}"
            );
        }
    }
    for (s, _, quorum) in SERVICES {
        assert!(min[*s] >= *quorum as usize, "{s} fell to {}", min[*s]);
    }
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
}

#[test]
fn one_service_at_a_time_rolls_them_one_after_another() {
    let c = Diamond::new(Store::Local, false);
    c.max_parallel_services(1);
    first_deploy(&c);
    c.artifact("v2", None);
    let r = c.deploy().ok();
    assert_eq!(r.record()["state"], "done", "{}", r.stderr);
    // One at a time: the batch lines of each service form one run, in plan order.
    let batches: Vec<String> = r
        .stderr
        .lines()
        .filter_map(|l| l.split_once(": batch ").map(|(s, _)| s.to_string()))
        .filter(|s| !s.starts_with(' '))
        .collect();
    let mut order = batches.clone();
    order.dedup();
    assert_eq!(order, ["a", "b", "c", "d"], "{batches:?}");
    // Host lines name the host alone, as they always did.
    assert!(r.stderr.contains("\n  h1: "), "{}", r.stderr);
    assert!(!r.stderr.contains("  b/"), "{}", r.stderr);
}

#[test]
fn a_failed_service_holds_its_dependents_while_an_independent_one_finishes() {
    let c = Diamond::new(Store::Local, false);
    c.max_parallel_services(2);
    let v1 = first_deploy(&c);
    c.artifact("v3", Some("b"));
    let r = c.deploy();
    assert_eq!(r.code, 8, "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "failed", "{rec}");
    let message = rec["message"].as_str().unwrap();
    assert!(
        message.starts_with("b: 1 host(s) failed, more than its failure budget of 0")
            && message.ends_with("; not started: d (held by the stop)"),
        "{message}"
    );
    assert!(host_states(&rec, "a").values().all(|s| s == "done"));
    assert!(
        host_states(&rec, "c").values().all(|s| s == "done"),
        "{rec}"
    );
    assert!(
        host_states(&rec, "d").values().all(|s| s == "pending"),
        "{rec}"
    );
    let live = c.live();
    for ((s, h), v) in &live {
        if s == "b" || s == "d" {
            assert_eq!(v, &v1, "{s} on {h}: {live:?}");
        }
    }
}

#[test]
fn a_service_waiting_at_its_canary_gate_holds_only_what_follows_it() {
    let c = Diamond::new(Store::Local, false);
    c.max_parallel_services(2);
    first_deploy(&c);
    c.settings_of("b", "canary: 1\ncanary_bake: 1s");
    c.artifact("v2", None);
    let r = c.deploy();
    assert_eq!(r.code, 9, "exit 9 = waiting for promotion\n{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "waiting", "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .starts_with("b: canaries h1 baked 1s clean and wait for promotion"),
        "{rec}"
    );
    // c, which does not follow b, rolled meanwhile; d, which does, did not start.
    assert!(
        host_states(&rec, "c").values().all(|s| s == "done"),
        "{rec}"
    );
    assert!(
        host_states(&rec, "d").values().all(|s| s == "pending"),
        "{rec}"
    );
    let r = c.run(&["--json", "rollout", "pb.yml", "--promote"]).ok();
    assert_eq!(r.report()["state"], "done");
    let v2 = r.report()["version"].as_str().unwrap().to_string();
    c.each_started_once(&v2);
}

#[test]
fn a_parallel_deploy_killed_mid_run_resumes_from_the_record() {
    let c = Diamond::new(Store::Local, false);
    c.max_parallel_services(2);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    let mut child = c.spawn(&["deploy", "pb.yml"]);
    // Kill the controller while b and c are both in flight: c has begun and b has
    // hosts left (one after the other, c would begin only once b is done).
    let new = |s: &str| {
        c.starts()
            .iter()
            .filter(|(x, _, v)| x == s && !v.is_empty() && v != &v1)
            .count()
    };
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || new("c") >= 1 && new("b") < 4,
        || format!("b and c were never in flight together: {:?}", c.starts()),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let r = c.deploy().ok();
    assert!(r.stderr.contains("resuming deploy"), "{}", r.stderr);
    let rec = r.record();
    assert_eq!(rec["state"], "done", "{rec}");
    let v2 = r.version();
    c.each_started_once(&v2);
    assert!(c.live().values().all(|v| v == &v2), "{:?}", c.live());
    // In the resumed run too, d began only once b and c were done.
    let ev = events(&r.stderr);
    let (d_first, _) = span(&ev, "d");
    for dep in ["b", "c"] {
        if let Some(last) = ev.iter().rposition(|(s, b)| s == dep && !*b) {
            assert!(last < d_first, "{ev:?}");
        }
    }
}

#[test]
fn a_parallel_rollback_returns_dependents_before_what_they_depend_on() {
    let c = Diamond::new(Store::Local, false);
    c.max_parallel_services(2);
    let v1 = first_deploy(&c);
    c.artifact("v2", None);
    c.deploy().ok();
    let r = c.run(&["--json", "rollback", "pb.yml"]).ok();
    assert_eq!(r.report()["state"], "done", "{}", r.stderr);
    let ev = events(&r.stderr);
    // Reversed: a service goes back once every service that depends on it is back.
    for (s, deps) in DEPS {
        for d in *deps {
            let (_, last) = span(&ev, s);
            let (first_dep, _) = span(&ev, d);
            assert!(last < first_dep, "{d} went back before {s}: {ev:?}");
        }
    }
    // b and c, which do not depend on each other, went back together.
    let (b_first, b_last) = span(&ev, "b");
    let (c_first, c_last) = span(&ev, "c");
    assert!(c_first < b_last && b_first < c_last, "{ev:?}");
    c.wait_live(total_instances());
    assert!(c.live().values().all(|v| v == &v1), "{:?}", c.live());
}
