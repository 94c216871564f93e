//! Runs a parsed command line: the second configuration stage and the dispatch.
//!
//! Every command that acts on a cluster first loads and validates the inventory and
//! the playbook (`Config`), resolves `--limit`, and builds the `Plan`; only then does it
//! act. Commands whose engine is not in this build say so and exit with
//! [`Exit::NotBuilt`] after validating their input, never with a fake success.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, Command, Global, TorrentCommand};
use crate::config::Config;
use crate::error::{Error, Exit};
use crate::plan;
use crate::render;
use crate::selector::Pattern;

pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    let g = &cli.global;
    match &cli.command {
        Command::Plan(a) => {
            let config = load(g, &a.playbook)?;
            let selected = select(g, &config)?;
            let p = plan::plan(&config, selected.as_deref(), g.limit.as_deref());
            if g.json {
                print(&format!("{}\n", serde_json::to_string_pretty(&p)?))?;
            } else if !g.quiet {
                print(&render::plan(&p))?;
            }
            Ok(Exit::Ok)
        }
        Command::Deploy(a) => {
            validate(g, &a.playbook)?;
            not_built(
                "deploy",
                "the distribution and rollout engines are not implemented",
            )
        }
        Command::Distribute(a) => {
            validate(g, &a.playbook)?;
            not_built("distribute", "the distribution engine is not implemented")
        }
        Command::Rollout(a) | Command::Reconcile(a) => {
            validate(g, &a.playbook)?;
            let name = if matches!(cli.command, Command::Rollout(_)) {
                "rollout"
            } else {
                "reconcile"
            };
            not_built(name, "the rollout engine is not implemented")
        }
        Command::Rollback(a) => {
            validate(g, &a.playbook)?;
            not_built("rollback", "the rollout engine is not implemented")
        }
        Command::Status(_) => not_built("status", "the coordination store is not implemented"),
        Command::Torrent(TorrentCommand::Create { .. }) => {
            not_built("torrent create", "the metainfo writer is not implemented")
        }
        Command::Torrent(TorrentCommand::Inspect { .. }) => {
            not_built("torrent inspect", "the metainfo reader is not implemented")
        }
        Command::Tracker(_) => not_built("tracker", "the tracker is not implemented"),
        Command::Agent(_) => not_built("agent", "the host agent is not implemented"),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "rookery", &mut out);
            print(&String::from_utf8_lossy(&out))?;
            Ok(Exit::Ok)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .context("rendering the man page")?;
            print(&String::from_utf8_lossy(&out))?;
            Ok(Exit::Ok)
        }
    }
}

fn not_built(command: &'static str, missing: &'static str) -> anyhow::Result<Exit> {
    Err(Error::NotBuilt { command, missing }.into())
}

/// Loads and cross-checks the inventory and the playbook.
fn load(g: &Global, playbook: &Path) -> anyhow::Result<Config> {
    let inventory = g.inventory.as_deref().ok_or(Error::NoInventory)?;
    Config::load(inventory, playbook).map_err(|d| Error::Config(d).into())
}

/// Validates everything a command would act on, including `--limit`.
fn validate(g: &Global, playbook: &Path) -> anyhow::Result<Config> {
    let config = load(g, playbook)?;
    select(g, &config)?;
    Ok(config)
}

/// The hosts `--limit` selects, sorted; `None` without `--limit`.
fn select(g: &Global, config: &Config) -> anyhow::Result<Option<Vec<usize>>> {
    let Some(limit) = &g.limit else {
        return Ok(None);
    };
    let err = |reason: String| Error::Limit {
        pattern: limit.clone(),
        reason,
    };
    let pattern = Pattern::parse(limit).map_err(err)?;
    Ok(Some(pattern.select(&config.inventory).map_err(err)?))
}

/// Writes to stdout; a closed pipe (`rookery plan | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
