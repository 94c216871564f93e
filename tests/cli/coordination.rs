//! The coordination store against a real ZooKeeper (Debian's `zookeeper` package,
//! started here without systemd) and, for the same scenarios, the local store.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rookery::coordination::local_store::LocalStore;
use rookery::coordination::zookeeper::ZkStore;
use rookery::coordination::{CoordError, Coordinator, Holder, Instance};

/// A standalone ZooKeeper on 127.0.0.1 and a free port, stopped when dropped.
pub struct ZooKeeper {
    child: Child,
    pub connect: String,
    _dir: tempfile::TempDir,
}

/// A port picked free can be taken by another test before the server binds it: the
/// server then exits with "Address already in use" and is started again on another.
const START_TRIES: usize = 3;

impl ZooKeeper {
    pub fn start() -> ZooKeeper {
        let mut last = String::new();
        for _ in 0..START_TRIES {
            match ZooKeeper::try_start() {
                Ok(zk) => return zk,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("ZooKeeper did not start within 30 s:\n{log}"),
            }
        }
        panic!("ZooKeeper found no free port in {START_TRIES} tries:\n{last}");
    }

    fn try_start() -> Result<ZooKeeper, String> {
        let jar = Path::new("/usr/share/java/zookeeper.jar");
        assert!(
            jar.exists(),
            "ZooKeeper is not installed: apt-get install zookeeper (scripts/test installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("zoo.cfg"),
            format!(
                "tickTime=500\nminSessionTimeout=1000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\nmaxClientCnxns=0\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("log4j.properties"),
            "log4j.rootLogger=WARN, C\nlog4j.appender.C=org.apache.log4j.ConsoleAppender\nlog4j.appender.C.layout=org.apache.log4j.PatternLayout\n",
        )
        .unwrap();
        let cp = format!(
            "{}:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar",
            conf.display()
        );
        let log = std::fs::File::create(dir.path().join("zk.log")).unwrap();
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                "-cp",
                &cp,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(conf.join("zoo.cfg"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("java (installed with zookeeper)");
        let mut zk = ZooKeeper {
            child,
            connect: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        // Ready when it answers ruok.
        for _ in 0..300 {
            let addr = zk.connect.parse().unwrap();
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                use std::io::{Read, Write};
                // A server that accepts and then says nothing must not hang the suite.
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = s.write_all(b"ruok");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer == "imok" {
                    return Ok(zk);
                }
            }
            if zk.child.try_wait().is_ok_and(|s| s.is_some()) {
                break; // exited: the log says why
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(std::fs::read_to_string(zk._dir.path().join("zk.log")).unwrap_or_default())
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-server ZooKeeper ensemble on 127.0.0.1, each server its own JVM, stopped
/// when dropped. `freeze` and `thaw` stop and continue one server (SIGSTOP/SIGCONT):
/// a server that is slow or hung, not gone; `kill` and `restart` take one away and
/// bring it back with its data.
pub struct Ensemble {
    servers: Vec<(Option<Child>, u16)>,
    pub connect: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A four-letter command's answer (`ruok`, `srvr`), or "" when the server does not
/// answer within a second.
fn four_letters(port: u16, cmd: &str) -> String {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(cmd.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

impl Ensemble {
    pub fn start() -> Ensemble {
        let mut last = String::new();
        for _ in 0..START_TRIES {
            match Ensemble::try_start() {
                Ok(e) => return e,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("the ensemble did not form within 60 s:\n{log}"),
            }
        }
        panic!("the ensemble found no free ports in {START_TRIES} tries:\n{last}");
    }

    fn try_start() -> Result<Ensemble, String> {
        let jar = Path::new("/usr/share/java/zookeeper.jar");
        assert!(
            jar.exists(),
            "ZooKeeper is not installed: apt-get install zookeeper (scripts/test installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let peers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, election))| {
                format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1)
            })
            .collect();
        for (i, (client, _, _)) in ports.iter().enumerate() {
            let home = dir.path().join(format!("s{}", i + 1));
            let data = home.join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{}\n", i + 1)).unwrap();
            std::fs::write(
                home.join("zoo.cfg"),
                format!(
                    "tickTime=500\ninitLimit=10\nsyncLimit=4\nminSessionTimeout=1000\ndataDir={}\nclientPort={client}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\nmaxClientCnxns=0\n{peers}",
                    data.display()
                ),
            )
            .unwrap();
            std::fs::write(
                home.join("log4j.properties"),
                "log4j.rootLogger=WARN, C\nlog4j.appender.C=org.apache.log4j.ConsoleAppender\nlog4j.appender.C.layout=org.apache.log4j.PatternLayout\n",
            )
            .unwrap();
        }
        let connect = ports
            .iter()
            .map(|(c, _, _)| format!("127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut e = Ensemble {
            servers: ports.iter().map(|(c, _, _)| (None, *c)).collect(),
            connect,
            dir,
        };
        for i in 0..3 {
            e.spawn(i);
        }
        if e.wait_serving() {
            Ok(e)
        } else {
            Err(e.logs())
        }
    }

    fn spawn(&mut self, i: usize) {
        let home = self.dir.path().join(format!("s{}", i + 1));
        let cp = format!(
            "{}:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar",
            home.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("zk.log"))
            .unwrap();
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-cp",
                &cp,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(home.join("zoo.cfg"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("java (installed with zookeeper)");
        self.servers[i].0 = Some(child);
    }

    /// Whether every running server serves (as leader or follower) within 60 s.
    fn wait_serving(&mut self) -> bool {
        for _ in 0..600 {
            if self
                .servers
                .iter()
                .filter(|(c, _)| c.is_some())
                .all(|(_, port)| four_letters(*port, "srvr").contains("Mode: "))
            {
                return true;
            }
            if self.servers.iter_mut().any(|(c, _)| {
                c.as_mut()
                    .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_some()))
            }) {
                return false; // one exited: the logs say why
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("s{i}/zk.log")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The server (index) that process `pid` has its ZooKeeper connection to.
    pub fn server_of(&self, pid: u32) -> Option<usize> {
        let out = Command::new("ss").args(["-tnpH"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let me = format!("pid={pid},");
        text.lines().filter(|l| l.contains(&me)).find_map(|l| {
            let peer = l.split_whitespace().nth(4)?;
            let port: u16 = peer.rsplit(':').next()?.parse().ok()?;
            self.servers.iter().position(|(_, p)| *p == port)
        })
    }

    fn signal(&self, server: usize, sig: &str) {
        let pid = self.servers[server]
            .0
            .as_ref()
            .expect("a running server")
            .id()
            .to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// Stops server `i` (SIGSTOP): connected clients hear nothing from it.
    pub fn freeze(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    pub fn thaw(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    /// Kills server `i` (SIGKILL): gone, as a crashed machine.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts server `i` again with its data, and waits until the ensemble serves.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        assert!(
            self.wait_serving(),
            "the ensemble did not serve again within 60 s:\n{}",
            self.logs()
        );
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for (child, _) in &mut self.servers {
            if let Some(child) = child {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn inst(host: &str, v: &str) -> Instance {
    Instance {
        host: host.into(),
        version: v.into(),
        release: format!("/srv/app/releases/{v}"),
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
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

/// A TCP forwarder to ZooKeeper that can be cut, like a network partition.
pub struct Partition {
    pub addr: String,
    up: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    pub async fn start(target: String) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (up, rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*rx.borrow() {
                    continue; // dropped: the connection is refused while cut
                }
                let target = target.clone();
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Partition { addr, up }
    }

    pub fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
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

const BIN: &str = env!("CARGO_BIN_EXE_rookery");

/// Starts `rookery agent run --detach` for `api` on h1; returns the service's pid.
fn supervise(z: &ZooKeeper, release: &Path) -> u32 {
    let out = Command::new(BIN)
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
        .args(["--", "touch up; exec sleep 600"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v["pid"].as_u64().unwrap() as u32
}

fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
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
        let sup = ppid(svc);
        unsafe { libc::kill(sup as i32, libc::SIGKILL) };
        assert!(
            wait_live(&watcher, 0).await,
            "the entry outlived the supervisor's session"
        );
        unsafe { libc::kill(svc as i32, libc::SIGKILL) };
    });
}
