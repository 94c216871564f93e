//! Load benchmark for the standalone tracker (issue 19, item 6): one `rookery tracker`
//! process, started from the binary this package builds, serves a generated inventory
//! of 5,000 hosts (3 datacenters x 40 racks, local transport: every host announces
//! from loopback and is told apart by the `host=` parameter) plus the origin, while
//! this process plays all 5,001 agents at their real pace: an announce every 2 s
//! (`Settings::interval`) with a rookery peer id, and a `/status` poll every second
//! (every 200 ms while a stripe's feeder has not announced, as `fetch.rs` does). Each
//! request is an HTTP/1.1 GET on a connection of its own, closed after the answer, like
//! the agents' own client. Agents start in the controller's start order (`start_rank`),
//! spread over the first interval, and report progress through a 1 GiB artifact so
//! that the swarm goes through fetching and complete states.
//!
//! It runs `--sharing pipeline` and then `--sharing stripes`, and prints answers per
//! second, answer times (connect to the last byte of the answer) at p50/p99/max for the
//! start-up (the first two intervals, when announces may be held open on purpose until
//! a predecessor announces) and for the steady state after it, failed requests, how
//! late the client started requests against their schedule, and CPU: the machine's
//! busy share from /proc/stat and the tracker's and the client's own CPU time. The
//! client runs on the same machine and competes with the tracker for its cores.
//!
//! `cargo bench --bench tracker_load` runs the full size (30 s per mode, release
//! build) and reports failures without stopping. `TRACKER_LOAD_HOSTS`,
//! `TRACKER_LOAD_SECS`, `TRACKER_LOAD_CLIENT_THREADS` (default 2) and
//! `TRACKER_LOAD_SHARING` (default `pipeline,stripes`) change it. Under `cargo test
//! --benches` (no `--bench` flag) it runs 60 hosts for 6 s per mode as a smoke test:
//! every answer must be a valid bencoded peer list or JSON status, none may fail, and
//! every host still fetching must have been told a feeder in its last answer.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rookery::config::inventory::Inventory;
use rookery::tracker::announce::percent_encode;
use rookery::tracker::swarm::{Status, Swarm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DCS: usize = 3;
const RACKS: usize = 40;
/// The agents' announce interval (`Settings::interval`, the tracker's default).
const INTERVAL: Duration = Duration::from_secs(2);
/// Status polls while fetching or seeding (`fetch.rs`).
const POLL: Duration = Duration::from_secs(1);
/// Status polls while a stripe's feeder has not announced yet.
const POLL_FAST: Duration = Duration::from_millis(200);
/// The artifact the agents pretend to fetch.
const SIZE: u64 = 1 << 30;
/// Requests slower than this count as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Size {
    hosts: usize,
    run: Duration,
    client_threads: usize,
    /// Fail on any failed request (the smoke run); the full run reports them.
    strict: bool,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `hosts` spread evenly over 3 datacenters x 40 racks (fewer racks, of at least 5
/// hosts, for a small inventory); the number of racks per datacenter.
fn inventory(hosts: usize) -> (String, usize) {
    let per_dc = RACKS.min(hosts / (DCS * 5)).max(1);
    let racks = DCS * per_dc;
    let mut s = String::from("cluster: load\ntransport: {local: {root: hosts}}\ndatacenters:\n");
    let mut n = 0;
    for d in 0..DCS {
        let _ = writeln!(s, "  dc{d}:\n    racks:");
        for r in 0..per_dc {
            let rack = d * per_dc + r;
            let here = hosts / racks + usize::from(rack < hosts % racks);
            let _ = writeln!(s, "      r{r}:\n        hosts:");
            for h in 0..here {
                let _ = writeln!(s, "          dc{d}-r{r}-h{h}: {{}}");
                n += 1;
            }
        }
    }
    assert_eq!(n, hosts);
    (s, per_dc)
}

/// One simulated agent: its member name, start offset and announce port.
#[derive(Clone)]
struct Agent {
    name: String,
    origin: bool,
    /// Place in the start order (0: the origin).
    rank: usize,
    port: u16,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Announce,
    Status,
}

struct Sample {
    kind: Kind,
    /// Since the run began, when the request was sent.
    at: Duration,
    latency: Duration,
    /// How late the request started against its schedule.
    lag: Duration,
    error: Option<String>,
}

/// What one agent saw, for the smoke test's checks.
#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    /// Peers in the last answer to an announce with `left > 0`, after start-up.
    last_incomplete_peers: Option<usize>,
    /// The last status: every stripe had a feeder (striped sharing only).
    last_stripes_full: Option<bool>,
}

struct Shared {
    addr: String,
    info_hash: [u8; 20],
    begun: Instant,
    run: Duration,
    /// Start of the transfer of rank 1; rank `r` starts `r * hop` later.
    transfer_start: Duration,
    hop: Duration,
    transfer: Duration,
    hosts: usize,
}

impl Shared {
    /// Bytes `agent` still lacks at `t` since the run began: ranks start one after
    /// another, each receiving the artifact over `transfer`, so a host is never
    /// ahead of one started before it.
    fn left(&self, agent: &Agent, t: Duration) -> u64 {
        if agent.origin {
            return 0;
        }
        let start = self.transfer_start + self.hop * agent.rank as u32;
        let done = t.saturating_sub(start).as_secs_f64() / self.transfer.as_secs_f64();
        SIZE - (SIZE as f64 * done.min(1.0)) as u64
    }

    /// When `agent` first announces: start ranks spread over the first interval.
    fn offset(&self, agent: &Agent) -> Duration {
        INTERVAL.mul_f64(agent.rank as f64 / (self.hosts + 1) as f64)
    }
}

/// One GET on a connection of its own; the body of a 200 answer.
async fn get(addr: &str, target: &str) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::with_capacity(512);
    s.read_to_end(&mut out)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if !out.starts_with(b"HTTP/1.1 200 ") {
        return Err(format!(
            "not a 200 answer: {}",
            String::from_utf8_lossy(&out[..out.len().min(80)])
        ));
    }
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of head")?;
    Ok(out[at + 4..].to_vec())
}

/// The number of peers in a valid bencoded announce answer.
fn peers(body: &[u8]) -> Result<usize, String> {
    use serde_bencode::value::Value;
    let v: Value = serde_bencode::from_bytes(body).map_err(|e| format!("bencode: {e}"))?;
    let Value::Dict(d) = v else {
        return Err("answer is not a dictionary".into());
    };
    if let Some(Value::Bytes(r)) = d.get(&b"failure reason"[..]) {
        return Err(format!("refused: {}", String::from_utf8_lossy(r)));
    }
    match d.get(&b"interval"[..]) {
        Some(Value::Int(i)) if *i > 0 => {}
        _ => return Err("no interval".into()),
    }
    match d.get(&b"peers"[..]) {
        Some(Value::Bytes(p)) if p.len() % 6 == 0 => Ok(p.len() / 6),
        _ => Err("no compact peer list".into()),
    }
}

async fn announce_loop(sh: Arc<Shared>, agent: Agent) -> Seen {
    let mut seen = Seen::default();
    let peer_id = {
        let mut id = *b"-RK0100-000000000000";
        let digits = format!("{:012}", agent.rank);
        id[8..].copy_from_slice(digits.as_bytes());
        id
    };
    let base = format!(
        "/announce?host={}&info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&compact=1",
        percent_encode(agent.name.as_bytes()),
        percent_encode(&sh.info_hash),
        percent_encode(&peer_id),
        agent.port
    );
    let mut due = sh.offset(&agent);
    let mut first = true;
    while due < sh.run {
        tokio::time::sleep_until((sh.begun + due).into()).await;
        let t = sh.begun.elapsed();
        let left = sh.left(&agent, t);
        let event = if first { "&event=started" } else { "" };
        let target = format!("{base}&left={left}{event}");
        let sent = Instant::now();
        let answer = tokio::time::timeout(TIMEOUT, get(&sh.addr, &target))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let latency = sent.elapsed();
        let error = match answer.and_then(|b| peers(&b)) {
            Ok(n) => {
                if left > 0 && t > INTERVAL * 2 {
                    seen.last_incomplete_peers = Some(n);
                }
                None
            }
            Err(e) => Some(e),
        };
        seen.samples.push(Sample {
            kind: Kind::Announce,
            at: t,
            latency,
            lag: t.saturating_sub(due),
            error,
        });
        first = false;
        due += INTERVAL;
        // An announce held open past its slot: the next one goes at once.
        due = due.max(sh.begun.elapsed());
    }
    seen
}

async fn status_loop(sh: Arc<Shared>, agent: Agent) -> Seen {
    let mut seen = Seen::default();
    let target = format!(
        "/status?info_hash={}&host={}",
        percent_encode(&sh.info_hash),
        percent_encode(agent.name.as_bytes())
    );
    let mut due = sh.offset(&agent);
    while due < sh.run {
        tokio::time::sleep_until((sh.begun + due).into()).await;
        let t = sh.begun.elapsed();
        let sent = Instant::now();
        let answer = tokio::time::timeout(TIMEOUT, get(&sh.addr, &target))
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        let latency = sent.elapsed();
        let mut next = POLL;
        let error = match answer.and_then(|b| {
            serde_json::from_slice::<Status>(&b)
                .map_err(|e| format!("status: {e}: {}", String::from_utf8_lossy(&b)))
        }) {
            Ok(st) => {
                if let Some(stripes) = &st.stripes {
                    let full = stripes.iter().all(Option::is_some);
                    if !full {
                        next = POLL_FAST;
                    }
                    if t > INTERVAL * 2 {
                        seen.last_stripes_full = Some(full);
                    }
                }
                None
            }
            Err(e) => Some(e),
        };
        seen.samples.push(Sample {
            kind: Kind::Status,
            at: t,
            latency,
            lag: t.saturating_sub(due),
            error,
        });
        due = (due + next).max(sh.begun.elapsed());
    }
    seen
}

/// Jiffies of the whole machine: user (with nice), system, interrupts (where much
/// of the kernel's loopback TCP work lands), idle (with iowait), and the total.
fn machine_cpu() -> [u64; 5] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return [0; 5];
    }
    [
        v[0] + v[1],
        v[2],
        v[5] + v[6],
        v[3] + v[4],
        v.iter().take(8).sum(),
    ]
}

/// CPU seconds (user + system) of process `pid` so far.
fn process_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|x| x.parse::<u64>().ok()))
        .sum();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

struct Tracker(Child);

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rookery tracker` on a free loopback port; its address.
fn start_tracker(dir: &Path, sharing: &str) -> (Tracker, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .current_dir(dir)
        .args(["--json", "-i", "inv.yml", "tracker", "--listen"])
        .args([
            "127.0.0.1:0",
            "--torrent",
            "art.torrent",
            "--sharing",
            sharing,
        ])
        .env_remove("ROOKERY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rookery tracker");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("reading the tracker's first line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("tracker said {line:?}: {e}"));
    let url = v["announce"].as_str().expect("announce URL");
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/announce"))
        .expect("http://ADDR/announce")
        .to_string();
    (Tracker(child), addr)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Report {
    answers: usize,
    errors: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn report(samples: &[&Sample], window: Duration) -> Report {
    let mut lat: Vec<Duration> = samples
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.latency)
        .collect();
    lat.sort_unstable();
    Report {
        answers: lat.len(),
        errors: samples.len() - lat.len(),
        per_second: lat.len() as f64 / window.as_secs_f64(),
        p50: quantile(&lat, 0.5),
        p99: quantile(&lat, 0.99),
        max: lat.last().copied().unwrap_or_default(),
    }
}

/// One run against a fresh tracker; panics if any request failed or a fetching host
/// was left without a feeder.
fn run(dir: &Path, inv: &Inventory, sharing: &str, size: &Size) {
    let roster = rookery::tracker::server::roster(
        inv,
        &(0..inv.hosts.len()).collect::<Vec<_>>(),
        Some(std::net::Ipv4Addr::LOCALHOST.into()),
    );
    // The controller starts agents in this order (distribute.rs, `start_rank`).
    let mut swarm = Swarm::new(&roster, Duration::from_secs(7));
    if sharing == "stripes" {
        swarm = swarm
            .with_stripes(&roster, rookery::config::playbook::DEFAULT_STRIPES)
            .expect("trees");
    }
    let mut order: Vec<usize> = roster.order().to_vec();
    order.sort_by_key(|&m| swarm.start_rank(&roster, m));
    let agents: Vec<Agent> = order
        .iter()
        .enumerate()
        .map(|(rank, &m)| Agent {
            name: roster.member(m).name.clone(),
            origin: roster.member(m).origin,
            rank,
            port: 10_000 + rank as u16,
        })
        .collect();

    let (tracker, addr) = start_tracker(dir, sharing);
    let pid = tracker.0.id().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(size.client_threads)
        .enable_all()
        .build()
        .expect("client runtime");
    let n = agents.len();
    let transfer = size.run / 2;
    let sh = Arc::new(Shared {
        addr,
        info_hash: rookery::torrent::metainfo::Metainfo::from_bytes(
            &std::fs::read(dir.join("art.torrent")).expect("metainfo"),
        )
        .expect("metainfo parses")
        .info_hash(),
        // Time to spawn the agents' tasks before the first is due.
        begun: Instant::now() + Duration::from_millis(200),
        run: size.run,
        transfer_start: INTERVAL,
        // The last host starts a third of the way into the run.
        hop: size.run.div_f64(3.0 * n as f64),
        transfer,
        hosts: n,
    });
    let (cpu0, tracker0, client0) = (machine_cpu(), process_cpu(&pid), process_cpu("self"));
    let seen: Vec<Seen> = rt.block_on(async {
        let mut tasks = Vec::with_capacity(2 * n);
        for a in &agents {
            tasks.push(tokio::spawn(announce_loop(sh.clone(), a.clone())));
            tasks.push(tokio::spawn(status_loop(sh.clone(), a.clone())));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.expect("agent task"));
        }
        out
    });
    let elapsed = sh.begun.elapsed();
    let (cpu1, tracker1, client1) = (machine_cpu(), process_cpu(&pid), process_cpu("self"));
    drop(tracker);
    let total = (cpu1[4] - cpu0[4]).max(1) as f64;
    let share = |i: usize| (cpu1[i] - cpu0[i]) as f64 / total * 100.0;

    let all: Vec<&Sample> = seen.iter().flat_map(|s| &s.samples).collect();
    let startup = INTERVAL * 2;
    let steady: Vec<&Sample> = all.iter().copied().filter(|s| s.at >= startup).collect();
    let early: Vec<&Sample> = all.iter().copied().filter(|s| s.at < startup).collect();
    let window = elapsed.saturating_sub(startup);
    println!(
        "\n--sharing {sharing}: {} hosts + origin, {:.0} s, {} client threads on the same cores as the tracker",
        n - 1,
        size.run.as_secs_f64(),
        size.client_threads
    );
    println!(
        "  {:<28} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "", "answers", "errors", "answers/s", "p50 ms", "p99 ms", "max ms"
    );
    let row = |label: &str, r: &Report| {
        println!(
            "  {label:<28} {:>8} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.1}",
            r.answers,
            r.errors,
            r.per_second,
            ms(r.p50),
            ms(r.p99),
            ms(r.max)
        );
    };
    row("start-up (first 4 s), all", &report(&early, startup));
    row("steady (4 s to end), all", &report(&steady, window));
    for (label, kind) in [
        ("  announces", Kind::Announce),
        ("  status polls", Kind::Status),
    ] {
        let part: Vec<&Sample> = steady.iter().copied().filter(|s| s.kind == kind).collect();
        row(label, &report(&part, window));
    }
    let mut lags: Vec<Duration> = steady.iter().map(|s| s.lag).collect();
    lags.sort_unstable();
    println!(
        "  client lateness against schedule (steady): p99 {:.1} ms, max {:.1} ms",
        ms(quantile(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default())
    );
    println!(
        "  CPU: machine {:.0}% busy (user {:.0}%, system {:.0}%, irq {:.0}%); tracker {:.2} s, client {:.2} s of CPU over {:.1} s",
        100.0 - share(3),
        share(0),
        share(1),
        share(2),
        tracker1 - tracker0,
        client1 - client0,
        elapsed.as_secs_f64()
    );

    let mut errors: Vec<&str> = all.iter().filter_map(|s| s.error.as_deref()).collect();
    let starved = seen
        .iter()
        .filter(|s| s.last_incomplete_peers == Some(0))
        .count();
    let partial = seen
        .iter()
        .filter(|s| s.last_stripes_full == Some(false))
        .count();
    if !errors.is_empty() || starved > 0 || partial > 0 {
        errors.sort_unstable();
        let mut kinds: Vec<(usize, &str)> = Vec::new();
        for e in &errors {
            match kinds.last_mut() {
                Some((n, k)) if k == e => *n += 1,
                _ => kinds.push((1, e)),
            }
        }
        println!(
            "  FAILED: {} of {} requests {kinds:?}; {starved} fetching hosts told no feeder; {partial} hosts with a stripe lacking its feeder",
            errors.len(),
            all.len()
        );
    }
    if size.strict {
        assert!(
            errors.is_empty(),
            "requests failed: {:?}",
            &errors[..errors.len().min(5)]
        );
        assert_eq!(starved, 0, "fetching hosts told no feeder");
        assert_eq!(partial, 0, "hosts with a stripe lacking its feeder");
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size {
            hosts: env_or("TRACKER_LOAD_HOSTS", 5_000),
            run: Duration::from_secs(env_or("TRACKER_LOAD_SECS", 30) as u64),
            client_threads: env_or("TRACKER_LOAD_CLIENT_THREADS", 2),
            strict: false,
        }
    } else {
        Size {
            hosts: 60,
            run: Duration::from_secs(6),
            client_threads: 2,
            strict: true,
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (text, racks) = inventory(size.hosts);
    std::fs::write(d.join("inv.yml"), &text).expect("writing inventory");
    std::fs::create_dir_all(d.join("art")).expect("art dir");
    std::fs::write(d.join("art/app.bin"), vec![7u8; 256 << 10]).expect("artifact");
    let status = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .current_dir(d)
        .args(["-q", "torrent", "create", "art", "-o", "art.torrent"])
        .args(["--piece-size", "64KiB"])
        .stdout(Stdio::null())
        .status()
        .expect("running rookery torrent create");
    assert!(status.success(), "rookery torrent create failed");
    let inv = Inventory::from_str("inv.yml", &text, d).expect("valid inventory");
    println!(
        "tracker_load: {} hosts in {DCS} DCs x {racks} racks, announce every {} s, status every {} s",
        size.hosts,
        INTERVAL.as_secs(),
        POLL.as_secs()
    );
    let modes = std::env::var("TRACKER_LOAD_SHARING").unwrap_or_else(|_| "pipeline,stripes".into());
    for sharing in modes.split(',') {
        run(d, &inv, sharing, &size);
    }
    if !full {
        println!("tracker_load smoke run: every answer valid, none failed");
    }
}
