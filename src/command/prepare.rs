//! `rookery prepare`: the artifact hashed where the origin is, ahead of a deploy.
//!
//! Hashing a fresh artifact is most of a large deploy's start (10 GiB at 1 GB/s is
//! 10.7 s, more than the transfer at 10 Gbit/s). Run as the build's last step, while
//! its files are still in the page cache, `prepare` makes the metainfo and keeps it
//! with the stats of the files it read (on the controller, or on the origin host);
//! the deploy that follows finds every file as it was and reuses every hash, so its
//! first byte moves about a second after it starts. A file changed since is hashed
//! again, as any change is.

use std::time::Instant;

use serde::Serialize;

use crate::command::skeleton::{self, Outcome, Output};
use crate::config::Config;
use crate::config::inventory::Origin;
use crate::distribution::Options;
use crate::error::Exit;

/// What `prepare` prints.
#[derive(Debug, Serialize)]
pub struct Prepared {
    /// The release version the artifact makes.
    pub version: String,
    /// Where it was hashed: `controller`, or the origin host's name.
    pub origin: String,
    pub seconds: f64,
}

impl Outcome for Prepared {
    fn render(&self) -> String {
        format!(
            "prepared {} on {} in {:.1}s: `rookery deploy` and `distribute` reuse its hashes while the build stays as it is\n",
            self.version, self.origin, self.seconds
        )
    }

    fn exit(&self, cancelled: bool) -> Exit {
        if cancelled {
            Exit::Interrupted
        } else {
            Exit::Ok
        }
    }
}

pub fn run(config: &Config, opts: &Options) -> anyhow::Result<Exit> {
    let output = Output {
        json: opts.json,
        quiet: opts.quiet,
    };
    let began = Instant::now();
    skeleton::run_without_store(output, async |cancel| {
        let version = crate::distribution::artifact_version(config, opts, &cancel).await?;
        let origin = match config.inventory.origin {
            Origin::Host(b) => config.inventory.hosts[b].name.clone(),
            Origin::Controller => "controller".to_string(),
        };
        Ok(Prepared {
            version,
            origin,
            seconds: began.elapsed().as_secs_f64(),
        })
    })
}
