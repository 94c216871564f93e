//! The tracker server: HTTP/1.1 over TCP, one request per connection.
//!
//! It answers announces only for the info hashes of the running deploy and only to
//! members of the [`Roster`] (others get a bencoded `failure reason`), and serves
//! `/status` for agents deciding how long to keep seeding. The policy lives in
//! `swarm.rs` and the wire format in `announce.rs`; this file owns sockets, limits
//! and shared state. A hand-rolled server keeps the request parser small enough to
//! property-test and avoids an HTTP framework for a single GET.
//!
//! One answer is not immediate: a pipeline member told to wait for a predecessor
//! that has not announced yet (start-up) would otherwise come back only a whole
//! `interval` later, by which time a tiny artifact has long passed its feeder (whose
//! seeder may even be gone). Such an announce is held open until that predecessor
//! announces, for at most one interval, and then answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::playbook::Sharing;
use crate::torrent::engine::PEER_ID_PREFIX;
use crate::tracker::announce::{self, Request};
use crate::tracker::roster::Roster;
use crate::tracker::swarm::{Seen, Swarm};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// A client that has not sent its request head by then is dropped.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Announces held open at once (waiting for a predecessor); beyond this they are
/// answered at once, so held ones never take every connection slot.
const MAX_HELD: usize = MAX_CONNECTIONS / 2;

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub sharing: Sharing,
    /// Re-announce interval told to clients. Short, because the pipeline reroutes
    /// around a dead feeder at the next announce.
    pub interval: Duration,
    /// Stripes of [`Sharing::Stripes`].
    pub stripes: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            sharing: Sharing::Pipeline,
            interval: Duration::from_secs(2),
            stripes: crate::config::playbook::DEFAULT_STRIPES,
        }
    }
}

/// Shared tracker state; cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    roster: Roster,
    settings: Settings,
    swarms: Mutex<HashMap<[u8; 20], Swarm>>,
    /// One per member, woken whenever that member announces.
    announced: Vec<Notify>,
    held: Arc<Semaphore>,
}

/// An announce answered "wait for `awaiting`", which may be held open.
struct Hold {
    info_hash: [u8; 20],
    awaiting: usize,
    /// The end of the start-up grace, when the answer changes anyway.
    until: Instant,
}

impl Tracker {
    /// Fails only for striped sharing whose trees cannot be built (a stripe count out
    /// of range, a roster without an origin).
    pub fn new(
        roster: Roster,
        info_hashes: &[[u8; 20]],
        settings: Settings,
    ) -> Result<Tracker, crate::tracker::stripes::StripeError> {
        // Three missed announces and a member is gone.
        let expiry = settings.interval * 3 + Duration::from_secs(1);
        // One missed announce and a feeder may be gone: its successor also gets the
        // next predecessor.
        let overdue = settings.interval * 3 / 2;
        // `auto` is the controller's to resolve before a tracker starts
        // (`plan::estimate::choose`); one that comes this far runs the chain.
        let settings = Settings {
            sharing: match settings.sharing {
                Sharing::Auto => Sharing::Pipeline,
                other => other,
            },
            ..settings
        };
        let mut swarms = HashMap::new();
        for h in info_hashes {
            let mut swarm = Swarm::new(&roster, expiry).with_overdue(overdue);
            if settings.sharing == Sharing::Stripes {
                swarm = swarm.with_stripes(&roster, settings.stripes)?;
            }
            swarms.insert(*h, swarm);
        }
        let announced = roster.members().iter().map(|_| Notify::new()).collect();
        Ok(Tracker {
            inner: Arc::new(Inner {
                roster,
                settings,
                swarms: Mutex::new(swarms),
                announced,
                held: Arc::new(Semaphore::new(MAX_HELD)),
            }),
        })
    }

    pub fn roster(&self) -> &Roster {
        &self.inner.roster
    }

    /// Serves until `cancel` fires.
    pub async fn serve(&self, listener: TcpListener, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => return,
                p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    // Out of descriptors and the like: keep serving the others.
                    Err(_) => continue,
                },
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.connection(stream, peer).await;
                drop(permit);
            });
        }
    }

    async fn connection(&self, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => {
                let body = announce::encode_failure("request head too large");
                return respond(&mut stream, "text/plain", &body).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let started = Instant::now();
        let mut permit = None;
        loop {
            let now = Instant::now();
            let (kind, body, hold) = self.answer_or_hold(&head, peer, now);
            let Some(hold) = hold else {
                return respond(&mut stream, kind, &body).await;
            };
            let deadline = hold.until.min(started + self.inner.settings.interval);
            if deadline <= now {
                return respond(&mut stream, kind, &body).await;
            }
            if permit.is_none() {
                match self.inner.held.clone().try_acquire_owned() {
                    Ok(p) => permit = Some(p),
                    Err(_) => return respond(&mut stream, kind, &body).await,
                }
            }
            // Registered before the check, so an announce in between is not missed.
            let notified = self.inner.announced[hold.awaiting].notified();
            if !self.has_announced(&hold.info_hash, hold.awaiting) {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
            // Answer again (this records the announce again: the member is alive).
        }
    }

    /// The order to start hosts in, earliest first, so that feeders come up before
    /// those they feed (a member's depth in its shallowest stripe, or its position in
    /// the chain). Unknown names go last.
    pub fn start_rank(&self, name: &str) -> usize {
        let Some(me) = self.inner.roster.by_name(name) else {
            return usize::MAX;
        };
        let swarms = self.inner.swarms.lock().expect("tracker lock poisoned");
        swarms
            .values()
            .next()
            .map_or(usize::MAX, |s| s.start_rank(&self.inner.roster, me))
    }

    /// The controller is starting `name`'s agent: it is waited for until
    /// [`Tracker::launched`], whatever the start-up grace (see [`Swarm::launching`]).
    pub fn launching(&self, name: &str) {
        self.each_swarm(name, |s, me, _| s.launching(me));
    }

    /// `name`'s agent runs (`ended`: false), or its command is over (`ended`: true).
    pub fn launched(&self, name: &str, ended: bool) {
        self.each_swarm(name, |s, me, now| s.launched(me, ended, now));
    }

    /// Applies `f` to member `name` in every swarm; its id, or `None` for an unknown
    /// name (ignored).
    fn each_swarm(&self, name: &str, f: impl Fn(&mut Swarm, usize, Instant)) -> Option<usize> {
        let me = self.inner.roster.by_name(name)?;
        let now = Instant::now();
        let mut swarms = self.inner.swarms.lock().expect("tracker lock poisoned");
        for swarm in swarms.values_mut() {
            f(swarm, me, now);
        }
        Some(me)
    }

    /// Member `name` will not take part in any swarm of this deploy (the controller
    /// could not start its agent): successors waiting for its first announce are
    /// answered now. Unknown names are ignored.
    pub fn withdraw(&self, name: &str) {
        if let Some(me) = self.each_swarm(name, |s, me, now| s.withdraw(me, now)) {
            self.inner.announced[me].notify_waiters();
        }
    }

    fn has_announced(&self, info_hash: &[u8; 20], member: usize) -> bool {
        let swarms = self.inner.swarms.lock().expect("tracker lock poisoned");
        swarms
            .get(info_hash)
            .is_some_and(|s| s.has_announced(member))
    }

    /// The response (content type, body) to one request head from `peer`.
    pub fn answer(&self, head: &[u8], peer: SocketAddr, now: Instant) -> (&'static str, Vec<u8>) {
        let (kind, body, _) = self.answer_or_hold(head, peer, now);
        (kind, body)
    }

    /// [`Tracker::answer`], and whether it is a start-up wait that may be held open.
    fn answer_or_hold(
        &self,
        head: &[u8],
        peer: SocketAddr,
        now: Instant,
    ) -> (&'static str, Vec<u8>, Option<Hold>) {
        const BENCODE: &str = "text/plain";
        let fail = |reason: String| (BENCODE, announce::encode_failure(&reason), None);
        let request = match announce::parse_request(head) {
            Ok(r) => r,
            Err(reason) => return fail(reason.0),
        };
        let roster = &self.inner.roster;
        let mut swarms = self.inner.swarms.lock().expect("tracker lock poisoned");
        match request {
            Request::Announce(a) => {
                let me = match roster.identify(peer.ip(), a.host.as_deref()) {
                    Ok(id) => id,
                    Err(reason) => return fail(reason.0),
                };
                let Some(swarm) = swarms.get_mut(&a.info_hash) else {
                    return fail(format!(
                        "info_hash {} is not part of the running deploy",
                        crate::torrent::metainfo::hex(&a.info_hash)
                    ));
                };
                let ip = roster.member(me).ip.unwrap_or(peer.ip());
                let seen = Seen {
                    addr: SocketAddr::new(ip, a.port),
                    left: a.left,
                    rookery: a.peer_id.starts_with(PEER_ID_PREFIX),
                    stopped: a.event == announce::Event::Stopped,
                };
                let settings = self.inner.settings;
                let peers =
                    swarm.announce(roster, settings.sharing, me, seen, a.numwant as usize, now);
                self.inner.announced[me].notify_waiters();
                let hold = swarm.waiting_for(me).map(|(awaiting, until)| Hold {
                    info_hash: a.info_hash,
                    awaiting,
                    until,
                });
                tracing::debug!(
                    host = roster.member(me).name,
                    left = a.left,
                    ?peers,
                    waiting_for = ?hold.as_ref().map(|h| &roster.member(h.awaiting).name),
                    "announce"
                );
                let (complete, incomplete) = swarm.counts(now);
                let interval = settings.interval.as_secs().max(1) as u32;
                let body =
                    announce::encode_peers(&peers, a.compact, complete, incomplete, interval);
                (BENCODE, body, hold)
            }
            Request::Status {
                info_hash,
                host,
                lost,
            } => {
                let me = match roster.identify(peer.ip(), Some(&host)) {
                    Ok(id) => id,
                    Err(reason) => return fail(reason.0),
                };
                let Some(swarm) = swarms.get_mut(&info_hash) else {
                    return fail("unknown info_hash".into());
                };
                let status = swarm.poll(roster, self.inner.settings.sharing, me, &lost, now);
                let body = serde_json::to_vec(&status).expect("status serializes");
                ("application/json", body, None)
            }
        }
    }
}

/// Everyone who may join a deploy's swarm: the origin (the controller at
/// `controller_ip`, or its inventory host) and `hosts`. Local hosts all live on
/// loopback and are told apart by the `host=` parameter of their announce URL.
pub fn roster(
    inv: &crate::config::inventory::Inventory,
    hosts: &[usize],
    controller_ip: Option<std::net::IpAddr>,
) -> Roster {
    use crate::config::inventory::{Origin, Transport};
    use crate::tracker::roster::Member;
    let member = |h: usize, origin: bool| {
        let host = &inv.hosts[h];
        Member {
            name: host.name.clone(),
            dc: inv.datacenters[host.dc].name.clone(),
            rack: inv.racks[host.rack].name.clone(),
            ip: match inv.transport {
                Transport::Local { .. } => Some(std::net::Ipv4Addr::LOCALHOST.into()),
                Transport::Ssh(_) => host.address.parse().ok(),
            },
            origin,
        }
    };
    let mut members = Vec::new();
    match inv.origin {
        Origin::Controller => members.push(Member {
            name: CONTROLLER.into(),
            dc: String::new(),
            rack: String::new(),
            ip: controller_ip,
            origin: true,
        }),
        Origin::Host(h) => members.push(Member {
            name: origin_name(&inv.hosts[h].name),
            ..member(h, true)
        }),
    }
    for &h in hosts {
        members.push(member(h, false));
    }
    Roster::new(members)
}

/// The origin's member name when the controller is the origin.
pub const CONTROLLER: &str = "controller";

/// The swarm name of the origin seeder on inventory host `host`: apart from the
/// host's own agent, which may fetch the release on the same machine. (`:` cannot
/// occur in inventory names.)
pub fn origin_name(host: &str) -> String {
    format!("origin:{host}")
}

/// Reads up to the blank line ending the head; `None` if it exceeds the limit.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > announce::MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn respond(stream: &mut TcpStream, kind: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::client::{announce_stopped, status};
    use crate::tracker::roster::Member;

    fn tracker() -> Tracker {
        let member = |name: &str, ip: &str, origin: bool| Member {
            name: name.into(),
            dc: "dc".into(),
            rack: "r".into(),
            ip: Some(ip.parse().unwrap()),
            origin,
        };
        let roster = Roster::new(vec![
            member("origin", "10.0.0.1", true),
            member("a", "10.0.0.2", false),
        ]);
        Tracker::new(roster, &[[7; 20]], Settings::default()).unwrap()
    }

    fn get(t: &Tracker, from: &str, target: &str) -> Vec<u8> {
        let head = format!("GET {target} HTTP/1.1\r\n\r\n");
        t.answer(head.as_bytes(), from.parse().unwrap(), Instant::now())
            .1
    }

    fn announce(hash: u8, extra: &str) -> String {
        format!(
            "/announce?info_hash={}&peer_id=-RK0100-000000000000&port=7000&uploaded=0&downloaded=0&left=0{extra}",
            announce::percent_encode(&[hash; 20])
        )
    }

    #[test]
    fn refuses_strangers_and_foreign_swarms() {
        let t = tracker();
        let body = get(&t, "192.0.2.9:5000", &announce(7, ""));
        assert_eq!(
            body,
            b"d14:failure reason41:address 192.0.2.9 is not in the inventorye"
        );
        let body = String::from_utf8(get(&t, "10.0.0.2:5000", &announce(8, ""))).unwrap();
        assert!(body.contains("is not part of the running deploy"), "{body}");
    }

    /// Sends one announce for `host` to the tracker at `addr`; the answer's body.
    async fn announce_to(addr: SocketAddr, host: &str, port: u16) -> Vec<u8> {
        let target = announce(7, &format!("&host={host}"))
            .replace("port=7000", &format!("port={port}"))
            .replace("left=0", if host == "origin" { "left=0" } else { "left=5" });
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    }

    /// A tracker on loopback for the chain origin -> a -> b (all at 127.0.0.1), serving
    /// until the returned token is cancelled.
    async fn serve_origin_a_b() -> (std::net::SocketAddr, CancellationToken, Tracker) {
        let member = |name: &str, origin: bool| Member {
            name: name.into(),
            dc: "dc".into(),
            rack: "r".into(),
            ip: Some("127.0.0.1".parse().unwrap()),
            origin,
        };
        let roster = Roster::new(vec![
            member("origin", true),
            member("a", false),
            member("b", false),
        ]);
        let t = Tracker::new(roster, &[[7; 20]], Settings::default()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn({
            let (t, c) = (t.clone(), cancel.clone());
            async move { t.serve(listener, c).await }
        });
        (addr, cancel, t)
    }

    #[tokio::test]
    async fn a_start_up_wait_is_held_until_the_predecessor_announces() {
        let (addr, cancel, _) = serve_origin_a_b().await;
        let begun = Instant::now();
        let b = tokio::spawn(announce_to(addr, "b", 7002));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.is_finished(), "b waits for a instead of an empty answer");
        // a announces (and itself waits for the origin): b is told about a
        // (127.0.0.1:7001) at once, well within the interval it would have slept.
        let a = tokio::spawn(announce_to(addr, "a", 7001));
        let body = b.await.unwrap();
        assert!(
            body.ends_with(b"5:peers6:\x7f\x00\x00\x01\x1b\x59e"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(begun.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!a.is_finished(), "a waits for the origin");
        // Complete, nobody to wait for: the origin is answered at once, and a is
        // told about it (127.0.0.1:7000).
        let begun = Instant::now();
        announce_to(addr, "origin", 7000).await;
        let body = a.await.unwrap();
        assert!(
            body.ends_with(b"5:peers6:\x7f\x00\x00\x01\x1b\x58e"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert!(begun.elapsed() < Duration::from_millis(500));
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_held_announce_is_answered_when_its_predecessor_is_withdrawn() {
        let (addr, cancel, tracker) = serve_origin_a_b().await;
        announce_to(addr, "origin", 7000).await;
        let b = tokio::spawn(announce_to(addr, "b", 7002));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b.is_finished(), "b waits for a");
        // a's agent could not be started: b is sent to the origin at once.
        tracker.withdraw("a");
        let body = tokio::time::timeout(Duration::from_secs(1), b)
            .await
            .expect("answered before the interval")
            .unwrap();
        assert!(
            body.ends_with(b"5:peers6:\x7f\x00\x00\x01\x1b\x58e"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_member_that_announces_stopped_is_no_longer_a_feeder() {
        let (addr, cancel, _) = serve_origin_a_b().await;
        announce_to(addr, "origin", 7000).await;
        announce_to(addr, "a", 7001).await;
        let to_a = b"5:peers6:\x7f\x00\x00\x01\x1b\x59e";
        assert!(announce_to(addr, "b", 7002).await.ends_with(to_a));
        // a's seed window ends: b is moved onto the origin at its next announce.
        let url = format!("http://{addr}/announce?host=a");
        announce_stopped(&url, &[7; 20], 7001).await.unwrap();
        let to_origin = b"5:peers6:\x7f\x00\x00\x01\x1b\x58e";
        assert!(announce_to(addr, "b", 7002).await.ends_with(to_origin));
        let st = status(&url, &[7; 20], "origin", &[]).await.unwrap();
        assert_eq!(st.waiting_on_me, 1, "{st:?}");
        // Strangers are refused, with the tracker's reason.
        let url = format!("http://{addr}/announce?host=nope");
        let e = announce_stopped(&url, &[7; 20], 7001).await.unwrap_err();
        assert!(e.to_string().contains("not in this deploy"), "{e}");
        cancel.cancel();
    }

    #[test]
    fn answers_members_with_peers() {
        let t = tracker();
        get(&t, "10.0.0.1:5000", &announce(7, ""));
        let body = get(
            &t,
            "10.0.0.2:5000",
            &announce(7, "&left=5").replace("left=0&", ""),
        );
        // Host a is fed by the origin: 10.0.0.1:7000 in compact form.
        let want: &[u8] = b"5:peers6:\x0a\x00\x00\x01\x1b\x58e";
        assert!(body.ends_with(want), "{}", String::from_utf8_lossy(&body));
        let status = get(
            &t,
            "10.0.0.1:5000",
            &format!(
                "/status?info_hash={}&host=origin",
                announce::percent_encode(&[7; 20])
            ),
        );
        let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(v["waiting_on_me"], 1);
    }
}
