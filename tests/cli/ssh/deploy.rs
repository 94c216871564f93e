//! Whole runs over real sshd: an inventory host as the origin, deploys that install
//! rookery and start every service, hosts that cannot take the binary or fail their
//! health checks, hooks, Ctrl-C once and twice, and rollback.

use super::*;

/// Makes h1 the cluster's origin (`origin: h1`): the playbook's source becomes the
/// artifact's absolute path, which h1 (on this machine) reads. Returns that path.
fn origin_on_h1(c: &Cluster, a: &Artifact) -> PathBuf {
    let inv = std::fs::read_to_string(c.inventory()).unwrap();
    std::fs::write(
        c.inventory(),
        inv.replacen("cluster: loopback\n", "cluster: loopback\norigin: h1\n", 1),
    )
    .unwrap();
    let src = a.dir.path().join("art");
    let pb = std::fs::read_to_string(a.playbook()).unwrap();
    std::fs::write(
        a.playbook(),
        pb.replace("source: art", &format!("source: {}", src.display())),
    )
    .unwrap();
    src
}

/// The striped trees with an inventory host as the origin: h1 seeds through `agent
/// seed --in-step` (its uploads to the stripes' roots kept in step, vendored librqbit
/// patch 12, with its sockets' unsent bytes bounded), and every host has its copy.
#[test]
fn an_inventory_host_can_be_the_origin_of_striped_trees() {
    let c = Cluster::ssh(8, "127.0.67").start();
    let a = Artifact::new(4 << 20);
    origin_on_h1(&c, &a);
    let pb = std::fs::read_to_string(a.playbook()).unwrap();
    std::fs::write(
        a.playbook(),
        pb.replace(
            "distribution: {",
            "distribution: {sharing: stripes, stripes: 5, ",
        ),
    )
    .unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(r.json["sharing"], "stripes", "{}", r.json);
    assert_blob_everywhere(&c, &r, 8, 4 << 20);
}

/// Hosts h1 to h`hosts` have the release `r` distributed, with the artifact's blob
/// of `bytes`.
fn assert_blob_everywhere(c: &Cluster, r: &Run, hosts: usize, bytes: usize) {
    let version = r.json["version"].as_str().unwrap();
    for k in 1..=hosts {
        let rel = c
            .root(&format!("h{k}"))
            .join("srv/app/releases")
            .join(version);
        assert_eq!(std::fs::read(rel.join("blob")).unwrap(), noise(bytes, 7));
    }
}

#[test]
fn an_inventory_host_can_be_the_origin() {
    let c = Cluster::ssh(4, "127.0.48").start();
    // h1 is the build host: it makes the metainfo, runs the tracker and seeds.
    let a = Artifact::new(2 << 20);
    let pb = std::fs::read_to_string(a.playbook()).unwrap();
    let src = origin_on_h1(&c, &a);
    // Hashed ahead on h1, where the next distribute hashes it again: reusing what
    // this run kept beside the metainfo (`torrent create --reuse`).
    let pb_path = a.playbook();
    let p = rookery(&c, &["prepare", pb_path.to_str().unwrap()], &[]);
    assert_eq!(p.code, 0, "{}\n{}", p.stderr, p.json);
    assert_eq!(p.json["origin"], "h1", "{}", p.json);
    let kept = c.root("h1").join(".rookery/origin/t.torrent.stats.json");
    assert!(
        std::fs::read_to_string(&kept).unwrap().contains("\"blob\""),
        "{}",
        kept.display()
    );
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(r.json["version"], p.json["version"], "{}", r.json);
    let total = r.json["artifact_bytes"].as_u64().unwrap();
    let uploaded = r.json["origin_uploaded_bytes"].as_u64().unwrap();
    assert!(
        uploaded >= total,
        "the origin on h1 reported {uploaded} of {total}: {}",
        r.json
    );
    let from_origin: u64 = (1..=4)
        .map(|k| {
            host(&r, &format!("h{k}"))["bytes_from_origin"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(
        from_origin > 0,
        "no host counted bytes from h1's seeder: {}",
        r.json
    );
    assert_blob_everywhere(&c, &r, 4, 2 << 20);
    // The tracker and the seeder on h1 are gone with the run.
    let exe = c.root("h1").join(".rookery/bin/rookery");
    for pattern in [
        format!("{} --json", exe.display()),
        format!("{} agent seed", exe.display()),
    ] {
        let mut gone = false;
        for _ in 0..100 {
            let out = Command::new("pgrep")
                .arg("-f")
                .arg(&pattern)
                .output()
                .unwrap();
            if !out.status.success() {
                gone = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(gone, "still running on h1: {pattern}");
    }
    // A host whose agent fails is named to the tracker on h1, through the file that
    // tracker follows, as the embedded tracker is told directly.
    std::fs::write(src.join("more"), noise(1 << 16, 3)).unwrap();
    let releases = c.root("h3").join("srv/app/releases");
    std::fs::rename(&releases, c.root("h3").join("srv/app/releases.away")).unwrap();
    std::fs::write(&releases, "not a directory").unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 4, "{}\n{}", r.stderr, r.json);
    assert_eq!(host(&r, "h3")["ok"], false, "{}", r.json);
    let withdrawn = c.root("h1").join(".rookery/origin/t.torrent.withdrawn");
    assert_eq!(std::fs::read_to_string(&withdrawn).unwrap(), "h3\n");

    // A relative source cannot name a path on the origin host.
    std::fs::write(a.playbook(), pb).unwrap();
    let r = distribute(&c, &a, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "`artifact.source` is `art`: with `origin: h1` it is a path on h1 and must be absolute"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn a_deploy_over_ssh_installs_rookery_starts_every_service_and_registers_it() {
    let c = Cluster::ssh(4, "127.0.49").start();
    let a = serving_artifact(&c);

    // Fresh hosts: the distribution installs the binary, the rollout finds it.
    let r = rookery(&c, &["deploy", a.playbook().to_str().unwrap()], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    // With the playbook, status also asks each host what `current` points to.
    let s = rookery(&c, &["status", a.playbook().to_str().unwrap()], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    let version = s.json["last_deploy"]["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version in {}", s.json))
        .to_string();
    // The loopback inventory: store and api on every host, web on the even ones.
    for (service, hosts) in [("store", 4), ("api", 4), ("web", 2)] {
        let st = s.json["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == service)
            .unwrap_or_else(|| panic!("{service} missing: {}", s.json));
        assert_eq!(st["live"], hosts, "{st}");
        for h in st["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], version.as_str(), "{h}");
            assert_eq!(h["current"], version.as_str(), "{h}");
        }
    }
    for k in 1..=4 {
        let current = c.root(&format!("h{k}")).join("srv/app/current");
        assert!(
            std::fs::read_link(&current)
                .unwrap()
                .ends_with(format!("releases/{version}")),
            "{}",
            current.display()
        );
    }
}

#[test]
fn a_host_that_cannot_take_the_binary_is_left_out_and_the_others_roll() {
    let c = Cluster::ssh(4, "127.0.50").start();
    let a = serving_artifact(&c);
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let r = rookery(&c, &["distribute", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    let version = r.json["version"].as_str().unwrap().to_string();
    // h2 loses its rookery binary, and a file where its directory was stops the
    // upload of a new one.
    let bin = c.root("h2").join(".rookery/bin");
    std::fs::remove_dir_all(&bin).unwrap();
    std::fs::write(&bin, "not a directory").unwrap();

    let r = rookery(&c, &["rollout", pb], &[]);
    assert_eq!(
        r.code, 4,
        "exit 4 = some hosts did not switch\n{}\n{}",
        r.stderr, r.json
    );
    assert!(
        r.stderr
            .contains("h2: bootstrap: uploading the rookery binary to "),
        "{}",
        r.stderr
    );
    for service in r.json["services"].as_array().unwrap() {
        for h in service["hosts"].as_array().unwrap() {
            if h["host"] == "h2" {
                assert_eq!(h["state"], "unreachable", "{h}");
                let err = h["error"].as_str().unwrap();
                assert!(err.starts_with("h2: bootstrap: "), "{err}");
            } else {
                assert_eq!(h["state"], "done", "{h}");
            }
        }
    }
    for (k, switched) in [(1, true), (2, false), (3, true), (4, true)] {
        let current = c.root(&format!("h{k}")).join("srv/app/current");
        assert_eq!(
            std::fs::read_link(&current).is_ok_and(|t| t.ends_with(format!("releases/{version}"))),
            switched,
            "h{k}: {}",
            current.display()
        );
    }
}

#[test]
fn a_failing_health_check_over_ssh_switches_the_host_back_and_the_next_run_finishes() {
    let c = Cluster::ssh(4, "127.0.51").start();
    let a = sickly_artifact(&c, "");
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    assert_eq!(currents(&c, 4), [v1.as_str(); 4]);

    // The second release fails its health check on every host while `sick` is there.
    second_release(&a);
    for k in 1..=4 {
        std::fs::write(c.root(&format!("h{k}")).join("srv/app/sick"), "").unwrap();
    }
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(
        r.code, 8,
        "exit 8 = the deploy stopped\n{}\n{}",
        r.stderr, r.json
    );
    let v2 = r.version();
    assert_ne!(v1, v2);
    let rec = &r.json["rollout"];
    assert_eq!(rec["state"], "failed", "{rec}");
    assert!(
        rec["message"].as_str().unwrap().starts_with(
            "store: 1 host(s) failed, more than its failure budget of 0; the deploy stopped"
        ),
        "{rec}"
    );
    let store = r.states("store");
    let failed: Vec<&String> = store
        .iter()
        .filter(|(_, s)| *s == "failed")
        .map(|(h, _)| h)
        .collect();
    assert_eq!(failed.len(), 1, "{store:?}");
    assert!(
        r.stderr.contains(&format!(
            "{}: FAILED: store {v2} did not become healthy",
            failed[0]
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("; switched back to {v1}")),
        "{}",
        r.stderr
    );
    // No host is left on the second release, and every instance is live on the first.
    assert_eq!(currents(&c, 4), [v1.as_str(); 4]);
    let s = rookery(&c, &["status", pb], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    for (service, hosts) in [("store", 4), ("api", 4), ("web", 2)] {
        let st = s.json["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == service)
            .unwrap_or_else(|| panic!("{service} missing: {}", s.json));
        assert_eq!(st["live"], hosts, "{st}");
        for h in st["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], v1.as_str(), "{h}");
        }
    }

    // Fixed: the same command resumes the deploy and every host ends on the second.
    for k in 1..=4 {
        std::fs::remove_file(c.root(&format!("h{k}")).join("srv/app/sick")).unwrap();
    }
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(r.stderr.contains("resuming deploy "), "{}", r.stderr);
    assert_eq!(r.json["distribution"]["version"], v2.as_str(), "{}", r.json);
    for service in ["store", "api", "web"] {
        let st = r.states(service);
        assert!(st.values().all(|s| s == "done"), "{service}: {st:?}");
    }
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn hosts_that_fail_within_the_failure_budget_are_switched_back_and_the_others_roll() {
    let c = Cluster::ssh(4, "127.0.56").start();
    let a = sickly_artifact(&c, ", failure_budget: 1");
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    second_release(&a);
    let sick = c.root("h3").join("srv/app/sick");
    std::fs::write(&sick, "").unwrap();

    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(
        r.code, 4,
        "exit 4 = some hosts did not switch\n{}\n{}",
        r.stderr, r.json
    );
    let v2 = r.version();
    let rec = &r.json["rollout"];
    assert_eq!(rec["state"], "done", "{rec}");
    // h3 runs store and api (web runs on h2 and h4).
    assert_eq!(
        rec["message"],
        "2 host(s) did not switch (within the failure budget): run `rookery reconcile` once they are fixed",
        "{rec}"
    );
    for service in ["store", "api", "web"] {
        for (host, state) in r.states(service) {
            let want = if host == "h3" { "failed" } else { "done" };
            assert_eq!(state, want, "{service} on {host}");
        }
    }
    assert!(
        r.stderr
            .contains(&format!("h3: FAILED: api {v2} did not become healthy")),
        "{}",
        r.stderr
    );
    assert_eq!(currents(&c, 4), [&v2, &v2, &v1, &v2].map(String::as_str));
    let s = rookery(&c, &["status", pb], &[]);
    for st in s.json["services"].as_array().unwrap() {
        for h in st["hosts"].as_array().unwrap() {
            let want = if h["host"] == "h3" { &v1 } else { &v2 };
            assert_eq!(h["live"], want.as_str(), "{h}");
        }
    }

    // Fixed: reconcile switches h3 to the version the others run.
    std::fs::remove_file(&sick).unwrap();
    let r = rookery(&c, &["reconcile", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(r.json["kind"], "reconcile", "{}", r.json);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

/// With the origin on an inventory host (the build host), `reconcile` makes the
/// metainfo there, as a deploy does, and gives a host the release it missed before
/// it switches it. (It once distributed only from the controller, and the switch
/// failed: "release ... is not on this host".)
#[test]
fn reconcile_with_an_origin_host_distributes_the_release_a_host_missed() {
    let c = Cluster::ssh(4, "127.0.66").start();
    let a = serving_artifact(&c);
    let src = origin_on_h1(&c, &a);
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);

    // A second release that h3 cannot take: its releases folder is a file.
    std::fs::write(src.join("second"), "").unwrap();
    let releases = c.root("h3").join("srv/app/releases");
    let away = c.root("h3").join("srv/app/releases.away");
    std::fs::rename(&releases, &away).unwrap();
    std::fs::write(&releases, "not a directory").unwrap();
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 4, "{}\n{}", r.stderr, r.json);
    let v2 = r.json["distribution"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    std::fs::remove_file(&releases).unwrap();
    std::fs::rename(&away, &releases).unwrap();
    assert_eq!(currents(&c, 4), [&v2, &v2, &v1, &v2].map(String::as_str));

    let r = rookery(&c, &["reconcile", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(
        r.stderr.contains(&format!(
            "reconcile: distributing {v2} to 1 host(s) that miss it"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
    assert!(releases.join(&v2).join("second").exists());
}

#[test]
fn hooks_run_on_the_controller_around_distribution_and_on_each_host_around_its_restart() {
    let c = Cluster::ssh(4, "127.0.57").start();
    let a = serving_artifact(&c);
    let log = c.dir().join("controller.log");
    let pb_text = |before_distribute: &str, before_restart: &str| {
        format!(
            r#"name: t
artifact: {{source: art, destination: /srv/app}}
distribution: {{seed_window: 6s, piece_size: 64KiB}}
hooks:
  before_distribute: "{before_distribute}"
  after_distribute: ["echo after {{version}} >> {log}"]
services:
  store:
    start: "exec /bin/sh {{release}}/bin/serve {dir}"
    quorum: 1
    min_healthy_time: 300ms
    hooks:
      before_restart: "{before_restart}"
      after_restart: ["echo {{host}} after $(readlink {{current}}) >> {{destination}}/hooks.log"]
  api: {{start: "exec /bin/sh {{release}}/bin/serve {dir}", quorum: 1, min_healthy_time: 300ms}}
  web: {{start: "exec /bin/sh {{release}}/bin/serve {dir}", quorum: 1, min_healthy_time: 300ms}}
"#,
            log = log.display(),
            dir = c.dir().display()
        )
    };
    let before = format!("echo before {{version}} >> {}", log.display());
    let before_restart = "echo {host} before $(readlink {current}) >> {destination}/hooks.log";
    std::fs::write(a.playbook(), pb_text(&before, before_restart)).unwrap();
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    std::fs::write(a.dir.path().join("art/second"), "").unwrap();
    let v2 = deployed(&c, pb);

    // On the controller: before and after each distribution, with its version.
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        said,
        format!("before {v1}\nafter {v1}\nbefore {v2}\nafter {v2}\n"),
        "{said}"
    );
    // On each host of store, around its restart: before it with the old release
    // current, after it with the new one.
    for k in 1..=4 {
        let h = format!("h{k}");
        let said = std::fs::read_to_string(c.root(&h).join("srv/app/hooks.log")).unwrap();
        let second: Vec<&str> = said.lines().skip(2).collect();
        assert_eq!(
            second,
            [
                format!("{h} before releases/{v1}"),
                format!("{h} after releases/{v2}")
            ],
            "{said}"
        );
    }

    // A failing `before_distribute` stops the deploy before any host fetches.
    std::fs::write(a.playbook(), pb_text("exit 3", before_restart)).unwrap();
    std::fs::write(a.dir.path().join("art/third"), "").unwrap();
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stderr, r.json);
    assert!(
        r.stderr.contains(
            "error: before_distribute hook `exit 3`: exit status 3; no host was asked to fetch"
        ),
        "{}",
        r.stderr
    );
    for k in 1..=4 {
        let releases = c.root(&format!("h{k}")).join("srv/app/releases");
        assert_eq!(std::fs::read_dir(&releases).unwrap().count(), 2, "h{k}");
    }
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);

    // A failing `before_restart` fails its host before anything is switched there:
    // it keeps running what it ran, and the deploy stops.
    std::fs::write(a.playbook(), pb_text(&before, "exit 4")).unwrap();
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 8, "{}\n{}", r.stderr, r.json);
    let v3 = r.json["distribution"]["version"].as_str().unwrap();
    let failed = r
        .states("store")
        .into_iter()
        .find(|(_, s)| s == "failed")
        .unwrap_or_else(|| panic!("{}", r.json))
        .0;
    assert!(
        r.stderr.contains(&format!(
            "  {failed}: FAILED: before_restart hook `exit 4`: exit status 4; nothing was switched"
        )),
        "{}",
        r.stderr
    );
    assert_ne!(v3, v2);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn the_first_ctrl_c_over_ssh_finishes_the_batch_in_flight_and_the_next_run_resumes() {
    let Interrupted {
        mut child,
        stderr,
        stdout,
        moved,
        v1,
        pb,
        c,
        _artifact,
    } = interrupted_second_deploy("127.0.52");
    let pb = pb.as_str();
    let status = child.wait().unwrap();
    let said = stderr.finish();
    let json: serde_json::Value = serde_json::from_str(&stdout.finish()).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{said}\n{json}");
    let rec = &json["rollout"];
    assert_eq!(rec["state"], "interrupted", "{rec}");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .starts_with("interrupted before store batch 2/4"),
        "{rec}"
    );
    let v2 = json["distribution"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    // The batch in flight finished: its one host runs the second release, the others
    // the first, and every instance is live.
    assert!(
        said.contains(&format!("  {moved}: {v1} -> {v2} in ")),
        "{said}"
    );
    let states = host_states(&json["rollout"], "store");
    for (host, state) in &states {
        let want = if *host == moved { "done" } else { "pending" };
        assert_eq!(state, want, "{states:?}");
    }
    let s = rookery(&c, &["status", pb], &[]);
    let st = &s.json["services"][0];
    assert_eq!(st["name"], "store", "{}", s.json);
    assert_eq!(st["live"], 4, "{st}");

    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(r.stderr.contains("resuming deploy "), "{}", r.stderr);
    // The batch that finished in the interrupted run is not restarted again.
    assert!(r.stderr.contains("store: batch 2/4: "), "{}", r.stderr);
    assert!(!r.stderr.contains("store: batch 1/4: "), "{}", r.stderr);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn a_second_ctrl_c_over_ssh_aborts_and_the_hosts_finish_their_switch() {
    let Interrupted {
        mut child,
        stderr,
        stdout,
        moved,
        v1,
        pb,
        c,
        _artifact,
    } = interrupted_second_deploy("127.0.54");
    let pb = pb.as_str();
    // The second Ctrl-C lands in the middle of the host's switch: `current` has moved
    // (after the old instance stopped), the new one is starting or not yet healthy.
    let link = c.root(&moved).join("srv/app/current");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_link(&link).is_ok_and(|t| t.ends_with(&v1)) {
        assert!(
            std::time::Instant::now() < until,
            "{moved} never began its switch:\n{}",
            stderr.all()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    ctrl_c(&child);
    let status = child.wait().unwrap();
    let said = stderr.finish();
    let out = stdout.finish();
    assert_eq!(status.code(), Some(130), "{said}\n{out}");
    // Aborted, not stopped cleanly: neither the host's result nor a record was printed.
    assert!(!said.contains(&format!("  {moved}: ")), "{said}\n{out}");
    assert!(!out.contains("interrupted before"), "{said}\n{out}");
    // The SSH sessions went with the controller, but the switch on the host does not
    // depend on them: it ends with the new release live there, and every other
    // `store` instance live on the old one. (`status` reads the store, then the hosts:
    // a switch between the two reads shows for a moment as a disagreement, so wait
    // for the settled state.)
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let s = rookery(&c, &["status", pb], &[]);
        let st = s.json["services"][0].clone();
        assert_eq!(st["name"], "store", "{}", s.json);
        let settled = st["hosts"].as_array().unwrap().iter().all(|h| {
            h["live"] == h["current"] && (h["host"] == moved.as_str()) == (h["live"] != v1.as_str())
        });
        seen.push(st.to_string());
        if st["live"] == 4 && settled {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "store did not settle with {moved} on the new release:\n{}",
            seen.join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = rookery(&c, &["deploy", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert!(r.stderr.contains("resuming deploy "), "{}", r.stderr);
    let v2 = r.version();
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);
}

#[test]
fn a_rollback_over_ssh_returns_every_host_to_the_previous_release() {
    let c = Cluster::ssh(4, "127.0.53").start();
    let a = serving_artifact(&c);
    let pb = a.playbook();
    let pb = pb.to_str().unwrap();
    let v1 = deployed(&c, pb);
    std::fs::write(a.dir.path().join("art/second"), "").unwrap();
    let v2 = deployed(&c, pb);
    assert_eq!(currents(&c, 4), [v2.as_str(); 4]);

    let r = rookery(&c, &["rollback", pb], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.json);
    assert_eq!(r.json["kind"], "rollback", "{}", r.json);
    assert_eq!(r.json["state"], "done", "{}", r.json);
    assert_eq!(currents(&c, 4), [v1.as_str(); 4]);
    // Both releases stay on disk: a rollback switches, it does not delete.
    for k in 1..=4 {
        let releases = c.root(&format!("h{k}")).join("srv/app/releases");
        for v in [&v1, &v2] {
            assert!(releases.join(v).is_dir(), "h{k} lost {v}");
        }
    }
    let s = rookery(&c, &["status", pb], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    for st in s.json["services"].as_array().unwrap() {
        for h in st["hosts"].as_array().unwrap() {
            assert_eq!(h["live"], v1.as_str(), "{h}");
            assert_eq!(h["current"], v1.as_str(), "{h}");
        }
    }
    // --limit: only h2's rows (and only h2 is asked); the live counts stay the
    // services'.
    let s = rookery(&c, &["status", pb, "--limit", "h2"], &[]);
    assert_eq!(s.code, 0, "{}\n{}", s.stderr, s.json);
    for (st, live) in s.json["services"].as_array().unwrap().iter().zip([4, 4, 2]) {
        let hosts: Vec<&str> = st["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts, ["h2"], "{st}");
        assert_eq!(st["live"], live, "{st}");
        assert_eq!(st["hosts"][0]["current"], v1.as_str(), "{st}");
    }
    // `agent switch` ignores SIGHUP to finish whatever happens to its session; the
    // services it starts must not inherit that.
    for k in 1..=4 {
        let run = c
            .root(&format!("h{k}"))
            .join("srv/app/.rookery/run/store.json");
        let run: serde_json::Value = serde_json::from_slice(&std::fs::read(&run).unwrap()).unwrap();
        let pid = run["service"].as_u64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(ignored & 1 << (libc::SIGHUP - 1), 0, "h{k}: {status}");
    }
}
