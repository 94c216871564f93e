//! ZooKeeper on loopback for the tests: Debian's `zookeeper` package started here
//! without systemd, one JVM per server in a directory of its own. [`ZooKeeper`] is one
//! standalone server, [`Ensemble`] three that can be frozen, killed and brought back;
//! [`Partition`] is a link to either that can be cut, like a network partition.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::free_port;

/// A port picked free can be taken by another test before the server binds it: the
/// server then exits with "Address already in use" and is started again on another.
const START_TRIES: usize = 3;

const JAR: &str = "/usr/share/java/zookeeper.jar";

/// Besides the configuration directory (for log4j.properties): the server and its
/// log binding.
const CLASSPATH: &str =
    "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";

/// A standalone ZooKeeper on 127.0.0.1 and a free port, stopped when dropped.
pub struct ZooKeeper {
    pub connect: String,
    _server: Ensemble,
}

impl ZooKeeper {
    pub fn start() -> ZooKeeper {
        let server = Ensemble::of(1);
        ZooKeeper {
            connect: server.connect.clone(),
            _server: server,
        }
    }
}

/// ZooKeeper servers on 127.0.0.1 (three, or one alone), each its own JVM, stopped
/// when dropped. `freeze` and `thaw` stop and continue one server (SIGSTOP/SIGCONT):
/// a server that is slow or hung, not gone; `kill` and `restart` take one away and
/// bring it back with its data.
pub struct Ensemble {
    servers: Vec<(Option<Child>, u16)>,
    pub connect: String,
    dir: tempfile::TempDir,
}

/// A four-letter command's answer (`ruok`, `srvr`), or "" when the server does not
/// answer within a second.
fn four_letters(port: u16, cmd: &str) -> String {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return String::new();
    };
    // A server that accepts and then says nothing must not hang the suite.
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(cmd.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

impl Ensemble {
    /// Three servers.
    pub fn start() -> Ensemble {
        Ensemble::of(3)
    }

    /// `n` servers: an ensemble from two up, one alone (no peers) standalone.
    fn of(n: usize) -> Ensemble {
        let mut last = String::new();
        for _ in 0..START_TRIES {
            match Ensemble::try_start(n) {
                Ok(e) => return e,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("ZooKeeper ({n} server(s)) did not serve within 120 s:\n{log}"),
            }
        }
        panic!("ZooKeeper ({n} server(s)) found no free ports in {START_TRIES} tries:\n{last}");
    }

    fn try_start(n: usize) -> Result<Ensemble, String> {
        assert!(
            Path::new(JAR).exists(),
            "ZooKeeper is not installed: apt-get install zookeeper (scripts/test installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let peers: String = if n == 1 {
            String::new()
        } else {
            ports
                .iter()
                .enumerate()
                .map(|(i, (_, peer, election))| {
                    format!("server.{}=127.0.0.1:{peer}:{election}\n", i + 1)
                })
                .collect()
        };
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
        for i in 0..n {
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("zk.log"))
            .unwrap();
        // One server alone has the heap the standalone fixture always had.
        let heap = if self.servers.len() == 1 {
            "-Xmx256m"
        } else {
            "-Xmx128m"
        };
        let child = Command::new("java")
            .args([heap, "-cp", &format!("{}:{CLASSPATH}", home.display())])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(home.join("zoo.cfg"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("java (installed with zookeeper)");
        self.servers[i].0 = Some(child);
    }

    /// Whether every running server serves (standalone, as leader or as follower)
    /// within 120 s. A server left without a quorum backs off between election rounds,
    /// up to 60 s apart (FastLeaderElection's maxNotificationInterval), so the
    /// ensemble may take up to a minute to answer a restarted peer: a bound of 60 s
    /// failed once in CI (2026-12-07) with the servers still electing.
    fn wait_serving(&mut self) -> bool {
        for _ in 0..1200 {
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
        (1..=self.servers.len())
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
            "the ensemble did not serve again within 120 s:\n{}",
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
