//! `rookery simulate`: the tracker's policies over a generated fleet, with failures,
//! and the distribution time `plan` predicts from the inventory's link speeds.

use crate::cli::Global;
use crate::command::app::print;
use crate::config::Config;
use crate::config::units::ByteSize;
use crate::error::{Error, Exit};
use crate::torrent::metainfo;

pub(super) fn simulate(g: &Global, a: &crate::cli::SimulateArgs) -> anyhow::Result<Exit> {
    check(a)?;
    let t = topology(a)?;
    let o = crate::tracker::simulate::run(&t);
    if g.json {
        print(&format!("{}\n", crate::command::skeleton::json(&o)?))?;
    } else {
        print(&crate::tracker::simulate::render(&o))?;
    }
    Ok(Exit::Ok)
}

/// The counts and fractions make a fleet.
fn check(a: &crate::cli::SimulateArgs) -> anyhow::Result<()> {
    if a.hosts == 0 || a.datacenters == 0 || a.racks == 0 || a.datacenters > a.hosts {
        return Err(Error::Usage(
            "--hosts, --datacenters and --racks must be at least 1, with no more datacenters than hosts"
                .into(),
        )
        .into());
    }
    if !(0.0..1.0).contains(&a.fail) {
        return Err(Error::Usage(format!(
            "--fail must be a fraction from 0 to below 1, found {}",
            a.fail
        ))
        .into());
    }
    if !(0.0..=1.0).contains(&a.unchanged) {
        return Err(Error::Usage(format!(
            "--unchanged must be a fraction from 0 to 1, found {}",
            a.unchanged
        ))
        .into());
    }
    if !(a.hop_lag.is_finite() && a.hop_lag >= 0.0) {
        return Err(Error::Usage(format!(
            "--hop-lag must be 0 or more seconds, found {}",
            a.hop_lag
        ))
        .into());
    }
    if !(a.start_spread.is_finite() && a.start_spread >= 0.0) {
        return Err(Error::Usage(format!(
            "--start-spread must be 0 or more seconds, found {}",
            a.start_spread
        ))
        .into());
    }
    if let Some(k) = a.kill
        && !(1..=a.hosts).contains(&k)
    {
        return Err(Error::Usage(format!(
            "--kill must name a host from 1 to --hosts ({}), found {k}",
            a.hosts
        ))
        .into());
    }
    if !(crate::config::playbook::MIN_STRIPES..=crate::config::playbook::MAX_STRIPES)
        .contains(&a.stripes)
    {
        return Err(Error::Usage(format!(
            "--stripes must be from {} to {}, found {}",
            crate::config::playbook::MIN_STRIPES,
            crate::config::playbook::MAX_STRIPES,
            a.stripes
        ))
        .into());
    }
    Ok(())
}

/// The fleet and transfer the flags describe.
fn topology(a: &crate::cli::SimulateArgs) -> anyhow::Result<crate::tracker::simulate::Topology> {
    use crate::config::units::Rate;
    let size = |flag: &str, text: &str| {
        ByteSize::parse(text)
            .map(|s| s.0)
            .map_err(|e| Error::Usage(format!("{flag}: {e}")))
    };
    let rate = |flag: &str, text: &str| {
        Rate::parse(text)
            .map(|r| r.0)
            .map_err(|e| Error::Usage(format!("{flag}: {e}")))
    };
    let total = size("--size", &a.size)?;
    let piece = match &a.piece_size {
        Some(p) => size("--piece-size", p)?,
        None => metainfo::auto_piece_size(total),
    };
    use crate::tracker::simulate::Shape;
    let shape = match a.topology.as_str() {
        "chain" => Shape::Chain,
        "stripes" => Shape::Stripes,
        other => {
            return Err(
                Error::Usage(format!("--topology: `{other}`: use chain or stripes")).into(),
            );
        }
    };
    let detect = match (a.detect, shape) {
        (Some(d), _) if d.is_finite() && d >= 0.0 => d,
        (Some(d), _) => {
            return Err(
                Error::Usage(format!("--detect must be 0 or more seconds, found {d}")).into(),
            );
        }
        (None, Shape::Chain) => crate::tracker::simulate::DETECT,
        (None, Shape::Stripes) if a.kill.is_some() => {
            crate::tracker::simulate::DETECT_STRIPES_KILLED
        }
        (None, Shape::Stripes) => crate::tracker::simulate::DETECT_STRIPES,
    };
    Ok(crate::tracker::simulate::Topology {
        shape,
        stripes: a.stripes,
        detect,
        hosts: a.hosts,
        datacenters: a.datacenters,
        racks: a.racks,
        size: total,
        piece,
        link: rate("--link", &a.link)?,
        uplink: a
            .uplink
            .as_deref()
            .map(|r| rate("--uplink", r))
            .transpose()?,
        interconnect: a
            .interconnect
            .as_deref()
            .map(|r| rate("--interconnect", r))
            .transpose()?,
        upload_limit: a
            .upload_limit
            .as_deref()
            .map(|r| rate("--upload-limit", r))
            .transpose()?,
        origin_read: a
            .origin_read
            .as_deref()
            .map(|r| rate("--origin-read", r))
            .transpose()?,
        fail: a.fail,
        kill: a.kill.map(|host| crate::tracker::simulate::Kill {
            host,
            fraction: 1.0 / 3.0,
        }),
        hop_lag: a.hop_lag,
        unchanged: a.unchanged,
        start_spread: a.start_spread,
        seed: a.seed,
    })
}

/// The plan's distribution estimate: the size from `--artifact-size`, else from the
/// source directory when it is on this machine; none without a size.
pub(super) fn estimate(
    config: &Config,
    selected: Option<&[usize]>,
    size: Option<&str>,
) -> anyhow::Result<Option<crate::plan::estimate::Estimate>> {
    let (bytes, from) = match size {
        Some(text) => {
            let s =
                ByteSize::parse(text).map_err(|e| Error::Usage(format!("--artifact-size: {e}")))?;
            (s.0, "given")
        }
        None => {
            let here = matches!(
                config.inventory.origin,
                crate::config::inventory::Origin::Controller
            );
            match crate::plan::estimate::tree_size(&config.playbook.artifact.source) {
                Ok(n) if here => (n, "measured"),
                _ => return Ok(None),
            }
        }
    };
    let hosts: Vec<usize> = config
        .target_hosts()
        .into_iter()
        .filter(|h| selected.is_none_or(|s| s.binary_search(h).is_ok()))
        .collect();
    Ok(crate::plan::estimate::pipeline(config, &hosts, bytes, from))
}
