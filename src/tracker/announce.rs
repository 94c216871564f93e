//! The tracker's wire format: HTTP announce requests in (BEP 3), bencoded answers out
//! (compact peers, BEP 23).
//!
//! Everything here is pure and total: any byte string given to [`parse_request`]
//! yields either a request or a message for a bencoded `failure reason`, never a
//! panic (a property test feeds it junk). The server in `tracker.rs` owns the
//! sockets; this file owns the bytes.

use crate::config::diagnostic::Invalid;
use std::net::{IpAddr, SocketAddr};

/// Longest request head the tracker reads; announces are a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Peers returned when the client does not say (`numwant` absent).
pub const DEFAULT_NUMWANT: u32 = 50;
/// Peers returned at most, whatever the client asks.
pub const MAX_NUMWANT: u32 = 200;
/// A `numwant` above this is not a request but junk, and gets an error.
const NUMWANT_LIMIT: u64 = 100_000;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Announce(Announce),
    /// `GET /status?info_hash=..&host=..`: how the swarm is doing, for an agent
    /// deciding whether to keep seeding (JSON).
    Status {
        info_hash: [u8; 20],
        host: String,
        /// `lost=ADDR` (repeated): feeders whose connection to this member dropped.
        /// With striped sharing such a feeder is given up after
        /// [`crate::tracker::swarm::LOST_SILENT_AFTER`] of silence instead of the
        /// usual [`crate::tracker::swarm::STRIPE_SILENT_AFTER`].
        lost: Vec<SocketAddr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// Already clamped to [`MAX_NUMWANT`].
    pub numwant: u32,
    pub compact: bool,
    /// rookery's own `host=NAME` parameter, appended to the announce URL each agent is
    /// given, so hosts that share an address (local hosts, loopback clusters) are told
    /// apart.
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    Started,
    Completed,
    Stopped,
}

/// Parses one HTTP request head (bytes up to and including the blank line).
/// `Err` carries the text for a `failure reason`.
pub fn parse_request(head: &[u8]) -> Result<Request, Invalid> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("malformed HTTP request")?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| "malformed HTTP request")?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed HTTP request line".into());
    };
    if method != "GET" {
        return Err(format!("method {method} is not supported; use GET").into());
    }
    if !version.starts_with("HTTP/1.") {
        return Err("only HTTP/1.x is supported".into());
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = parse_query(query)?;
    match path {
        "/announce" => parse_announce(&params).map(Request::Announce),
        "/status" => Ok(Request::Status {
            info_hash: twenty(&params, "info_hash")?,
            host: text(&params, "host")?.ok_or("missing host")?,
            lost: lost(&params)?,
        }),
        other => Err(format!(
            "unknown path `{}`; announce at /announce",
            other.escape_default()
        )
        .into()),
    }
}

type Params = Vec<(String, Vec<u8>)>;

fn parse_announce(params: &Params) -> Result<Announce, Invalid> {
    let info_hash = twenty(params, "info_hash")?;
    let peer_id = twenty(params, "peer_id")?;
    let port = number(params, "port")?.ok_or("missing port")?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or("port must be 1..=65535")?;
    let event = match get(params, "event") {
        None | Some(b"") => Event::None,
        Some(b"started") => Event::Started,
        Some(b"completed") => Event::Completed,
        Some(b"stopped") => Event::Stopped,
        Some(_) => return Err("event must be started, completed or stopped".into()),
    };
    let numwant = match number(params, "numwant")? {
        None => DEFAULT_NUMWANT,
        Some(n) if n > NUMWANT_LIMIT => {
            return Err(format!("numwant {n} is absurd; ask for at most {MAX_NUMWANT}").into());
        }
        Some(n) => (n as u32).min(MAX_NUMWANT),
    };
    let compact = match get(params, "compact") {
        None | Some(b"1") => true,
        Some(b"0") => false,
        Some(_) => return Err("compact must be 0 or 1".into()),
    };
    Ok(Announce {
        info_hash,
        peer_id,
        port,
        uploaded: number(params, "uploaded")?.ok_or("missing uploaded")?,
        downloaded: number(params, "downloaded")?.ok_or("missing downloaded")?,
        left: number(params, "left")?.ok_or("missing left")?,
        event,
        numwant,
        compact,
        host: text(params, "host")?,
    })
}

fn parse_query(query: &str) -> Result<Params, Invalid> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = String::from_utf8(percent_decode(k)?).map_err(|_| "malformed query key")?;
        if out.len() >= 64 {
            return Err("too many query parameters".into());
        }
        out.push((key, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<Vec<u8>, Invalid> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or("malformed percent-encoding")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "malformed percent-encoding")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "malformed percent-encoding")?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn get<'a>(params: &'a Params, key: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn twenty(params: &Params, key: &str) -> Result<[u8; 20], Invalid> {
    let v = get(params, key).ok_or_else(|| Invalid(format!("missing {key}")))?;
    v.try_into()
        .map_err(|_| Invalid(format!("{key} must be 20 bytes, found {}", v.len())))
}

fn number(params: &Params, key: &str) -> Result<Option<u64>, Invalid> {
    let Some(v) = get(params, key) else {
        return Ok(None);
    };
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| Invalid(format!("{key} must be a non-negative integer")))
}

/// Every `lost=IP:PORT` of a status poll (the query's 64 parameters bound them).
fn lost(params: &Params) -> Result<Vec<SocketAddr>, Invalid> {
    params
        .iter()
        .filter(|(k, _)| k == "lost")
        .map(|(_, v)| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| {
                    Invalid(format!(
                        "lost must be IP:PORT, found `{}`",
                        String::from_utf8_lossy(v).escape_default()
                    ))
                })
        })
        .collect()
}

fn text(params: &Params, key: &str) -> Result<Option<String>, Invalid> {
    get(params, key)
        .map(|v| String::from_utf8(v.to_vec()).map_err(|_| Invalid(format!("{key} must be UTF-8"))))
        .transpose()
}

/// The bencoded answer to an announce.
pub fn encode_peers(
    peers: &[SocketAddr],
    compact: bool,
    complete: u32,
    incomplete: u32,
    interval_secs: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"d");
    out.extend_from_slice(format!("8:completei{complete}e").as_bytes());
    out.extend_from_slice(format!("10:incompletei{incomplete}e").as_bytes());
    out.extend_from_slice(format!("8:intervali{interval_secs}e").as_bytes());
    out.extend_from_slice(format!("12:min intervali{interval_secs}e").as_bytes());
    let v4: Vec<_> = peers.iter().filter(|p| p.is_ipv4()).collect();
    let v6: Vec<_> = peers.iter().filter(|p| p.is_ipv6()).collect();
    if compact {
        let mut list = Vec::new();
        for p in &v4 {
            push_compact(&mut list, p);
        }
        bytes(&mut out, b"peers", &list);
        if !v6.is_empty() {
            let mut list = Vec::new();
            for p in &v6 {
                push_compact(&mut list, p);
            }
            bytes(&mut out, b"peers6", &list);
        }
    } else {
        out.extend_from_slice(b"5:peersl");
        for p in v4.iter().chain(&v6) {
            out.extend_from_slice(b"d");
            bytes(&mut out, b"ip", p.ip().to_string().as_bytes());
            out.extend_from_slice(format!("4:porti{}e", p.port()).as_bytes());
            out.extend_from_slice(b"e");
        }
        out.extend_from_slice(b"e");
    }
    out.extend_from_slice(b"e");
    out
}

fn push_compact(out: &mut Vec<u8>, p: &SocketAddr) {
    match p.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&p.port().to_be_bytes());
}

fn bytes(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(format!("{}:", key.len()).as_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(format!("{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
}

/// A bencoded `failure reason` (BEP 3).
pub fn encode_failure(reason: &str) -> Vec<u8> {
    let mut out = b"d".to_vec();
    bytes(&mut out, b"failure reason", reason.as_bytes());
    out.push(b'e');
    out
}

/// Percent-encodes every byte outside the unreserved set (for building announce URLs).
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
    }

    fn announce_target(hash: &[u8; 20], extra: &str) -> String {
        format!(
            "/announce?info_hash={}&peer_id=-RK0001-abcdefghijkl&port=6881&uploaded=0&downloaded=10&left=90{extra}",
            percent_encode(hash)
        )
    }

    #[test]
    fn parses_a_librqbit_style_announce() {
        let hash = [0xABu8; 20];
        let r = parse_request(&head(&announce_target(
            &hash,
            "&event=started&compact=1&key=5&host=web-1",
        )))
        .unwrap();
        let Request::Announce(a) = r else {
            panic!("not an announce")
        };
        assert_eq!(a.info_hash, hash);
        assert_eq!(&a.peer_id[..8], b"-RK0001-");
        assert_eq!((a.port, a.downloaded, a.left), (6881, 10, 90));
        assert_eq!(a.event, Event::Started);
        assert_eq!(a.numwant, DEFAULT_NUMWANT);
        assert_eq!(a.host.as_deref(), Some("web-1"));
    }

    #[test]
    fn a_status_poll_carries_the_feeders_it_lost() {
        let hash = [2u8; 20];
        let q = |extra: &str| {
            parse_request(&head(&format!(
                "/status?info_hash={}&host=h1{extra}",
                percent_encode(&hash)
            )))
        };
        let Ok(Request::Status { host, lost, .. }) = q("&lost=10.0.0.1%3A6881&lost=[fd00::2]:7000")
        else {
            panic!("not a status poll")
        };
        assert_eq!(host, "h1");
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:6881".parse().unwrap(),
            "[fd00::2]:7000".parse().unwrap(),
        ];
        assert_eq!(lost, want);
        assert!(matches!(q(""), Ok(Request::Status { lost, .. }) if lost.is_empty()));
        let e = q("&lost=10.0.0.1").unwrap_err();
        assert!(e.0.contains("lost must be IP:PORT"), "{}", e.0);
    }

    #[test]
    fn rejects_bad_fields_with_a_reason() {
        let hash = [1u8; 20];
        let cases = [
            (head("/announce?port=1"), "missing info_hash"),
            (
                head("/announce?info_hash=abc"),
                "info_hash must be 20 bytes, found 3",
            ),
            (
                head(&announce_target(&hash, "&numwant=99999999999")),
                "numwant 99999999999 is absurd",
            ),
            (
                head(&announce_target(&hash, "&numwant=-1")),
                "numwant must be a non-negative integer",
            ),
            (
                head(&announce_target(&hash, "&event=bogus")),
                "event must be",
            ),
            (
                head(&announce_target(&hash, "&info_hash=%zz")),
                "malformed percent-encoding",
            ),
            (b"POST /announce HTTP/1.1\r\n\r\n".to_vec(), "method POST"),
            (b"\xff\xfe\r\n\r\n".to_vec(), "malformed HTTP request"),
            (head("/scrape"), "unknown path `/scrape`"),
        ];
        for (input, want) in cases {
            let err = parse_request(&input).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn clamps_numwant() {
        let hash = [1u8; 20];
        let Request::Announce(a) =
            parse_request(&head(&announce_target(&hash, "&numwant=5000"))).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.numwant, MAX_NUMWANT);
    }

    #[test]
    fn encodes_compact_peers_and_failures() {
        let peers = [
            "10.0.0.1:6881".parse().unwrap(),
            "10.0.0.2:258".parse().unwrap(),
        ];
        let body = encode_peers(&peers, true, 1, 2, 2);
        let expected: &[u8] = b"d8:completei1e10:incompletei2e8:intervali2e12:min intervali2e5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x01\x02e";
        assert_eq!(body, expected);
        assert_eq!(encode_failure("no"), b"d14:failure reason2:noe");
        let long = encode_peers(&peers[..1], false, 0, 0, 2);
        assert_eq!(
            long,
            b"d8:completei0e10:incompletei0e8:intervali2e12:min intervali2e5:peersld2:ip8:10.0.0.14:porti6881eeee"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn junk_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request(&input);
        }

        #[test]
        fn junk_queries_never_panic(query in "[a-z_%0-9=&+.-]{0,200}") {
            let _ = parse_request(&head(&format!("/announce?{query}")));
        }

        #[test]
        fn any_hash_and_numbers_round_trip(
            hash in any::<[u8; 20]>(),
            left in any::<u64>(),
            port in 1u16..,
            numwant in 0u32..1000,
        ) {
            let target = format!(
                "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&numwant={numwant}",
                percent_encode(&hash),
                percent_encode(&hash),
            );
            let Ok(Request::Announce(a)) = parse_request(&head(&target)) else {
                panic!("valid announce refused");
            };
            prop_assert_eq!(a.info_hash, hash);
            prop_assert_eq!(a.left, left);
            prop_assert_eq!(a.port, port);
            prop_assert_eq!(a.numwant, numwant.min(MAX_NUMWANT));
        }
    }
}
