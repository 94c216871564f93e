//! `rookery deploy` and `rookery reconcile`: distribution and rollout together.
//!
//! A deploy takes the cluster's deploy lock, distributes the artifact, records the
//! hosts whose copy is verified as staged, and rolls every service to the new
//! version ([`crate::rollout`]). Hosts the distribution did not reach are left out
//! of the rollout (and reported); the quorum gate sees them as not live.
//!
//! `reconcile` brings hosts that missed a deploy (down, unreachable, failed) to the
//! version most of their service's live instances run: it first distributes the
//! artifact to them when that is the version the artifact builds, then rolls them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::command::rollout::output;
use crate::command::skeleton::{self, Outcome};
use crate::config::Config;
use crate::coordination::Coordinator;
use crate::coordination::record::Record;
use crate::distribution::{self as distribute, Report};
use crate::error::Exit;
use crate::plan::Plan;
use crate::rollout::{self, Options};

/// `deploy --json`: the distribution's report and the rollout's record.
#[derive(Serialize)]
struct DeployReport {
    distribution: Report,
    rollout: Option<Record>,
}

impl Outcome for DeployReport {
    /// Both documents, the rollout's with its recap.
    fn document(&self) -> anyhow::Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)?;
        if let Some(r) = &self.rollout {
            v["rollout"] = r.document()?;
        }
        Ok(v)
    }

    /// The distribution's report went to stderr as it ended; this is the rollout's.
    fn render(&self) -> String {
        self.rollout
            .as_ref()
            .map(Outcome::render)
            .unwrap_or_default()
    }

    fn exit(&self, cancelled: bool) -> Exit {
        match &self.rollout {
            Some(r) => worse(
                r.exit(cancelled),
                self.distribution.hosts.iter().all(|h| h.ok),
            ),
            None if cancelled => Exit::Interrupted,
            None => Exit::HostsFailed,
        }
    }
}

fn distribute_options(opts: &Options) -> distribute::Options {
    distribute::Options {
        json: opts.json,
        quiet: opts.quiet,
        forks: opts.forks,
        accept_new_host_keys: opts.accept_new_host_keys,
        advertise: opts.advertise,
    }
}

pub fn run(
    config: &Config,
    selected: Option<&[usize]>,
    plan: &Plan,
    opts: &Options,
) -> anyhow::Result<Exit> {
    let hosts: Vec<usize> = config
        .target_hosts()
        .into_iter()
        .filter(|h| selected.is_none_or(|s| s.binary_search(h).is_ok()))
        .collect();
    skeleton::run(&config.inventory, output(opts), async |store, cancel| {
        let say = |m: &str| {
            if !opts.quiet {
                eprintln!("{m}");
            }
        };
        let lock = rollout::take_lock(store, config, "(distributing)", say).await?;
        let result = async {
            let report =
                distribute::distribute(config, &hosts, &distribute_options(opts), cancel.clone())
                    .await?;
            distribute::stage(config, store, &report).await?;
            if !opts.json && !opts.quiet {
                eprint!("{}", distribute::render(&report));
            }
            if cancel.is_cancelled() || report.hosts.iter().all(|h| !h.ok) {
                if !opts.json && !opts.quiet && !cancel.is_cancelled() {
                    eprintln!("no host has the release; nothing was restarted");
                }
                return anyhow::Ok(DeployReport {
                    distribution: report,
                    rollout: None,
                });
            }
            let skipped: BTreeMap<usize, String> = report
                .hosts
                .iter()
                .filter(|r| !r.ok)
                .filter_map(|r| {
                    let h = config
                        .inventory
                        .hosts
                        .iter()
                        .position(|x| x.name == r.host)?;
                    Some((
                        h,
                        format!(
                            "not distributed: {}",
                            r.error.as_deref().unwrap_or("failed")
                        ),
                    ))
                })
                .collect();
            let mut o = opts.clone();
            o.version = Some(report.version.clone());
            o.lock_held = true;
            let record =
                rollout::with_transport(config, store, plan, &o, Some(&skipped), cancel.clone())
                    .await?;
            Ok(DeployReport {
                distribution: report,
                rollout: Some(record),
            })
        }
        .await;
        store.unlock(lock).await;
        result
    })
}

/// A rollout that succeeded still reports hosts the distribution missed.
fn worse(exit: Exit, distributed_all: bool) -> Exit {
    if exit == Exit::Ok && !distributed_all {
        Exit::HostsFailed
    } else {
        exit
    }
}

pub fn reconcile(config: &Config, plan: &Plan, opts: &Options) -> anyhow::Result<Exit> {
    skeleton::run(&config.inventory, output(opts), async |store, cancel| {
        // Hosts behind the version reconcile brings their service to, by version
        // (never one live on the newest deployed version: see `rollout::work`).
        let newest = rollout::newest_deployed(store, &config.playbook.name).await?;
        let newest = newest.as_ref().map(|(_, v)| v.as_str());
        let mut behind: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for sp in &plan.services {
            let live = store.live(&sp.name).await?;
            let Some(popular) = crate::coordination::reconcile_target(&live, newest) else {
                continue;
            };
            for name in sp.batches.iter().flat_map(|b| &b.hosts) {
                let on = |v: &str| live.iter().any(|i| &i.host == name && i.version == v);
                if !on(&popular) && !newest.is_some_and(on) {
                    let h = config
                        .inventory
                        .hosts
                        .iter()
                        .position(|x| &x.name == name)
                        .expect("planned hosts exist");
                    let v = behind.entry(popular.clone()).or_default();
                    if !v.contains(&h) {
                        v.push(h);
                    }
                }
            }
        }
        // Give them the release if the artifact builds that version (a present
        // copy makes this a quick no-op on the host), wherever the origin is.
        if !behind.is_empty() {
            let version =
                distribute::artifact_version(config, &distribute_options(opts), &cancel).await?;
            if let Some(hosts) = behind.get(&version) {
                let mut hosts = hosts.clone();
                hosts.sort();
                if !opts.quiet {
                    eprintln!(
                        "reconcile: distributing {version} to {} host(s) that miss it",
                        hosts.len()
                    );
                }
                let report = distribute::distribute(
                    config,
                    &hosts,
                    &distribute_options(opts),
                    cancel.clone(),
                )
                .await?;
                distribute::stage(config, store, &report).await?;
            }
        }
        rollout::with_transport(config, store, plan, opts, None, cancel).await
    })
}
