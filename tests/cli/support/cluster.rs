//! The one test cluster: hosts that are directories on this machine (the local
//! transport) or one real sshd per host on its own loopback address (the SSH
//! transport, started by `scripts/loopback-cluster`), coordinated through the local
//! store or ZooKeeper; and the [`Run`] of a `rookery` command against it.
//!
//! ```ignore
//! let c = Cluster::local(DATACENTERS).store(Store::ZooKeeper).start();
//! let c = Cluster::ssh(4, "127.0.41").start();
//! let r = c.run(&["--json", "deploy", "pb.yml"]).ok();
//! ```
//!
//! Dropping a cluster stops what its deploys left running (supervisors and
//! services), prints the hosts' agent logs when the test failed, then stops its sshd
//! and ZooKeeper.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rookery::coordination::store::Location;

use super::process::{BIN, kill_all, running, wait_until};
use super::test::repo;
use super::zookeeper::ZooKeeper;

/// The port of every sshd of an SSH cluster (each host has its own address).
const SSH_PORT: &str = "2222";

/// What a cluster's deploys leave running, by how their command lines begin; each
/// names the cluster's directory further on (a supervisor its destination, rollout.rs's
/// `demo-service` its state, ssh.rs's `serve` loop an argument), which is how a
/// cluster tells its own from other tests'.
const LEFT_RUNNING: [&str; 3] = ["agent run", "demo-service serve", "bin/serve"];

/// Where the cluster's coordination store is.
pub enum Store {
    /// The local store, `coord/` in the cluster's directory. Local transport only:
    /// rookery refuses it over SSH.
    Local,
    /// A standalone ZooKeeper of the cluster's own, started and stopped with it. Over
    /// SSH, the one `scripts/loopback-cluster --zookeeper` starts.
    ZooKeeper,
    /// ZooKeeper servers the test runs itself (an ensemble, a link it can cut), by
    /// their connect string. Local transport only.
    ZooKeeperAt(String),
}

enum Transport {
    /// Hosts in `hosts/`, and the inventory's `datacenters:` block.
    Local { datacenters: String },
    /// `hosts` sshd on `net.2`, `net.3`, ... (`net`: the first three octets).
    Ssh { hosts: usize, net: String },
}

/// What a [`Cluster`] will be; `start` makes it.
#[must_use = "a cluster is made by `.start()`"]
pub struct Builder {
    transport: Transport,
    store: Store,
}

impl Builder {
    /// The coordination store (the local store unless told, ZooKeeper over SSH).
    pub fn store(mut self, store: Store) -> Builder {
        self.store = store;
        self
    }

    #[track_caller]
    pub fn start(self) -> Cluster {
        match self.transport {
            Transport::Local { datacenters } => local(&datacenters, self.store),
            Transport::Ssh { hosts, net } => {
                assert!(
                    matches!(self.store, Store::ZooKeeper),
                    "an SSH cluster's store is the ZooKeeper scripts/loopback-cluster starts"
                );
                ssh(hosts, &net)
            }
        }
    }
}

/// A cluster of test hosts, stopped when dropped. See the module's documentation.
pub struct Cluster {
    dir: tempfile::TempDir,
    inventory: PathBuf,
    location: Location,
    /// The first three octets of the hosts' addresses on the SSH transport.
    net: Option<String>,
    _zookeeper: Option<ZooKeeper>,
}

/// An inventory `inv.yml` of cluster `t` on the local transport (hosts under
/// `hosts/`), and its store.
fn local(datacenters: &str, store: Store) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut zookeeper = None;
    let connect = match store {
        Store::Local => None,
        Store::ZooKeeper => {
            let z = ZooKeeper::start();
            let connect = z.connect.clone();
            zookeeper = Some(z);
            Some(connect)
        }
        Store::ZooKeeperAt(connect) => Some(connect),
    };
    let (coordination, location) = match connect {
        None => (
            "  local: {dir: coord}\n".to_string(),
            Location::Local {
                dir: dir.path().join("coord"),
            },
        ),
        Some(connect) => {
            // Each cluster its own root, so that clusters can share a server.
            let root = format!(
                "/rookery/{}",
                dir.path().file_name().unwrap().to_string_lossy()
            );
            (
                format!(
                    "  zookeeper: {{connect: \"{connect}\", root: \"{root}\", session_timeout: 5s}}\n"
                ),
                Location::ZooKeeper {
                    connect,
                    root,
                    session_timeout: Duration::from_secs(5),
                },
            )
        }
    };
    let inventory = dir.path().join("inv.yml");
    std::fs::write(
        &inventory,
        format!(
            "cluster: t\ntransport:\n  local: {{root: hosts}}\ncoordination:\n{coordination}datacenters:\n{datacenters}"
        ),
    )
    .unwrap();
    Cluster {
        dir,
        inventory,
        location,
        net: None,
        _zookeeper: zookeeper,
    }
}

/// `scripts/loopback-cluster up`: `hosts` sshd, ZooKeeper, and an inventory of them,
/// `inventory.yml` of cluster `loopback`.
#[track_caller]
fn ssh(hosts: usize, net: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(repo().join("scripts/loopback-cluster"))
        .args(["up", &hosts.to_string(), "--net", net, "--port", SSH_PORT])
        // A real ZooKeeper too: distribute records staged versions in it.
        .args(["--zookeeper", "--dir"])
        .arg(dir.path())
        .output()
        .expect("running scripts/loopback-cluster (needs Debian's openssh-server: apt-get install openssh-server)");
    if !out.status.success() {
        loopback_down(dir.path());
        panic!(
            "scripts/loopback-cluster up failed (is openssh-server installed? scripts/test installs it):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What the script started, as `name=value` lines.
    let state = std::fs::read_to_string(dir.path().join("cluster.env")).unwrap();
    let zk_port = state
        .lines()
        .find_map(|l| l.strip_prefix("zk_port="))
        .expect("the ZooKeeper port in cluster.env");
    Cluster {
        inventory: dir.path().join("inventory.yml"),
        location: Location::ZooKeeper {
            connect: format!("127.0.0.1:{zk_port}"),
            root: "/rookery/loopback".into(),
            session_timeout: Duration::from_secs(10),
        },
        dir,
        net: Some(net.to_string()),
        _zookeeper: None,
    }
}

fn loopback_down(dir: &Path) {
    let _ = Command::new(repo().join("scripts/loopback-cluster"))
        .args(["down", "--dir"])
        .arg(dir)
        .output();
}

impl Cluster {
    /// Hosts that are directories, `hosts/<host>`, in the inventory's `datacenters`
    /// (the YAML block under `datacenters:`, indented).
    pub fn local(datacenters: &str) -> Builder {
        Builder {
            transport: Transport::Local {
                datacenters: datacenters.to_string(),
            },
            store: Store::Local,
        }
    }

    /// `hosts` hosts h1, h2, ..., each a real sshd on `net.2`, `net.3`, ... (`net`: the
    /// first three octets, its own for each test so that tests run side by side).
    /// The inventory is the script's: datacenters east and west, `store` and `api` on
    /// every host, `web` on the even ones.
    pub fn ssh(hosts: usize, net: &str) -> Builder {
        Builder {
            transport: Transport::Ssh {
                hosts,
                net: net.to_string(),
            },
            store: Store::ZooKeeper,
        }
    }

    /// The cluster's directory: the inventory, and the hosts in `hosts/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` in the cluster's directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn inventory(&self) -> &Path {
        &self.inventory
    }

    /// What `/` is to rookery on `host`.
    pub fn root(&self, host: &str) -> PathBuf {
        let dir = self.dir.path().join("hosts").join(host);
        if self.net.is_some() {
            dir.join("root")
        } else {
            dir
        }
    }

    /// The coordination store, for reading it beside rookery.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// `rookery -i INVENTORY ARGS` in the cluster's directory, not yet run. Over SSH
    /// no operator's ssh config, agent or log setting leaks in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("-i")
            .arg(&self.inventory)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ROOKERY_INVENTORY");
        if self.net.is_some() {
            cmd.env("HOME", self.dir.path())
                .env_remove("SSH_AUTH_SOCK")
                .env_remove("ROOKERY_LOG");
        }
        cmd
    }

    /// Runs `rookery -i INVENTORY ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap(), args)
    }

    /// Starts `rookery -i INVENTORY ARGS`, its stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `host` goes down: its supervisors die, and with them its live entries. Returns
    /// once they are gone (a supervisor stopping its service is still running).
    #[track_caller]
    pub fn host_down(&self, host: &str) {
        let pattern = format!("agent run.*{}/", self.root(host).display());
        kill_all(&pattern);
        wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || !running(&pattern),
            || format!("{host}'s supervisors did not stop"),
        );
    }

    /// The pid of `host`'s sshd, from the file the script left.
    pub fn sshd_pid(&self, host: &str) -> i32 {
        let pid = std::fs::read_to_string(self.path(&format!("hosts/{host}/sshd.pid"))).unwrap();
        pid.trim().parse().unwrap()
    }

    /// Stops `host`'s sshd: the host becomes unreachable. Returns once its port is
    /// closed.
    #[track_caller]
    pub fn stop_sshd(&self, host: &str) {
        let net = self.net.as_ref().expect("an SSH cluster");
        let pid = self.sshd_pid(host);
        // SAFETY: kill(2) on a pid the script started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let k: usize = host.trim_start_matches('h').parse().unwrap();
        let addr = format!("{net}.{}:{SSH_PORT}", k + 1);
        wait_until(
            Duration::from_secs(5),
            Duration::from_millis(25),
            || std::net::TcpStream::connect(&addr).is_err(),
            || format!("sshd of {host} did not stop"),
        );
    }

    /// What the hosts' supervisors and agents said, the last lines of each log: the
    /// first thing to read when a test fails on a busy machine.
    fn print_host_logs(&self) {
        let mut hosts: Vec<String> = std::fs::read_dir(self.path("hosts"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        hosts.sort();
        for h in hosts {
            let dir = self.root(&h).join("srv/app/.rookery");
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(20).collect();
                    eprintln!("--- {}", path.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let dir = self.dir.path().display().to_string();
        for program in LEFT_RUNNING {
            kill_all(&format!("{program}.*{dir}"));
        }
        if std::thread::panicking() {
            self.print_host_logs();
        }
        if self.net.is_some() {
            loopback_down(self.dir.path());
        }
    }
}

/// A finished `rookery` command: its exit code and what it printed, stdout also as
/// JSON (`Null` when it is not).
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: serde_json::Value,
}

impl Run {
    /// The run of `rookery ARGS` that printed `out`; says on stderr how it ended.
    pub fn from(out: Output, args: &[&str]) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!("rookery {}: exit {}\n{}", args.join(" "), r.code, r.stderr);
        r
    }

    /// Asserts exit 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{}\n{}", self.stdout, self.stderr);
        self
    }

    /// The JSON report on stdout, which must be there.
    #[track_caller]
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// The version a `deploy --json` distributed.
    #[track_caller]
    pub fn version(&self) -> String {
        self.report()["distribution"]["version"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The rollout record of a `deploy --json`.
    #[track_caller]
    pub fn record(&self) -> serde_json::Value {
        self.report()["rollout"].clone()
    }

    /// Where `service` stands on each host in a `deploy --json`'s record: host ->
    /// state.
    #[track_caller]
    pub fn states(&self, service: &str) -> BTreeMap<String, String> {
        assert!(
            self.json["rollout"].is_object(),
            "no rollout in the report: {}\n{}",
            self.stderr,
            self.json
        );
        host_states(&self.json["rollout"], service)
    }
}

/// Where `service` stands on each host in a rollout record: host -> state.
#[track_caller]
pub fn host_states(record: &serde_json::Value, service: &str) -> BTreeMap<String, String> {
    record["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in the record: {record}"))
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("{service} missing: {record}"))["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_string(),
                h["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A runtime for talking to the store beside rookery (two threads: the machine is
/// shared).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
