//! The agent's side of the tracker, besides librqbit's own announces: the `/status`
//! poll that tells a host who feeds it and how its rack is doing, and the `stopped`
//! announce a leaving seeder sends.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::torrent::engine::PEER_ID_PREFIX;
use crate::tracker::announce;
use crate::tracker::server::READ_TIMEOUT;

/// Asks the tracker behind `announce_url` (`http://HOST:PORT/announce?...`) how the
/// swarm is doing for `host`: the agent's one call besides librqbit's announces.
pub async fn status(
    announce_url: &str,
    info_hash: &[u8; 20],
    host: &str,
    lost: &[SocketAddr],
) -> anyhow::Result<crate::tracker::swarm::Status> {
    use anyhow::Context;
    let mut target = format!(
        "/status?info_hash={}&host={}",
        announce::percent_encode(info_hash),
        announce::percent_encode(host.as_bytes())
    );
    // The tracker takes 64 query parameters at most.
    for a in lost.iter().take(32) {
        target.push_str(&format!(
            "&lost={}",
            announce::percent_encode(a.to_string().as_bytes())
        ));
    }
    let body = get(announce_url, &target).await?;
    serde_json::from_slice(&body)
        .with_context(|| format!("the tracker answered: {}", String::from_utf8_lossy(&body)))
}

/// Tells the tracker behind `announce_url` (the agent's announce URL, with its
/// `host=NAME`) that this member leaves the swarm: its successors are moved on at
/// their next announce. librqbit never announces `stopped` (nor `completed`), so a
/// seeder that exits without this stays the feeder of its successor until it is
/// overdue. `port` is the member's listening port.
pub async fn announce_stopped(
    announce_url: &str,
    info_hash: &[u8; 20],
    port: u16,
) -> anyhow::Result<()> {
    let query = format!(
        "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=0&event=stopped",
        announce::percent_encode(info_hash),
        announce::percent_encode(&librqbit::generate_peer_id(PEER_ID_PREFIX).0),
    );
    let rest = announce_url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("the tracker URL must start with http://"))?;
    let path_and_query = &rest[rest.find('/').unwrap_or(rest.len())..];
    let target = match path_and_query.split_once('?') {
        Some((path, q)) => format!("{path}?{q}&{query}"),
        None => format!("{path_and_query}?{query}"),
    };
    let body = get(announce_url, &target).await?;
    if body.starts_with(b"d14:failure reason") {
        anyhow::bail!("the tracker refused: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// `GET target` from the server of `announce_url`; the response body.
async fn get(announce_url: &str, target: &str) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let rest = announce_url
        .strip_prefix("http://")
        .context("the tracker URL must start with http://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let mut stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(authority))
        .await
        .context("connecting to the tracker timed out")??;
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(READ_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .context("the tracker did not answer in time")??;
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| response[i + 4..].to_vec())
        .context("malformed answer from the tracker")?;
    Ok(body)
}
