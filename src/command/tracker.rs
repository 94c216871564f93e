//! `rookery tracker`: the rack-aware tracker on its own, for the origin host or for
//! clients other than rookery's agents.

use crate::cli::{Global, TrackerArgs};
use crate::error::{Error, Exit};
use crate::torrent::metainfo;
use anyhow::Context;

/// `rookery tracker`: serves the swarms of the given metainfo files to the hosts of
/// the inventory until interrupted.
pub(super) fn tracker(g: &Global, a: &TrackerArgs) -> anyhow::Result<Exit> {
    let inventory = g.inventory.as_deref().ok_or(Error::NoInventory)?;
    let inv = crate::config::inventory::Inventory::load(inventory).map_err(Error::Config)?;
    let listen: std::net::SocketAddr = a.listen.parse().map_err(|_| {
        Error::Usage(format!(
            "--listen: `{}` is not an IP:PORT address",
            a.listen
        ))
    })?;
    let sharing = sharing(&a.sharing)?;
    let interval = crate::config::units::parse_duration(&a.interval)
        .map_err(|e| Error::Usage(format!("--interval: {e}")))?;
    let hashes = info_hashes(&a.torrent)?;
    let hosts = members(&inv, &a.host)?;
    let controller_ip = (!listen.ip().is_unspecified()).then(|| listen.ip());
    let roster = crate::tracker::server::roster(&inv, &hosts, controller_ip);
    let settings = crate::tracker::server::Settings {
        sharing,
        interval,
        stripes: a.stripes,
    };
    let rt = crate::shutdown::runtime()?;
    rt.block_on(async {
        let cancel = crate::shutdown::install();
        if a.until_stdin_closes {
            crate::shutdown::cancel_on_stdin_eof(cancel.clone());
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        if g.json {
            // The controller reads the port from this line when it started the
            // tracker on an origin host with port 0.
            println!(
                "{}",
                serde_json::json!({
                    "event": "listening",
                    "announce": format!("http://{}/announce", listener.local_addr()?),
                })
            );
        }
        if !g.quiet {
            eprintln!(
                "tracker on http://{}/announce for {} swarm(s), {} members",
                listener.local_addr()?,
                hashes.len(),
                roster.members().len()
            );
        }
        let tracker = crate::tracker::server::Tracker::new(roster, &hashes, settings)
            .map_err(|e| Error::Usage(format!("--stripes: {e}")))?;
        if let Some(file) = &a.withdrawn {
            let follow =
                crate::tracker::withdrawn::follow(tracker.clone(), file.clone(), cancel.clone());
            tokio::spawn(follow);
        }
        tracker.serve(listener, cancel).await;
        anyhow::Ok(())
    })?;
    Ok(Exit::Ok)
}

/// `--sharing`: how the tracker arranges the hosts.
fn sharing(text: &str) -> Result<crate::config::playbook::Sharing, Error> {
    Ok(match text {
        "pipeline" => crate::config::playbook::Sharing::Pipeline,
        "mesh" => crate::config::playbook::Sharing::Mesh,
        "stripes" => crate::config::playbook::Sharing::Stripes,
        other => {
            return Err(Error::Usage(format!(
                "--sharing: `{other}`: use pipeline, stripes or mesh"
            )));
        }
    })
}

/// The info hash of each `--torrent` file.
fn info_hashes(torrents: &[std::path::PathBuf]) -> anyhow::Result<Vec<[u8; 20]>> {
    let mut hashes = Vec::new();
    for t in torrents {
        let bytes = std::fs::read(t).with_context(|| format!("reading {}", t.display()))?;
        let m = metainfo::Metainfo::from_bytes(&bytes)
            .with_context(|| format!("reading {}", t.display()))?;
        hashes.push(m.info_hash());
    }
    Ok(hashes)
}

/// The inventory's hosts named by `--host` (all of them without one), in inventory
/// order, once each.
fn members(
    inv: &crate::config::inventory::Inventory,
    names: &[String],
) -> Result<Vec<usize>, Error> {
    let mut hosts: Vec<usize> = Vec::new();
    for name in names {
        match inv.hosts.iter().position(|h| &h.name == name) {
            Some(h) => hosts.push(h),
            None => {
                return Err(Error::Usage(format!(
                    "--host `{name}` is not a host of the inventory"
                )));
            }
        }
    }
    if names.is_empty() {
        hosts = (0..inv.hosts.len()).collect();
    }
    hosts.sort_unstable();
    hosts.dedup();
    Ok(hosts)
}
