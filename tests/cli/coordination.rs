//! The coordination store against a real ZooKeeper (Debian's `zookeeper` package,
//! started here without systemd, see `support::zookeeper`) and, for the same
//! scenarios, the local store; `agent run` registering in it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rookery::coordination::local_store::LocalStore;
use rookery::coordination::zookeeper::ZkStore;
use rookery::coordination::{CoordError, Coordinator, Holder, Instance};

use crate::support::{BIN, Partition, ZooKeeper, parent_of, rt, succeed};

fn inst(host: &str, v: &str) -> Instance {
    Instance {
        host: host.into(),
        version: v.into(),
        release: format!("/srv/app/releases/{v}"),
    }
}

/// A session of 5 s: the client gives up on a connection that is silent for 2/5 of
/// it, which a loaded 2-core machine can reach with shorter sessions.
async fn zk(connect: &str) -> ZkStore {
    zk_with(connect, Duration::from_secs(5)).await
}

async fn zk_with(connect: &str, session: Duration) -> ZkStore {
    ZkStore::connect(connect, "/rookery/t", "t", session)
        .await
        .unwrap()
}

/// The scenarios every store must pass.
async fn scenarios<S: Coordinator>(a: &S, b: &S) {
    // Live entries: visible to others, gone with their holder, watched.
    let e1 = a.register("api", &inst("h1", "v1")).await.unwrap();
    let _e2 = a.register("api", &inst("h2", "v1")).await.unwrap();
    assert_eq!(
        b.live("api").await.unwrap(),
        vec![inst("h1", "v1"), inst("h2", "v1")]
    );
    let seen = b.live("api").await.unwrap();
    let watch = b.changed("api", &seen);
    let drop_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(e1);
    };
    let (w, ()) = tokio::join!(watch, drop_later);
    w.unwrap();
    // The deletion may land just after the watch fires.
    let mut live = b.live("api").await.unwrap();
    for _ in 0..50 {
        if live.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = b.live("api").await.unwrap();
    }
    assert_eq!(live, vec![inst("h2", "v1")]);

    // A change between a read and the watch is not lost: the watch compares with
    // the read and fires at once (with no other change to wake it, a wait for the
    // next change would hang).
    let seen = b.live("api").await.unwrap();
    let _e3 = a.register("api", &inst("h3", "v1")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.changed("api", &seen))
        .await
        .expect("a change made before the watch was set went unseen")
        .unwrap();

    // Staging and deploy records.
    a.set_staging("api", "h1", "v2").await.unwrap();
    a.set_staging("api", "h2", "v2").await.unwrap();
    b.clear_staging("api", "h1").await.unwrap();
    assert_eq!(
        b.staging("api").await.unwrap(),
        vec![("h2".into(), "v2".into())]
    );
    a.put_deploy("d1", b"{\"n\":1}").await.unwrap();
    a.put_deploy("d2", b"{\"n\":2}").await.unwrap();
    assert_eq!(
        b.last_deploy().await.unwrap(),
        Some(("d2".into(), b"{\"n\":2}".to_vec()))
    );

    // One deploy at a time; the second is told who holds the lock.
    let holder = Holder {
        who: "alice@laptop".into(),
        pid: 7,
        since: 1_795_315_800,
        deploy: "d3".into(),
    };
    let held = a.lock(&holder).await.unwrap();
    match b.lock(&Holder::me("d4")).await {
        Err(CoordError::Locked { holder: h, .. }) => assert_eq!(h, holder),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two deploys held the lock"),
    }
    drop(held);
    let mut taken = None;
    for _ in 0..50 {
        match b.lock(&Holder::me("d4")).await {
            Ok(l) => {
                taken = Some(l);
                break;
            }
            Err(CoordError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(taken.is_some(), "the lock was not released");
}

#[test]
fn zookeeper_store_scenarios() {
    let z = ZooKeeper::start();
    rt().block_on(async {
        let a = zk(&z.connect).await;
        let b = zk(&z.connect).await;
        scenarios(&a, &b).await;
    });
}

#[test]
fn local_store_scenarios() {
    let d = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let a = LocalStore::open(d.path(), "t").unwrap();
        let b = LocalStore::open(d.path(), "t").unwrap();
        scenarios(&a, &b).await;
    });
}

#[test]
fn a_closed_session_takes_its_live_entries_and_lock_with_it() {
    let z = ZooKeeper::start();
    rt().block_on(async {
        let a = zk(&z.connect).await;
        let b = zk(&z.connect).await;
        let _live = a.register("web", &inst("h9", "v1")).await.unwrap();
        let _lock = a.lock(&Holder::me("d1")).await.unwrap();
        assert_eq!(b.live("web").await.unwrap().len(), 1);
        // The run ends: every handle of its session goes, and the session with them.
        drop(_live);
        drop(_lock);
        drop(a);
        let mut gone = false;
        for _ in 0..100 {
            if b.live("web").await.unwrap().is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the live entry outlived its session");
        b.lock(&Holder::me("d2")).await.unwrap();
    });
}

#[test]
fn an_expired_session_is_reported_and_stops_the_store() {
    let z = ZooKeeper::start();
    rt().block_on(async {
        // a reaches ZooKeeper through a link that is then cut for longer than its
        // session timeout (2 s): the server expires the session, and a hears so when
        // the link comes back.
        let link = Partition::start(z.connect.clone()).await;
        let a = zk_with(&link.addr, Duration::from_secs(2)).await;
        link.set(false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        link.set(true);
        let mut lost = false;
        for _ in 0..200 {
            if let Err(CoordError::SessionLost) = a.check_session() {
                lost = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(lost, "the store did not notice its session expired");
        match a.live("api").await {
            Err(CoordError::SessionLost) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.set_staging("api", "h1", "v2")
                .await
                .unwrap_err()
                .to_string(),
            "the coordination session was lost (expired or closed); stopping safely"
        );
    });
}

/// Starts `rookery agent run --detach` for `api` on h1; returns the service's pid.
#[track_caller]
fn supervise(z: &ZooKeeper, release: &Path) -> u32 {
    let stdout = succeed(
        Command::new(BIN)
            .args([
                "agent",
                "run",
                "--detach",
                "--service",
                "api",
                "--host",
                "h1",
            ])
            .args(["--version", "v1", "--release"])
            .arg(release)
            .args(["--health", "test -e up", "--health-interval", "100ms"])
            .args([
                "--zookeeper",
                &z.connect,
                "--zk-root",
                "/rookery/t",
                "--session-timeout",
                "4s",
            ])
            .arg("--log")
            .arg(release.join("supervisor.log"))
            .args(["--", "touch up; exec sleep 600"]),
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v["pid"].as_u64().unwrap() as u32
}

async fn wait_live(store: &ZkStore, n: usize) -> bool {
    for _ in 0..200 {
        if store.live("api").await.unwrap().len() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn a_supervised_instance_is_live_only_while_its_service_and_supervisor_run() {
    let z = ZooKeeper::start();
    let release = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let watcher = zk(&z.connect).await;
        // Registered once healthy; gone when the service exits.
        let svc = supervise(&z, release.path());
        assert_eq!(
            watcher.live("api").await.unwrap(),
            vec![Instance {
                host: "h1".into(),
                version: "v1".into(),
                release: release.path().display().to_string(),
            }]
        );
        // SAFETY: kill(2) on the service we started.
        unsafe { libc::kill(svc as i32, libc::SIGKILL) };
        assert!(
            wait_live(&watcher, 0).await,
            "the entry outlived the service"
        );

        // Gone when the supervisor itself is killed (its session expires).
        std::fs::remove_file(release.path().join("up")).unwrap();
        let svc = supervise(&z, release.path());
        assert!(wait_live(&watcher, 1).await);
        let sup = parent_of(svc);
        unsafe { libc::kill(sup as i32, libc::SIGKILL) };
        assert!(
            wait_live(&watcher, 0).await,
            "the entry outlived the supervisor's session"
        );
        unsafe { libc::kill(svc as i32, libc::SIGKILL) };
    });
}
