//! The validated pair of inventory and playbook: the second stage of configuration.
//!
//! `Config::load` reads both files, reports the problems of both at once, then checks
//! what only the pair can tell: where each service runs, whether its dependencies
//! exist and form no cycle, and whether its quorum leaves any host free to restart.
//! Nothing here touches the network; commands build a `Config`, then a `Plan`, and only
//! then act.

pub mod decode;
mod dependency;
pub mod diagnostic;
pub mod inventory;
pub mod playbook;
pub mod selector;
pub mod template;
pub mod units;
pub mod yaml;

use std::path::Path;

use crate::config::diagnostic::{Diagnostic, Diagnostics, suggestion};
use crate::config::inventory::Inventory;
use crate::config::playbook::Playbook;

/// Which parts of two files with problems of their own the checks across them may
/// rely on. Dependencies and cycles rest on the playbook's names, which are always
/// kept; placement rests on the inventory and on each service's settings.
struct Trust {
    /// The inventory had no problem but unknown keys.
    inventory: bool,
    /// Services whose own settings had a problem.
    damaged_services: Vec<String>,
}

impl Trust {
    fn all() -> Trust {
        Trust {
            inventory: true,
            damaged_services: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub inventory: Inventory,
    pub playbook: Playbook,
    /// Per playbook service (same index): its hosts and resolved numbers.
    pub services: Vec<Placement>,
    /// Playbook service indices, dependencies first.
    pub order: Vec<usize>,
}

/// Where a service runs and what its percentages mean on that many hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Host ids, in inventory order.
    pub hosts: Vec<usize>,
    /// Instances that must stay live while others restart.
    pub quorum: u32,
    /// Failed hosts tolerated before the rollout stops.
    pub failure_budget: u32,
    /// Playbook indices of the services this one depends on.
    pub depends_on: Vec<usize>,
}

impl Placement {
    /// How many hosts of the service may be down at once.
    pub fn max_down(&self) -> u32 {
        (self.hosts.len() as u32).saturating_sub(self.quorum)
    }
}

impl Config {
    /// The directory a local host's `destination` maps to.
    pub fn host_destination(&self, host: usize) -> std::path::PathBuf {
        let dest = self.playbook.artifact.destination.trim_start_matches('/');
        match &self.inventory.hosts[host].root {
            Some(root) => root.join(dest),
            None => std::path::PathBuf::from("/").join(dest),
        }
    }

    pub fn load(inventory: &Path, playbook: &Path) -> Result<Config, Diagnostics> {
        let inv = Inventory::load_partial(inventory);
        let pb = Playbook::load_partial(playbook);
        let mut all = Diagnostics::default();
        all.extend(inv.problems);
        all.extend(pb.problems);
        let (Some(inventory), Some(playbook)) = (inv.value, pb.value) else {
            return Err(all.sorted());
        };
        if all.is_empty() {
            return Config::new(inventory, playbook);
        }
        // Both files have problems of their own, but they parsed: check across them
        // what those problems cannot have falsified, so that everything is reported
        // at once (a typo in the inventory must not hide a cycle in the playbook).
        let trust = Trust {
            inventory: !inv.damaged,
            damaged_services: pb.damaged_services,
        };
        if let Err(cross) = Config::check(inventory, playbook, &trust) {
            all.extend(cross);
        }
        Err(all.sorted())
    }

    /// Cross-checks an inventory and a playbook that are each valid on their own.
    pub fn new(inventory: Inventory, playbook: Playbook) -> Result<Config, Diagnostics> {
        Config::check(inventory, playbook, &Trust::all())
    }

    /// The checks across the two files, leaving out those that problems of the files
    /// themselves may have falsified (see [`Trust`]).
    fn check(
        inventory: Inventory,
        playbook: Playbook,
        trust: &Trust,
    ) -> Result<Config, Diagnostics> {
        let mut problems = Diagnostics::default();
        let names: Vec<&str> = playbook.services.iter().map(|s| s.name.as_str()).collect();
        let services: Vec<Placement> = playbook
            .services
            .iter()
            .map(|svc| {
                place(
                    svc,
                    &inventory,
                    &playbook.file,
                    &names,
                    trust,
                    &mut problems,
                )
            })
            .collect();
        let deps: Vec<Vec<usize>> = services.iter().map(|p| p.depends_on.clone()).collect();
        let order = match dependency::order(&deps) {
            Ok(order) => order,
            Err(cycles) => {
                for cycle in cycles {
                    let path: Vec<&str> = cycle.iter().map(|&i| names[i]).collect();
                    let first = &playbook.services[cycle[0]];
                    let pos = first.depends_on.first().map(|d| d.1).unwrap_or(first.pos);
                    problems.push(Diagnostic::new(
                        &playbook.file,
                        Some(pos),
                        format!("dependency cycle: {}", path.join(" -> ")),
                    ));
                }
                Vec::new()
            }
        };
        if problems.is_empty() {
            Ok(Config {
                inventory,
                playbook,
                services,
                order,
            })
        } else {
            Err(problems.sorted())
        }
    }

    /// Every host that runs at least one service of the playbook: the hosts that receive
    /// the artifact.
    pub fn target_hosts(&self) -> Vec<usize> {
        let mut hosts: Vec<usize> = self
            .services
            .iter()
            .flat_map(|p| p.hosts.iter().copied())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }
}

/// Where one service runs, its quorum, canaries and dependencies, checked against
/// the inventory. Problems are pushed only where `trust` says the inputs they rest
/// on were read without error.
fn place(
    svc: &crate::config::playbook::Service,
    inventory: &Inventory,
    file: &str,
    names: &[&str],
    trust: &Trust,
    problems: &mut Diagnostics,
) -> Placement {
    // Where a service runs, and so its quorum and canaries, rests on the whole
    // inventory and on the service's own settings.
    let placed = trust.inventory && !trust.damaged_services.contains(&svc.name);
    let (hosts, pattern_failed) = service_hosts(svc, inventory, file, placed, problems);
    let n = hosts.len();
    if n == 0 && !pattern_failed && placed {
        problems.push(Diagnostic::new(
            file,
            Some(svc.pos),
            format!(
                "service `{}` runs on no host: list it under `services:` in {} or give it `hosts:`",
                svc.name, inventory.file
            ),
        ));
    }
    let quorum = quorum(svc, n, file, placed, problems);
    let (canary, canary_pos) = svc.canary;
    if placed && n > 0 && canary as usize > n {
        problems.push(Diagnostic::new(
            file,
            Some(canary_pos),
            format!(
                "service `{}` asks for {canary} canaries but runs on {n} hosts",
                svc.name
            ),
        ));
    }
    Placement {
        failure_budget: svc.failure_budget.of(n),
        hosts,
        quorum,
        depends_on: dependencies(svc, file, names, problems),
    }
}

/// The hosts `svc` runs on: those the inventory lists it on, and those its
/// `hosts:` patterns select; and whether a pattern failed. Errors are pushed only
/// when the service is `placed` on trusted inputs.
fn service_hosts(
    svc: &crate::config::playbook::Service,
    inventory: &Inventory,
    file: &str,
    placed: bool,
    problems: &mut Diagnostics,
) -> (Vec<usize>, bool) {
    let mut hosts: Vec<usize> = (0..inventory.hosts.len())
        .filter(|&h| inventory.hosts[h].services.contains(&svc.name))
        .collect();
    // Each item alone, for its own errors at its own place; then all of them as
    // one pattern, so that `!web-3` takes web-3 out of the other items' hosts.
    let mut pattern_failed = false;
    for (pattern, pos) in &svc.hosts {
        match pattern.select(inventory) {
            Ok(_) => {}
            Err(_) if !placed => pattern_failed = true,
            Err(e) => {
                pattern_failed = true;
                problems.push(Diagnostic::new(
                    file,
                    Some(*pos),
                    format!("`services.{}.hosts`: {e}", svc.name),
                ));
            }
        }
    }
    if !svc.hosts.is_empty() && !pattern_failed {
        let all = crate::config::selector::Pattern::combine(svc.hosts.iter().map(|(p, _)| p));
        hosts.extend(all.select(inventory).unwrap_or_default());
    }
    hosts.sort_unstable();
    hosts.dedup();
    (hosts, pattern_failed)
}

/// The quorum of `svc` on `n` hosts: as set (one that no host could restart under
/// is a problem), else all but `max_parallel`, and never the whole service at once.
fn quorum(
    svc: &crate::config::playbook::Service,
    n: usize,
    file: &str,
    placed: bool,
    problems: &mut Diagnostics,
) -> u32 {
    match svc.quorum {
        Some((amount, pos)) => {
            let q = amount.of(n);
            if placed && n > 0 && q as usize >= n {
                problems.push(Diagnostic::new(
                    file,
                    Some(pos),
                    format!(
                        "quorum of service `{}` is {q} but it runs on {n} host{}: no host could ever restart (quorum must be below the host count)",
                        svc.name,
                        if n == 1 { "" } else { "s" }
                    ),
                ));
            }
            q
        }
        // All but max_parallel stay live, and never the whole service at once.
        None if n > 1 => (n as u32).saturating_sub(svc.max_parallel).max(1),
        None => 0,
    }
}

/// The services `svc` depends on, by index; unknown names are problems.
fn dependencies(
    svc: &crate::config::playbook::Service,
    file: &str,
    names: &[&str],
    problems: &mut Diagnostics,
) -> Vec<usize> {
    let mut depends_on = Vec::new();
    for (dep, pos) in &svc.depends_on {
        match names.iter().position(|n| n == dep) {
            Some(i) => depends_on.push(i),
            None => {
                let hint = suggestion(dep, names.iter().copied());
                problems.push(Diagnostic::new(
                    file,
                    Some(*pos),
                    format!(
                        "service `{}` depends on unknown service `{dep}`{hint}",
                        svc.name
                    ),
                ));
            }
        }
    }
    depends_on.sort_unstable();
    depends_on.dedup();
    depends_on
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "
datacenters:
  east:
    racks:
      r1: {hosts: {a: {services: [api, db]}, b: {services: [api, db]}}}
      r2: {hosts: {c: {services: [api]}, d: ~}}
";

    fn config(playbook: &str) -> Result<Config, Vec<String>> {
        let inv = Inventory::from_str("inv.yml", INV, Path::new("/")).unwrap();
        let pb = Playbook::from_str("pb.yml", playbook, Path::new("/"))
            .map_err(|d| d.iter().map(|x| x.to_string()).collect::<Vec<_>>())?;
        Config::new(inv, pb).map_err(|d| d.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn placement_merges_inventory_and_patterns() {
        let c = config("artifact: {source: b, destination: /srv}\nservices:\n  db: {start: x}\n  api: {start: x, hosts: [d], depends_on: [db], quorum: 50%}\n").unwrap();
        assert_eq!(c.services[1].hosts, [0, 1, 2, 3]);
        assert_eq!(c.services[1].quorum, 2);
        assert_eq!(
            c.services[0].quorum, 1,
            "default keeps all but max_parallel live"
        );
        assert_eq!(c.order, [0, 1]);
        assert_eq!(c.target_hosts(), [0, 1, 2, 3]);
    }

    #[test]
    fn an_exclusion_in_a_hosts_list_applies_to_the_other_items() {
        // Ansible's reading: `!c` takes c out of what the other items select; read
        // on its own it would select every host but c, and the union every host.
        let c = config("artifact: {source: b, destination: /srv}\nservices:\n  web: {start: x, hosts: ['rack:r2', '!c']}\n  solo: {start: x, hosts: ['!a']}\n").unwrap();
        assert_eq!(
            c.services[0].hosts,
            [3],
            "rack r2 is c and d; c is excluded"
        );
        assert_eq!(
            c.services[1].hosts,
            [1, 2, 3],
            "an exclusion alone: every host but a"
        );
    }

    #[test]
    fn default_quorum_never_takes_the_whole_service_down() {
        let c = config("artifact: {source: b, destination: /srv}\nservices:\n  api: {start: x, max_parallel: 10}\n  solo: {start: x, hosts: [d]}\n").unwrap();
        assert_eq!(
            c.services[0].quorum, 1,
            "3 hosts, max_parallel 10: one stays live"
        );
        assert_eq!(c.services[1].quorum, 0, "a single host restarts alone");
    }

    #[test]
    fn a_pattern_that_cancels_out_leaves_no_host() {
        let err = config("artifact: {source: b, destination: /srv}\nservices:\n  web: {start: x, hosts: ['d,!d']}\n").unwrap_err();
        assert_eq!(
            err,
            [
                "pb.yml:3:3: service `web` runs on no host: list it under `services:` in inv.yml or give it `hosts:`"
            ]
        );
    }

    #[test]
    fn cross_file_problems() {
        let err = config(
            "artifact: {source: b, destination: /srv}
services:
  api: {start: x, depends_on: [cache], quorum: 3}
  cache: {start: x, depends_on: [api], hosts: [a]}
  db: {start: x, depends_on: [dbb], canary: 5}
  web: {start: x}
  edge: {start: x, hosts: [rack:r9]}
",
        )
        .unwrap_err();
        assert_eq!(
            err,
            [
                "pb.yml:3:32: dependency cycle: api -> cache -> api",
                "pb.yml:3:48: quorum of service `api` is 3 but it runs on 3 hosts: no host could ever restart (quorum must be below the host count)",
                "pb.yml:5:31: service `db` depends on unknown service `dbb` (did you mean `db`?)",
                "pb.yml:5:45: service `db` asks for 5 canaries but runs on 2 hosts",
                "pb.yml:6:3: service `web` runs on no host: list it under `services:` in inv.yml or give it `hosts:`",
                "pb.yml:7:28: `services.edge.hosts`: `rack:r9` matches no host",
            ]
        );
    }
}
