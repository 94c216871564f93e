//! Runs a parsed command line: the second configuration stage and the dispatch.
//!
//! Every command that acts on a cluster first loads and validates the inventory and
//! the playbook (`Config`), resolves `--limit`, and builds the `Plan`; only then does it
//! act.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Command, Global, RemoteArgs, TorrentCommand, TrackerArgs};
use crate::config::Config;
use crate::config::selector::Pattern;
use crate::config::units::ByteSize;
use crate::coordination::record::Kind;
use crate::error::{Error, Exit};
use crate::plan;
use crate::plan::render;
use crate::torrent::metainfo;

pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = &cli.global;
    crate::shutdown::set_verbosity(g.verbose);
    // Sockets (one per peer, one per SSH host) are what need descriptors; the
    // storages keep a bounded number of files open whatever the limit.
    crate::torrent::storage::raise_open_file_limit();
    match &cli.command {
        Command::Plan(a) => plan_cmd(g, a),
        Command::Deploy(a) => deploy(g, a),
        Command::Distribute(a) => distribute(g, a),
        Command::Rollout(a) => rollout(g, a),
        Command::Reconcile(a) => reconcile(g, a),
        Command::Rollback(a) => rollback(g, a),
        Command::Status(a) => status(g, a),
        Command::Torrent(TorrentCommand::Create {
            dir,
            output,
            piece_size,
            tracker,
            keep_special_bits,
            previous,
        }) => torrent_create(
            g,
            dir,
            output.as_deref(),
            piece_size.as_deref(),
            tracker.clone(),
            *keep_special_bits,
            previous.as_deref(),
        ),
        Command::Torrent(TorrentCommand::Inspect { file }) => torrent_inspect(g, file),
        Command::Tracker(a) => tracker(g, a),
        Command::Simulate(a) => simulate(g, a),
        Command::Agent(a) => crate::agent::run(a),
        Command::Completions { shell } => completions(*shell),
        Command::Man => man(),
    }
}

fn plan_cmd(g: &Global, a: &crate::cli::PlanArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.playbook)?;
    let selected = select(g, &config.inventory)?;
    let mut p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
    p.estimate = estimate(&config, selected.as_deref(), a.artifact_size.as_deref())?;
    if g.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&p)?))?;
    } else if !g.quiet {
        print(&render::plan(&p))?;
    }
    Ok(Exit::Ok)
}

fn deploy(g: &Global, a: &crate::cli::RunArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.playbook)?;
    let selected = select(g, &config.inventory)?;
    let p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
    crate::command::deploy::run(
        &config,
        selected.as_deref(),
        &p,
        &rollout_options(g, &a.remote, Kind::Deploy),
    )
}

fn distribute(g: &Global, a: &crate::cli::RunArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.playbook)?;
    let selected = select(g, &config.inventory)?;
    let hosts = targets(&config, selected.as_deref());
    crate::command::distribute::run(&config, &hosts, &distribute_options(g, &a.remote))
}

fn rollout(g: &Global, a: &crate::cli::RolloutArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.run.playbook)?;
    let selected = select(g, &config.inventory)?;
    let p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
    // The version names release directories and the deploy record's id.
    if let Some(v) = &a.version {
        crate::config::inventory::check_name(v)
            .map_err(|why| Error::Usage(format!("--version `{v}` {why}")))?;
    }
    let mut opts = rollout_options(g, &a.run.remote, Kind::Rollout);
    opts.version = a.version.clone();
    crate::command::rollout::run(&config, &p, &opts)
}

fn reconcile(g: &Global, a: &crate::cli::ReconcileArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.run.playbook)?;
    let selected = select(g, &config.inventory)?;
    let p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
    let opts = rollout_options(g, &a.run.remote, Kind::Reconcile);
    if a.dry_run {
        return crate::command::rollout::preview(&config, &p, &opts);
    }
    crate::command::deploy::reconcile(&config, &p, &opts)
}

fn rollback(g: &Global, a: &crate::cli::RollbackArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.playbook)?;
    let selected = select(g, &config.inventory)?;
    for s in &a.service {
        if config.playbook.service(s).is_none() {
            return Err(Error::Usage(format!(
                "--service `{s}`: no such service in playbook `{}`",
                config.playbook.name
            ))
            .into());
        }
    }
    let p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
    let mut opts = rollout_options(g, &a.remote, Kind::Rollback);
    opts.services = a.service.clone();
    if a.dry_run {
        return crate::command::rollout::preview(&config, &p, &opts);
    }
    crate::command::rollout::run(&config, &p, &opts)
}

fn status(g: &Global, a: &crate::cli::StatusArgs) -> anyhow::Result<Exit> {
    let inventory = g.inventory.as_deref().ok_or(Error::NoInventory)?;
    let config = a.playbook.as_ref().map(|pb| load(g, pb)).transpose()?;
    let loaded;
    let inv = match &config {
        Some(c) => &c.inventory,
        None => {
            loaded = crate::config::inventory::Inventory::load(inventory).map_err(Error::Config)?;
            &loaded
        }
    };
    let hosts =
        select(g, inv)?.map(|hs| hs.into_iter().map(|h| inv.hosts[h].name.clone()).collect());
    let opts = crate::command::status::Options {
        json: g.json,
        quiet: g.quiet,
        hosts,
        forks: a.remote.forks as usize,
        accept_new_host_keys: a.remote.accept_new_host_keys,
    };
    crate::command::status::run(inv, config.as_ref(), &opts)
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<Exit> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rookery", &mut out);
    print(&String::from_utf8_lossy(&out))?;
    Ok(Exit::Ok)
}

fn man() -> anyhow::Result<Exit> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .context("rendering the man page")?;
    print(&String::from_utf8_lossy(&out))?;
    Ok(Exit::Ok)
}

fn simulate(g: &Global, a: &crate::cli::SimulateArgs) -> anyhow::Result<Exit> {
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
    let detect = match (a.detect, shape) {
        (Some(d), _) if d.is_finite() && d >= 0.0 => d,
        (Some(d), _) => {
            return Err(
                Error::Usage(format!("--detect must be 0 or more seconds, found {d}")).into(),
            );
        }
        (None, Shape::Chain) => crate::tracker::simulate::DETECT,
        (None, Shape::Stripes) => crate::tracker::simulate::DETECT_STRIPES,
    };
    let t = crate::tracker::simulate::Topology {
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
        fail: a.fail,
        unchanged: a.unchanged,
        seed: a.seed,
    };
    let o = crate::tracker::simulate::run(&t);
    if g.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&o)?))?;
    } else {
        print(&crate::tracker::simulate::render(&o))?;
    }
    Ok(Exit::Ok)
}

/// The plan's distribution estimate: the size from `--artifact-size`, else from the
/// source directory when it is on this machine; none without a size.
fn estimate(
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

fn torrent_create(
    g: &Global,
    dir: &Path,
    output: Option<&Path>,
    piece_size: Option<&str>,
    announce: Option<String>,
    keep_special_bits: bool,
    previous: Option<&Path>,
) -> anyhow::Result<Exit> {
    let previous = match previous {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let m = metainfo::Metainfo::from_bytes(&bytes)
                .with_context(|| format!("refusing {}", p.display()))?;
            Some(m.rookery)
        }
        None => None,
    };
    let piece_size = match piece_size {
        Some(text) => {
            let size =
                ByteSize::parse(text).map_err(|e| Error::Usage(format!("--piece-size: {e}")))?;
            if !crate::torrent::metainfo::valid_piece_size(size.0) {
                return Err(Error::Usage(format!(
                    "--piece-size: must be a power of two from 16KiB to 64MiB, found `{text}`"
                ))
                .into());
            }
            Some(size.0)
        }
        None => None,
    };
    let opts = metainfo::CreateOptions {
        piece_size,
        announce,
        name: None,
        keep_special_bits,
        previous,
        reuse: None,
    };
    let m = metainfo::create(dir, &opts)
        .with_context(|| format!("creating metainfo for {}", dir.display()))?;
    let out = match output {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(format!("{}.torrent", m.info.name)),
    };
    std::fs::write(&out, m.to_bytes()).with_context(|| format!("writing {}", out.display()))?;
    if g.json {
        let mut v = summary_json(&m);
        v["file"] = serde_json::json!(out.display().to_string());
        print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else if !g.quiet {
        print(&format!("wrote {}\n{}", out.display(), summary_text(&m)))?;
    }
    Ok(Exit::Ok)
}

fn torrent_inspect(g: &Global, file: &Path) -> anyhow::Result<Exit> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let m = metainfo::Metainfo::from_bytes(&bytes)
        .with_context(|| format!("reading {}", file.display()))?;
    if g.json {
        let mut v = summary_json(&m);
        v["files"] = serde_json::json!(
            m.info
                .files
                .iter()
                .map(|f| serde_json::json!({"path": f.path.join("/"), "length": f.length}))
                .collect::<Vec<_>>()
        );
        v["manifest"] = serde_json::to_value(&m.rookery)?;
        print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        let mut text = summary_text(&m);
        text.push_str("files:\n");
        for f in &m.info.files {
            text.push_str(&format!("  {:>12}  {}\n", f.length, f.path.join("/")));
        }
        for e in &m.rookery.empty {
            text.push_str(&format!("  {:>12}  {}\n", 0, e.path));
        }
        for l in &m.rookery.symlinks {
            text.push_str(&format!(
                "  {:>12}  {} -> {}\n",
                "symlink", l.path, l.target
            ));
        }
        print(&text)?;
    }
    Ok(Exit::Ok)
}

fn summary_json(m: &metainfo::Metainfo) -> serde_json::Value {
    serde_json::json!({
        "name": m.info.name,
        "info_hash": m.info_hash_hex(),
        "version": m.content_version(),
        "announce": m.announce,
        "private": m.info.private == 1,
        "total_bytes": m.total_length(),
        "piece_length": m.info.piece_length,
        "pieces": m.piece_count(),
        "file_count": m.info.files.len(),
        "empty_files": m.rookery.empty.len(),
        "symlinks": m.rookery.symlinks.len(),
        "directories": m.rookery.dirs.len(),
    })
}

fn summary_text(m: &metainfo::Metainfo) -> String {
    format!(
        "  name        {}\n  info hash   {}\n  version     {}\n  announce    {}\n  size        {} in {} pieces of {}\n  contents    {} files, {} empty files, {} symlinks, {} directories\n",
        m.info.name,
        m.info_hash_hex(),
        m.content_version(),
        m.announce.as_deref().unwrap_or("(none)"),
        ByteSize(m.total_length()),
        m.piece_count(),
        ByteSize(m.info.piece_length),
        m.info.files.len(),
        m.rookery.empty.len(),
        m.rookery.symlinks.len(),
        m.rookery.dirs.len(),
    )
}

/// `rookery tracker`: serves the swarms of the given metainfo files to the hosts of
/// the inventory until interrupted.
fn tracker(g: &Global, a: &TrackerArgs) -> anyhow::Result<Exit> {
    let inventory = g.inventory.as_deref().ok_or(Error::NoInventory)?;
    let inv = crate::config::inventory::Inventory::load(inventory).map_err(Error::Config)?;
    let listen: std::net::SocketAddr = a.listen.parse().map_err(|_| {
        Error::Usage(format!(
            "--listen: `{}` is not an IP:PORT address",
            a.listen
        ))
    })?;
    let sharing = match a.sharing.as_str() {
        "pipeline" => crate::config::playbook::Sharing::Pipeline,
        "mesh" => crate::config::playbook::Sharing::Mesh,
        "stripes" => crate::config::playbook::Sharing::Stripes,
        other => {
            return Err(Error::Usage(format!(
                "--sharing: `{other}`: use pipeline, stripes or mesh"
            ))
            .into());
        }
    };
    let interval = crate::config::units::parse_duration(&a.interval)
        .map_err(|e| Error::Usage(format!("--interval: {e}")))?;
    let mut hashes = Vec::new();
    for t in &a.torrent {
        let bytes = std::fs::read(t).with_context(|| format!("reading {}", t.display()))?;
        let m = metainfo::Metainfo::from_bytes(&bytes)
            .with_context(|| format!("reading {}", t.display()))?;
        hashes.push(m.info_hash());
    }
    let mut hosts: Vec<usize> = Vec::new();
    for name in &a.host {
        match inv.hosts.iter().position(|h| &h.name == name) {
            Some(h) => hosts.push(h),
            None => {
                return Err(Error::Usage(format!(
                    "--host `{name}` is not a host of the inventory"
                ))
                .into());
            }
        }
    }
    if a.host.is_empty() {
        hosts = (0..inv.hosts.len()).collect();
    }
    hosts.sort_unstable();
    hosts.dedup();
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
        crate::tracker::server::Tracker::new(roster, &hashes, settings)
            .map_err(|e| Error::Usage(format!("--stripes: {e}")))?
            .serve(listener, cancel)
            .await;
        anyhow::Ok(())
    })?;
    Ok(Exit::Ok)
}

fn targets(config: &Config, selected: Option<&[usize]>) -> Vec<usize> {
    config
        .target_hosts()
        .into_iter()
        .filter(|h| selected.is_none_or(|s| s.binary_search(h).is_ok()))
        .collect()
}

fn distribute_options(g: &Global, r: &RemoteArgs) -> crate::distribution::Options {
    crate::distribution::Options {
        json: g.json,
        quiet: g.quiet,
        forks: r.forks as usize,
        accept_new_host_keys: r.accept_new_host_keys,
        advertise: r.advertise,
    }
}

fn rollout_options(g: &Global, r: &RemoteArgs, kind: Kind) -> crate::rollout::Options {
    crate::rollout::Options {
        kind,
        json: g.json,
        quiet: g.quiet,
        forks: r.forks as usize,
        accept_new_host_keys: r.accept_new_host_keys,
        advertise: r.advertise,
        version: None,
        services: Vec::new(),
        lock_held: false,
    }
}

/// Loads and cross-checks the inventory and the playbook.
fn load(g: &Global, playbook: &Path) -> anyhow::Result<Config> {
    let inventory = g.inventory.as_deref().ok_or(Error::NoInventory)?;
    Config::load(inventory, playbook).map_err(|d| Error::Config(d).into())
}

/// The hosts `--limit` selects, sorted; `None` without `--limit`. A limit that
/// selects no host is a usage error (exit 2), for every command.
fn select(
    g: &Global,
    inventory: &crate::config::inventory::Inventory,
) -> anyhow::Result<Option<Vec<usize>>> {
    let Some(limit) = &g.limit else {
        return Ok(None);
    };
    let err = |reason: String| Error::Limit {
        pattern: limit.clone(),
        reason,
    };
    let pattern = Pattern::parse(limit).map_err(|e| err(e.0))?;
    let hosts = pattern.select(inventory).map_err(|e| err(e.0))?;
    // Each term matched something, but `!*` or `a,!a` leave nothing: a run on no
    // host is a mistyped limit, not a success.
    if hosts.is_empty() {
        return Err(err(
            "selects no host (every term matches, but together they leave none)".into(),
        )
        .into());
    }
    Ok(Some(hosts))
}

/// Writes to stdout; a closed pipe (`rookery plan | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
