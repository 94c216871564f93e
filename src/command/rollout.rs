//! `rookery rollout`, `rollback` and `reconcile` once their hosts have the release:
//! the rollout ([`crate::rollout`]) in the command skeleton, and the exit status its
//! record maps to.

use crate::command::skeleton::{self, Outcome, Output};
use crate::config::Config;
use crate::coordination::record::{Kind, Record, State};
use crate::error::Exit;
use crate::plan::Plan;
use crate::rollout::{self, Move, Options};

impl Outcome for Record {
    fn render(&self) -> String {
        rollout::render(self)
    }

    /// The record and its recap.
    fn document(&self) -> anyhow::Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)?;
        v["recap"] = serde_json::to_value(self.recap())?;
        Ok(v)
    }

    fn exit(&self, cancelled: bool) -> Exit {
        let all_finished = self
            .services
            .iter()
            .flat_map(|s| &s.hosts)
            .all(|h| h.state.finished());
        match self.state {
            State::Done if all_finished => Exit::Ok,
            State::Done => Exit::HostsFailed,
            State::Interrupted if cancelled => Exit::Interrupted,
            State::Waiting => Exit::AwaitingPromotion,
            State::Interrupted | State::Failed | State::Halted | State::Running => Exit::Stopped,
        }
    }
}

pub fn output(opts: &Options) -> Output {
    Output {
        json: opts.json,
        quiet: opts.quiet,
    }
}

/// `rookery rollout` and `rollback`, and `reconcile` when no host misses a release.
pub fn run(config: &Config, plan: &Plan, opts: &Options) -> anyhow::Result<Exit> {
    skeleton::run(&config.inventory, output(opts), async |store, cancel| {
        rollout::with_transport(config, store, plan, opts, None, cancel).await
    })
}

/// `reconcile --dry-run` and `rollback --dry-run`: the moves, and nothing else.
#[derive(serde::Serialize)]
struct Preview {
    command: &'static str,
    dry_run: bool,
    moves: Vec<Move>,
}

impl Outcome for Preview {
    fn render(&self) -> String {
        let what = self.command;
        if self.moves.is_empty() {
            return format!("{what} would move no host\n");
        }
        let mut s = format!("{what} would move {} host(s):\n", self.moves.len());
        for m in &self.moves {
            s.push_str(&format!(
                "  {} {}: {} -> {}\n",
                m.service,
                m.host,
                m.from.as_deref().unwrap_or("(none)"),
                m.to
            ));
        }
        s
    }

    fn exit(&self, _cancelled: bool) -> Exit {
        Exit::Ok
    }
}

/// `--dry-run` of `reconcile` and `rollback`.
pub fn preview(config: &Config, plan: &Plan, opts: &Options) -> anyhow::Result<Exit> {
    let command = match opts.kind {
        Kind::Rollback => "rollback",
        _ => "reconcile",
    };
    skeleton::run(&config.inventory, output(opts), async |store, _| {
        Ok(Preview {
            command,
            dry_run: true,
            moves: rollout::moves(store, config, plan, opts).await?,
        })
    })
}
