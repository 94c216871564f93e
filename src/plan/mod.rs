//! The plan an operator reviews before anything runs: services in dependency order,
//! each cut into batches of hosts that keep its quorum, and the distribution side.
//!
//! Planning is a pure function of a [`Config`] and the selected hosts, so it is tested
//! directly (and with random inventories) and `rookery plan` shows exactly what
//! `rookery deploy` will do.
//!
//! Batching rules for one service with `n` hosts and quorum `q`:
//! - at most `n - q` hosts down at once (hosts outside `--limit` stay live and count);
//! - at most `max_parallel` hosts per batch;
//! - at most `rack_budget` racks per batch, from at most `dc_budget` datacenters;
//! - a batch takes hosts round-robin from the racks with the most hosts left, so
//!   batches spread over racks and no rack is left for last;
//! - the first `canary` hosts form the first batches, one rack each where possible.

pub mod estimate;
pub mod render;

use std::collections::VecDeque;

use serde::Serialize;

use crate::config::Config;
use crate::config::inventory::Transport;
use crate::config::playbook::{Artifact, Distribution, Version};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub cluster: String,
    pub playbook: String,
    pub limit: Option<String>,
    pub transport: Transport,
    pub distribution: DistributionPlan,
    /// In rollout order.
    pub services: Vec<ServicePlan>,
    /// How many services roll at once (`rollout.max_parallel_services`).
    pub max_parallel_services: u32,
    /// The schedule: services that may roll together, wave after wave (a service's
    /// wave is one past its deepest dependency's). At run time a service starts as
    /// soon as its own dependencies are done, `max_parallel_services` at most at once.
    pub waves: Vec<Vec<String>>,
    /// The distribution estimate (`rookery plan` only; see [`crate::plan::estimate`]).
    pub estimate: Option<crate::plan::estimate::Estimate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistributionPlan {
    pub origin: String,
    pub artifact: Artifact,
    pub settings: Distribution,
    pub hosts: usize,
    pub datacenters: Vec<DcPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DcPlan {
    pub name: String,
    pub hosts: usize,
    pub racks: Vec<RackPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RackPlan {
    pub name: String,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub name: String,
    pub depends_on: Vec<String>,
    /// All hosts of the service, selected or not.
    pub hosts: usize,
    /// Hosts this run restarts.
    pub selected: usize,
    pub quorum: u32,
    pub max_down: u32,
    pub max_parallel: u32,
    pub rack_budget: Option<u32>,
    pub dc_budget: Option<u32>,
    pub canary: u32,
    /// How long the canaries bake before the others go (with canaries only).
    #[serde(with = "crate::config::units::serde_duration")]
    pub canary_bake: std::time::Duration,
    /// After a clean bake: go on (`true`), or wait for `rollout --promote`.
    pub auto_promote: bool,
    pub failure_budget: u32,
    pub batches: Vec<Batch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    pub canary: bool,
    pub hosts: Vec<String>,
    /// `dc/rack` of the batch's hosts, in first-seen order.
    pub racks: Vec<String>,
}

/// A batch as host ids, before names are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBatch {
    pub canary: bool,
    pub hosts: Vec<usize>,
}

/// Plans a deploy of `config` restricted to `selected` hosts (`None`: all hosts).
pub fn plan(config: &Config, selected: Option<&[usize]>, limit: Option<&str>) -> Plan {
    let inv = &config.inventory;
    let pb = &config.playbook;
    let in_limit = |h: &usize| selected.is_none_or(|s| s.binary_search(h).is_ok());
    let services: Vec<ServicePlan> = config
        .order
        .iter()
        .map(|&si| service_plan(config, si, &in_limit))
        .collect();
    let targets: Vec<usize> = config
        .target_hosts()
        .into_iter()
        .filter(|h| in_limit(h))
        .collect();
    Plan {
        cluster: inv.cluster.clone(),
        playbook: pb.name.clone(),
        limit: limit.map(str::to_string),
        transport: inv.transport.clone(),
        distribution: DistributionPlan {
            origin: inv.origin_name(),
            artifact: pb.artifact.clone(),
            settings: pb.distribution.clone(),
            hosts: targets.len(),
            datacenters: datacenters(config, &targets),
        },
        waves: waves(&services),
        services,
        max_parallel_services: pb.rollout.max_parallel_services,
        estimate: None,
    }
}

/// Service `si`'s plan: its settings, and its hosts within the limit cut into
/// batches.
fn service_plan(config: &Config, si: usize, in_limit: &dyn Fn(&usize) -> bool) -> ServicePlan {
    let pb = &config.playbook;
    let svc = &pb.services[si];
    let placement = &config.services[si];
    let (racks, dcs) = selected_by_rack(config, si, in_limit);
    let selected_count: usize = racks.iter().map(Vec::len).sum();
    let budgets = Budgets {
        size: svc.max_parallel.min(placement.max_down().max(1)) as usize,
        racks: svc.rack_budget.map(|b| b as usize),
        dcs: svc.dc_budget.map(|b| b as usize),
    };
    let id_batches = batches(&racks, &dcs, &budgets, svc.canary.0 as usize);
    ServicePlan {
        name: svc.name.clone(),
        depends_on: placement
            .depends_on
            .iter()
            .map(|&d| pb.services[d].name.clone())
            .collect(),
        hosts: placement.hosts.len(),
        selected: selected_count,
        quorum: placement.quorum,
        max_down: placement.max_down(),
        max_parallel: svc.max_parallel,
        rack_budget: svc.rack_budget,
        dc_budget: svc.dc_budget,
        canary: svc.canary.0,
        canary_bake: svc.canary_bake,
        auto_promote: svc.auto_promote,
        failure_budget: placement.failure_budget,
        batches: id_batches.into_iter().map(|b| named(config, b)).collect(),
    }
}

/// Service `si`'s hosts within the limit, grouped by rack, the racks of the
/// datacenters interleaved; and each rack's datacenter.
fn selected_by_rack(
    config: &Config,
    si: usize,
    in_limit: &dyn Fn(&usize) -> bool,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let inv = &config.inventory;
    let mut by_rack: Vec<(usize, Vec<usize>)> = Vec::new();
    for &h in config.services[si].hosts.iter().filter(|h| in_limit(h)) {
        let rack = inv.hosts[h].rack;
        match by_rack.iter_mut().find(|(r, _)| *r == rack) {
            Some((_, hs)) => hs.push(h),
            None => by_rack.push((rack, vec![h])),
        }
    }
    // Interleave datacenters (e1, w1, e2, w2, ...) so that ties between racks
    // spread a batch over datacenters before racks of one datacenter.
    by_rack.sort_by_key(|(r, _)| {
        let dc = &inv.datacenters[inv.racks[*r].dc];
        (dc.racks.iter().position(|x| x == r), inv.racks[*r].dc)
    });
    let dcs = by_rack.iter().map(|(r, _)| inv.racks[*r].dc).collect();
    (by_rack.into_iter().map(|(_, h)| h).collect(), dcs)
}

/// A batch with host names, and the racks it spans in first-seen order.
fn named(config: &Config, b: IdBatch) -> Batch {
    let inv = &config.inventory;
    let mut rack_names: Vec<String> = Vec::new();
    for &h in &b.hosts {
        let name = &inv.rack_of(h).full_name;
        if !rack_names.contains(name) {
            rack_names.push(name.clone());
        }
    }
    Batch {
        canary: b.canary,
        hosts: b.hosts.iter().map(|&h| inv.hosts[h].name.clone()).collect(),
        racks: rack_names,
    }
}

/// The distribution's `targets` by datacenter and rack (empty ones left out).
fn datacenters(config: &Config, targets: &[usize]) -> Vec<DcPlan> {
    let inv = &config.inventory;
    let mut datacenters = Vec::new();
    for dc in &inv.datacenters {
        let mut racks = Vec::new();
        for &r in &dc.racks {
            let hosts: Vec<String> = inv.racks[r]
                .hosts
                .iter()
                .filter(|h| targets.binary_search(h).is_ok())
                .map(|&h| inv.hosts[h].name.clone())
                .collect();
            if !hosts.is_empty() {
                racks.push(RackPlan {
                    name: inv.racks[r].name.clone(),
                    hosts,
                });
            }
        }
        let hosts = racks.iter().map(|r| r.hosts.len()).sum();
        if hosts > 0 {
            datacenters.push(DcPlan {
                name: dc.name.clone(),
                hosts,
                racks,
            });
        }
    }
    datacenters
}

/// Services grouped by dependency depth: the first wave depends on nothing, each
/// later one on services of the waves before it (`services` in dependency order).
pub fn waves(services: &[ServicePlan]) -> Vec<Vec<String>> {
    let mut depth: Vec<usize> = Vec::with_capacity(services.len());
    let mut out: Vec<Vec<String>> = Vec::new();
    for svc in services {
        let d = svc
            .depends_on
            .iter()
            .filter_map(|dep| services.iter().position(|s| &s.name == dep))
            .map(|i| depth[i] + 1)
            .max()
            .unwrap_or(0);
        depth.push(d);
        if out.len() <= d {
            out.resize(d + 1, Vec::new());
        }
        out[d].push(svc.name.clone());
    }
    out
}

/// What limits one batch: its size, and how many racks and datacenters it may span
/// (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub size: usize,
    pub racks: Option<usize>,
    pub dcs: Option<usize>,
}

/// Cuts one service's hosts (grouped by rack; `dcs[r]` is rack `r`'s datacenter) into
/// batches within `budgets`; the first `canary` hosts go first.
pub fn batches(
    racks: &[Vec<usize>],
    dcs: &[usize],
    budgets: &Budgets,
    canary: usize,
) -> Vec<IdBatch> {
    let mut queues: Vec<VecDeque<usize>> =
        racks.iter().map(|r| r.iter().copied().collect()).collect();
    let mut out = Vec::new();

    // Canaries: one host per rack in turn, so a bad rack-specific setup shows early.
    let mut canaries: Vec<VecDeque<usize>> = vec![VecDeque::new(); queues.len()];
    let mut picked = 0;
    while picked < canary && queues.iter().any(|q| !q.is_empty()) {
        for (q, c) in queues.iter_mut().zip(canaries.iter_mut()) {
            if picked == canary {
                break;
            }
            if let Some(h) = q.pop_front() {
                c.push_back(h);
                picked += 1;
            }
        }
    }
    while let Some(hosts) = next_batch(&mut canaries, dcs, budgets) {
        out.push(IdBatch {
            canary: true,
            hosts,
        });
    }
    while let Some(hosts) = next_batch(&mut queues, dcs, budgets) {
        out.push(IdBatch {
            canary: false,
            hosts,
        });
    }
    out
}

/// The next batch: round-robin over the fullest racks, as many as the rack budget
/// allows, skipping racks of datacenters beyond the datacenter budget.
pub fn next_batch(
    queues: &mut [VecDeque<usize>],
    dcs: &[usize],
    budgets: &Budgets,
) -> Option<Vec<usize>> {
    let size = budgets.size.max(1);
    let mut order: Vec<usize> = (0..queues.len())
        .filter(|&r| !queues[r].is_empty())
        .collect();
    if order.is_empty() {
        return None;
    }
    // Fullest racks first; ties keep inventory order (sort is stable).
    order.sort_by_key(|&r| std::cmp::Reverse(queues[r].len()));
    let mut chosen_dcs: Vec<usize> = Vec::new();
    order.retain(|&r| {
        if chosen_dcs.contains(&dcs[r]) {
            return true;
        }
        if chosen_dcs.len() < budgets.dcs.unwrap_or(usize::MAX).max(1) {
            chosen_dcs.push(dcs[r]);
            return true;
        }
        false
    });
    order.truncate(budgets.racks.unwrap_or(usize::MAX).max(1));
    let mut batch = Vec::with_capacity(size);
    while batch.len() < size {
        let mut took = false;
        for &r in &order {
            if batch.len() == size {
                break;
            }
            if let Some(h) = queues[r].pop_front() {
                batch.push(h);
                took = true;
            }
        }
        if !took {
            break;
        }
    }
    Some(batch)
}

impl Plan {
    /// The version label shown in plans: the fixed label, or a note that the content
    /// hash is computed when the artifact is read.
    pub fn version_label(&self) -> String {
        match &self.distribution.artifact.version {
            Version::Label(l) => l.clone(),
            Version::ContentHash => "<content hash>".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::config::inventory::Inventory;
    use crate::config::playbook::Playbook;

    /// `batches` over racks all in one datacenter.
    fn cut(
        racks: &[Vec<usize>],
        size: usize,
        rack_budget: Option<usize>,
        canary: usize,
    ) -> Vec<IdBatch> {
        let dcs = vec![0; racks.len()];
        let budgets = Budgets {
            size,
            racks: rack_budget,
            dcs: None,
        };
        batches(racks, &dcs, &budgets, canary)
    }

    #[test]
    fn dc_budget_keeps_a_batch_in_few_datacenters() {
        // east: r0 (0, 1), r1 (2); west: r2 (3, 4), r3 (5).
        let racks = vec![vec![0, 1], vec![2], vec![3, 4], vec![5]];
        let dcs = [0, 0, 1, 1];
        let cut = |dcs_budget| {
            let budgets = Budgets {
                size: 2,
                racks: None,
                dcs: dcs_budget,
            };
            batches(&racks, &dcs, &budgets, 0)
                .into_iter()
                .map(|b| b.hosts)
                .collect::<Vec<_>>()
        };
        assert_eq!(cut(None), [vec![0, 3], vec![1, 2], vec![4, 5]]);
        assert_eq!(cut(Some(1)), [vec![0, 2], vec![3, 5], vec![1], vec![4]]);
    }

    #[test]
    fn batches_spread_over_racks() {
        let racks = vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]];
        let b = cut(&racks, 3, None, 0);
        let hosts: Vec<Vec<usize>> = b.iter().map(|b| b.hosts.clone()).collect();
        assert_eq!(hosts, [vec![0, 3, 6], vec![1, 4, 2], vec![5]]);
    }

    #[test]
    fn rack_budget_keeps_a_batch_in_few_racks() {
        let racks = vec![vec![0, 1], vec![2, 3, 4]];
        let hosts: Vec<Vec<usize>> = cut(&racks, 4, Some(1), 0)
            .into_iter()
            .map(|b| b.hosts)
            .collect();
        assert_eq!(hosts, [vec![2, 3, 4], vec![0, 1]]);
    }

    #[test]
    fn canaries_go_first_from_different_racks() {
        let racks = vec![vec![0, 1], vec![2, 3]];
        let b = cut(&racks, 1, None, 2);
        assert_eq!(
            b[0],
            IdBatch {
                canary: true,
                hosts: vec![0]
            }
        );
        assert_eq!(
            b[1],
            IdBatch {
                canary: true,
                hosts: vec![2]
            }
        );
        assert!(!b[2].canary);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn plan_respects_limit_and_quorum() {
        let inv = Inventory::from_str(
            "inv.yml",
            "datacenters:\n  east:\n    racks:\n      r1: {services: [api], hosts: {a: ~, b: ~}}\n      r2: {services: [api], hosts: {c: ~, d: ~}}\n",
            Path::new("/"),
        )
        .unwrap();
        let pb = Playbook::from_str("pb.yml", "artifact: {source: b, destination: /srv}\nservices:\n  api: {start: x, quorum: 2, max_parallel: 5}\n", Path::new("/")).unwrap();
        let config = Config::new(inv, pb).unwrap();
        let all = plan(&config, None, None);
        let api = &all.services[0];
        assert_eq!((api.quorum, api.max_down), (2, 2));
        assert_eq!(
            api.batches
                .iter()
                .map(|b| b.hosts.clone())
                .collect::<Vec<_>>(),
            [vec!["a", "c"], vec!["b", "d"]]
        );
        assert_eq!(api.batches[0].racks, ["east/r1", "east/r2"]);
        let limited = plan(&config, Some(&[0, 1]), Some("east/r1"));
        assert_eq!(limited.services[0].selected, 2);
        assert_eq!(limited.distribution.hosts, 2);
        assert_eq!(
            limited.services[0].batches.len(),
            1,
            "two down of four keeps quorum 2"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A random topology and playbook, written as YAML and loaded through the real
        /// loaders: (racks per DC, hosts per rack), and per service (host picks, quorum
        /// seed, max_parallel, rack budget, canaries, dependencies on earlier services).
        /// (host picks, quorum seed, max_parallel, rack budget, canaries, depends on,
        /// datacenter budget)
        type Svc = (
            Vec<bool>,
            u32,
            u32,
            Option<u32>,
            u32,
            Vec<bool>,
            Option<u32>,
        );

        #[derive(Debug, Clone)]
        struct World {
            dcs: Vec<Vec<usize>>,
            services: Vec<Svc>,
            limit: Vec<bool>,
        }

        fn world() -> impl Strategy<Value = World> {
            let dcs = prop::collection::vec(prop::collection::vec(1usize..5, 1..4), 1..4);
            (dcs, 1usize..6)
                .prop_flat_map(|(dcs, nsvc)| {
                    let nhosts: usize = dcs.iter().flatten().sum();
                    let svc = (
                        prop::collection::vec(any::<bool>(), nhosts),
                        0u32..100,
                        1u32..5,
                        prop::option::of(1u32..4),
                        0u32..3,
                        prop::collection::vec(prop::bool::weighted(0.3), nsvc),
                        prop::option::of(1u32..3),
                    );
                    (
                        Just(dcs),
                        prop::collection::vec(svc, nsvc),
                        prop::collection::vec(prop::bool::weighted(0.7), nhosts),
                    )
                })
                .prop_map(|(dcs, services, limit)| World {
                    dcs,
                    services,
                    limit,
                })
        }

        fn build(w: &World) -> Option<(Config, Vec<usize>)> {
            let mut inv = String::from("datacenters:\n");
            let mut names = Vec::new();
            for (d, racks) in w.dcs.iter().enumerate() {
                inv.push_str(&format!("  dc{d}:\n    racks:\n"));
                for (r, &n) in racks.iter().enumerate() {
                    inv.push_str(&format!("      r{r}:\n        hosts:\n"));
                    for h in 0..n {
                        let name = format!("h{d}-{r}-{h}");
                        inv.push_str(&format!("          {name}: ~\n"));
                        names.push(name);
                    }
                }
            }
            let mut pb = String::from("artifact: {source: b, destination: /srv}\nservices:\n");
            for (i, (picks, qseed, mp, budget, canary, deps, dc_budget)) in
                w.services.iter().enumerate()
            {
                let hosts: Vec<&str> = names
                    .iter()
                    .zip(picks)
                    .filter(|(_, p)| **p)
                    .map(|(n, _)| n.as_str())
                    .collect();
                if hosts.is_empty() {
                    return None;
                }
                let n = hosts.len() as u32;
                let quorum = qseed % n; // always below the host count
                let deps: Vec<String> = (0..i)
                    .filter(|&j| deps[j])
                    .map(|j| format!("s{j}"))
                    .collect();
                pb.push_str(&format!(
                    "  s{i}: {{start: x, hosts: [{}], quorum: {quorum}, max_parallel: {mp}, canary: {}, depends_on: [{}]{}{}}}\n",
                    hosts.join(", "),
                    canary.min(&n),
                    deps.join(", "),
                    budget.map(|b| format!(", rack_budget: {b}")).unwrap_or_default(),
                    dc_budget.map(|b| format!(", dc_budget: {b}")).unwrap_or_default()
                ));
            }
            let inv =
                Inventory::from_str("inv.yml", &inv, Path::new("/")).expect("valid inventory");
            let pb = Playbook::from_str("pb.yml", &pb, Path::new("/")).expect("valid playbook");
            let config = Config::new(inv, pb).expect("valid config");
            let selected = (0..names.len()).filter(|&h| w.limit[h]).collect();
            Some((config, selected))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn no_batch_breaks_quorum_and_dependencies_come_first(w in world()) {
                let Some((config, selected)) = build(&w) else { return Ok(()) };
                let p = plan(&config, Some(&selected), Some("random"));
                let pos = |name: &str| p.services.iter().position(|s| s.name == name).unwrap();
                let wave = |name: &str| p.waves.iter().position(|w| w.iter().any(|s| s == name)).unwrap();
                prop_assert_eq!(p.waves.iter().map(Vec::len).sum::<usize>(), p.services.len());
                for svc in &p.services {
                    for dep in &svc.depends_on {
                        prop_assert!(wave(dep) < wave(&svc.name), "{} in a wave before its dependency {}", svc.name, dep);
                    }
                }
                for (i, svc) in p.services.iter().enumerate() {
                    for dep in &svc.depends_on {
                        prop_assert!(pos(dep) < i, "{} planned before its dependency {}", svc.name, dep);
                    }
                    let mut seen: Vec<&String> = Vec::new();
                    for b in &svc.batches {
                        prop_assert!(!b.hosts.is_empty());
                        let live = svc.hosts - b.hosts.len();
                        prop_assert!(live as u32 >= svc.quorum, "{}: batch {:?} leaves {} live, quorum {}", svc.name, b.hosts, live, svc.quorum);
                        prop_assert!(b.hosts.len() as u32 <= svc.max_parallel);
                        if let Some(budget) = svc.rack_budget {
                            prop_assert!(b.racks.len() as u32 <= budget);
                        }
                        if let Some(budget) = svc.dc_budget {
                            let mut dcs: Vec<&str> = b.racks.iter().map(|r| r.split('/').next().unwrap()).collect();
                            dcs.sort_unstable();
                            dcs.dedup();
                            prop_assert!(dcs.len() as u32 <= budget, "{}: batch {:?} spans {:?}", svc.name, b.hosts, dcs);
                        }
                        seen.extend(&b.hosts);
                    }
                    prop_assert_eq!(seen.len(), svc.selected, "every selected host restarts exactly once");
                    seen.sort();
                    seen.dedup();
                    prop_assert_eq!(seen.len(), svc.selected);
                    let canaries = svc.batches.iter().take_while(|b| b.canary).map(|b| b.hosts.len()).sum::<usize>();
                    prop_assert_eq!(canaries, (svc.canary as usize).min(svc.selected));
                }
            }
        }
    }
}
