//! `rookery distribute`: the distribution ([`crate::distribution`]) in the command
//! skeleton, the staged versions recorded, and the exit status its report maps to.

use crate::command::skeleton::{self, Outcome, Output};
use crate::config::Config;
use crate::distribution::{self as distribute, Options, Report};
use crate::error::Exit;

impl Outcome for Report {
    fn render(&self) -> String {
        distribute::render(self)
    }

    fn exit(&self, cancelled: bool) -> Exit {
        if cancelled {
            Exit::Interrupted
        } else if self.hosts.iter().all(|h| h.ok) {
            Exit::Ok
        } else {
            Exit::HostsFailed
        }
    }
}

pub fn run(config: &Config, hosts: &[usize], opts: &Options) -> anyhow::Result<Exit> {
    let output = Output {
        json: opts.json,
        quiet: opts.quiet,
    };
    skeleton::run(&config.inventory, output, async |store, cancel| {
        let report = distribute::distribute(config, hosts, opts, cancel).await?;
        distribute::stage(config, store, &report).await?;
        Ok(report)
    })
}
