//! Runs a parsed command line: the second configuration stage and the dispatch.
//!
//! Every command that acts on a cluster first loads and validates the inventory and
//! the playbook (`Config`), resolves `--limit`, and builds the `Plan`; only then does it
//! act.

use crate::command::simulate::{estimate, simulate};
use crate::command::torrent::{torrent_create, torrent_inspect};
use crate::command::tracker::tracker;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{
    Cli, Command, CreateArgs, Global, HostsArgs, InventoryArg, OutputArgs, RemoteArgs,
    TorrentCommand,
};
use crate::config::Config;
use crate::config::selector::Pattern;
use crate::coordination::record::Kind;
use crate::error::{Error, Exit};
use crate::plan;
use crate::plan::render;

pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = &merged(&cli)?;
    crate::shutdown::set_verbosity(g.verbose);
    // Sockets (one per peer, one per SSH host) are what need descriptors; the
    // storages keep a bounded number of files open whatever the limit.
    crate::torrent::storage::raise_open_file_limit();
    match &cli.command {
        Command::Plan(a) => plan_cmd(g, a),
        Command::Deploy(a) => deploy(g, a),
        Command::Prepare(a) => {
            let config = load(g, &a.playbook)?;
            crate::command::prepare::run(&config, &distribute_options(g, &a.remote))
        }
        Command::Distribute(a) => distribute(g, a),
        Command::Rollout(a) => rollout(g, a),
        Command::Reconcile(a) => reconcile(g, a),
        Command::Rollback(a) => rollback(g, a),
        Command::Status(a) => status(g, a),
        Command::Torrent(TorrentCommand::Create(a)) => torrent_create(g, a),
        Command::Torrent(TorrentCommand::Inspect { file, .. }) => torrent_inspect(g, file),
        Command::Tracker(a) => tracker(g, a),
        Command::Simulate(a) => simulate(g, a),
        Command::Agent(a) => crate::agent::run(a),
        Command::Completions { shell } => completions(*shell),
        Command::Man { subcommand, dir } => man(subcommand, dir.as_deref()),
    }
}

/// The shared flags of a command line: those written after the subcommand, over
/// those written before it. A flag written before a subcommand it does not apply to
/// is a usage error, as it would be after it.
fn merged(cli: &Cli) -> Result<Global, Error> {
    let top = &cli.global;
    let (hosts, inventory, output) = scoped(&cli.command);
    let name = command_name(&cli.command);
    let refuse = |flag: &str| {
        Error::Usage(format!(
            "`{flag}` does not apply to `rookery {name}`: see `rookery {name} --help`"
        ))
    };
    let inventory = inventory.or(hosts.map(|h| &h.inventory));
    if top.inventory.is_some() && inventory.is_none() {
        return Err(refuse("--inventory"));
    }
    if top.limit.is_some() && hosts.is_none() {
        return Err(refuse("--limit"));
    }
    if top.json && output.is_none() {
        return Err(refuse("--json"));
    }
    let out = output.cloned().unwrap_or_default();
    let verbose = top.verbose.saturating_add(out.verbose);
    let quiet = top.quiet || out.quiet;
    if verbose > 0 && quiet {
        return Err(Error::Usage(
            "`--verbose` and `--quiet` cannot be used together".into(),
        ));
    }
    Ok(Global {
        inventory: inventory
            .and_then(|i| i.inventory.clone())
            .or_else(|| top.inventory.clone()),
        limit: hosts
            .and_then(|h| h.limit.clone())
            .or_else(|| top.limit.clone()),
        json: top.json || out.json,
        verbose,
        quiet,
    })
}

/// The shared flags a subcommand takes after its name: the hosts it acts on, the
/// inventory alone, and its output. The hidden `agent` takes `-v`/`-q` before it.
fn scoped(
    c: &Command,
) -> (
    Option<&HostsArgs>,
    Option<&InventoryArg>,
    Option<&OutputArgs>,
) {
    static QUIET: std::sync::LazyLock<OutputArgs> = std::sync::LazyLock::new(OutputArgs::default);
    match c {
        Command::Plan(a) => (Some(&a.hosts), None, Some(&a.out)),
        Command::Deploy(a) | Command::Distribute(a) => (Some(&a.hosts), None, Some(&a.out)),
        Command::Prepare(a) => (None, Some(&a.inventory), Some(&a.out)),
        Command::Rollout(a) => (Some(&a.run.hosts), None, Some(&a.run.out)),
        Command::Reconcile(a) => (Some(&a.run.hosts), None, Some(&a.run.out)),
        Command::Rollback(a) => (Some(&a.hosts), None, Some(&a.out)),
        Command::Status(a) => (Some(&a.hosts), None, Some(&a.out)),
        Command::Simulate(a) => (None, None, Some(&a.out)),
        Command::Torrent(TorrentCommand::Create(CreateArgs { out, .. }))
        | Command::Torrent(TorrentCommand::Inspect { out, .. }) => (None, None, Some(out)),
        Command::Tracker(a) => (None, Some(&a.inventory), Some(&a.out)),
        Command::Agent(_) => (None, None, Some(&QUIET)),
        Command::Completions { .. } | Command::Man { .. } => (None, None, None),
    }
}

/// The subcommand's words, for messages.
fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Plan(_) => "plan",
        Command::Deploy(_) => "deploy",
        Command::Prepare(_) => "prepare",
        Command::Distribute(_) => "distribute",
        Command::Rollout(_) => "rollout",
        Command::Reconcile(_) => "reconcile",
        Command::Rollback(_) => "rollback",
        Command::Status(_) => "status",
        Command::Simulate(_) => "simulate",
        Command::Torrent(TorrentCommand::Create(_)) => "torrent create",
        Command::Torrent(TorrentCommand::Inspect { .. }) => "torrent inspect",
        Command::Tracker(_) => "tracker",
        Command::Agent(_) => "agent",
        Command::Completions { .. } => "completions",
        Command::Man { .. } => "man",
    }
}

fn plan_cmd(g: &Global, a: &crate::cli::PlanArgs) -> anyhow::Result<Exit> {
    let config = load(g, &a.playbook)?;
    let selected = select(g, &config.inventory)?;
    let mut p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
    p.estimate = estimate(&config, selected.as_deref(), a.artifact_size.as_deref())?;
    if g.json {
        print(&format!("{}\n", crate::command::skeleton::json(&p)?))?;
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
    opts.promote = a.promote;
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

fn man(subcommand: &[String], dir: Option<&Path>) -> anyhow::Result<Exit> {
    let root = Cli::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut pages = vec![(Vec::new(), root.clone())];
        collect_pages(&root, &mut Vec::new(), &mut pages);
        for (path, cmd) in pages {
            let name = std::iter::once("rookery".to_string())
                .chain(path)
                .collect::<Vec<_>>()
                .join("-");
            let file = dir.join(format!("{name}.1"));
            std::fs::write(
                &file,
                man_page(
                    cmd.display_name(name.clone())
                        .bin_name(name.replace('-', " ")),
                )?,
            )
            .with_context(|| format!("writing {}", file.display()))?;
        }
        return Ok(Exit::Ok);
    }
    let mut cmd = root;
    let mut name = "rookery".to_string();
    for word in subcommand {
        let Some(sub) = cmd.find_subcommand(word).cloned() else {
            return Err(Error::Usage(format!(
                "`{word}` is not a subcommand of `{}`: try `{} --help`",
                name.replace('-', " "),
                name.replace('-', " ")
            ))
            .into());
        };
        name = format!("{name}-{word}");
        cmd = sub;
    }
    print(&man_page(
        cmd.bin_name(name.replace('-', " ")).display_name(name),
    )?)?;
    Ok(Exit::Ok)
}

/// Every subcommand below `cmd` that has a page: the visible ones, and `agent
/// start`, which operators wire into boot (docs/operations.md).
fn collect_pages(
    cmd: &clap::Command,
    path: &mut Vec<String>,
    pages: &mut Vec<(Vec<String>, clap::Command)>,
) {
    for sub in cmd.get_subcommands() {
        path.push(sub.get_name().to_string());
        let under_agent = path.first().is_some_and(|p| p == "agent");
        let wired = path.join(" ") == "agent start";
        if wired || (!under_agent && !sub.is_hide_set()) {
            pages.push((path.clone(), sub.clone()));
        }
        if under_agent || !sub.is_hide_set() {
            collect_pages(sub, path, pages);
        }
        path.pop();
    }
}

fn man_page(cmd: clap::Command) -> anyhow::Result<String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .context("rendering the man page")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub(super) fn targets(config: &Config, selected: Option<&[usize]>) -> Vec<usize> {
    config
        .target_hosts()
        .into_iter()
        .filter(|h| selected.is_none_or(|s| s.binary_search(h).is_ok()))
        .collect()
}

pub(super) fn distribute_options(g: &Global, r: &RemoteArgs) -> crate::distribution::Options {
    crate::distribution::Options {
        json: g.json,
        quiet: g.quiet,
        forks: r.forks as usize,
        accept_new_host_keys: r.accept_new_host_keys,
        advertise: r.advertise,
    }
}

pub(super) fn rollout_options(g: &Global, r: &RemoteArgs, kind: Kind) -> crate::rollout::Options {
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
        promote: false,
    }
}

/// Loads and cross-checks the inventory and the playbook.
pub(super) fn load(g: &Global, playbook: &Path) -> anyhow::Result<Config> {
    let inventory = g.inventory.as_deref().ok_or(Error::NoInventory)?;
    Config::load(inventory, playbook).map_err(|d| Error::Config(d).into())
}

/// The hosts `--limit` selects, sorted; `None` without `--limit`. A limit that
/// selects no host is a usage error (exit 2), for every command.
pub(super) fn select(
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
pub(super) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
