//! `services:`: how each service restarts (quorum, batches, budgets, canaries, health,
//! hooks).

use std::time::Duration;

use serde::Serialize;

use super::{one_template, templates};
use crate::config::decode::{Decoder, Map, join};
use crate::config::diagnostic::{Invalid, Pos};
use crate::config::inventory::check_name;
use crate::config::selector::Pattern;
use crate::config::template::Template;
use crate::config::yaml::Node;

/// A count of hosts, or a percentage of a service's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    fn parse(text: &str) -> Result<Amount, Invalid> {
        if let Some(p) = text.strip_suffix('%') {
            match p.trim().parse::<u32>() {
                Ok(n) if n <= 100 => Ok(Amount::Percent(n)),
                _ => Err(format!("`{text}` is not a percentage between 0% and 100%").into()),
            }
        } else {
            text.parse::<u32>().map(Amount::Count).map_err(|_| {
                Invalid(format!(
                    "`{text}` is not a count (`2`) or a percentage (`50%`)"
                ))
            })
        }
    }

    /// The number of hosts out of `total`; percentages round up, so `quorum: 50%` of 3
    /// hosts keeps 2 live.
    pub fn of(self, total: usize) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => ((total as u64 * p as u64).div_ceil(100)) as u32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub pos: Pos,
    /// Extra host patterns; the inventory's `services:` lists also place the service.
    pub hosts: Vec<(Pattern, Pos)>,
    pub depends_on: Vec<(String, Pos)>,
    /// `None`: all hosts but `max_parallel` stay live (one at a time by default).
    pub quorum: Option<(Amount, Pos)>,
    pub max_parallel: u32,
    /// How many racks may be restarting at once; `None` = no limit.
    pub rack_budget: Option<u32>,
    /// How many datacenters may be restarting at once; `None` = no limit.
    pub dc_budget: Option<u32>,
    pub start: Option<Template>,
    pub stop: Option<Template>,
    pub health: Option<Template>,
    pub health_deadline: Duration,
    pub min_healthy_time: Duration,
    pub canary: (u32, Pos),
    /// How long the canaries must stay healthy before the rest of the service goes.
    pub canary_bake: Duration,
    /// After a clean bake, go on without `rollout --promote`.
    pub auto_promote: bool,
    pub failure_budget: Amount,
    pub before_restart: Vec<Template>,
    pub after_restart: Vec<Template>,
}

/// `canary_bake` when the playbook does not say.
pub const DEFAULT_CANARY_BAKE: Duration = Duration::from_secs(300);

const SERVICE_KEYS: &[&str] = &[
    "hosts",
    "depends_on",
    "quorum",
    "max_parallel",
    "rack_budget",
    "dc_budget",
    "start",
    "stop",
    "health",
    "health_deadline",
    "min_healthy_time",
    "canary",
    "canary_bake",
    "auto_promote",
    "failure_budget",
    "hooks",
];

/// How many hosts go at once: `max_parallel`, `rack_budget`, `dc_budget`.
struct Sizes {
    max_parallel: u32,
    rack_budget: Option<u32>,
    dc_budget: Option<u32>,
}

/// The canaries: how many, how long they bake, whether they promote themselves.
struct Canaries {
    count: (u32, Pos),
    bake: Duration,
    auto_promote: bool,
}

pub(super) fn decode_service(d: &mut Decoder, name: &str, pos: Pos, node: &Node) -> Service {
    let path = format!("services.{name}");
    if let Err(why) = check_name(name) {
        d.error(pos, format!("service name `{name}` {why}"));
    }
    let m = d.map(node, &path, SERVICE_KEYS);
    let hosts = decode_hosts(d, &m, &path);
    let depends_on = m
        .get("depends_on")
        .map(|n| d.strings(n, &join(&path, "depends_on")))
        .unwrap_or_default();
    let quorum = m.get("quorum").and_then(|n| {
        d.parsed(n, &join(&path, "quorum"), Amount::parse)
            .map(|a| (a, n.pos))
    });
    let sizes = decode_sizes(d, &m, &path);
    let start = one_template(d, &m, &path, "start");
    match &start {
        None if !m.has("start") => d.error(pos, format!("service `{name}` has no `start` command")),
        Some(t) if t.as_str().trim().is_empty() => d.error(
            m.get("start").map(|n| n.pos).unwrap_or(pos),
            format!("`{path}.start` is empty"),
        ),
        _ => {}
    }
    let stop = one_template(d, &m, &path, "stop");
    let health = one_template(d, &m, &path, "health");
    let duration = |d: &mut Decoder, key: &str, default: Duration| {
        m.get(key)
            .and_then(|n| d.duration(n, &join(&path, key)))
            .unwrap_or(default)
    };
    let health_deadline = duration(d, "health_deadline", Duration::from_secs(300));
    let min_healthy_time = duration(d, "min_healthy_time", Duration::from_secs(10));
    let canaries = decode_canaries(d, &m, &path, pos);
    let failure_budget = m
        .get("failure_budget")
        .and_then(|n| d.parsed(n, &join(&path, "failure_budget"), Amount::parse))
        .unwrap_or(Amount::Count(0));
    let (before_restart, after_restart) = match m.get("hooks") {
        Some(n) => {
            let hp = join(&path, "hooks");
            let hm = d.map(n, &hp, &["before_restart", "after_restart"]);
            (
                templates(d, &hm, &hp, "before_restart"),
                templates(d, &hm, &hp, "after_restart"),
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    Service {
        name: name.to_string(),
        pos,
        hosts,
        depends_on,
        quorum,
        max_parallel: sizes.max_parallel,
        rack_budget: sizes.rack_budget,
        dc_budget: sizes.dc_budget,
        start,
        stop,
        health,
        health_deadline,
        min_healthy_time,
        canary: canaries.count,
        canary_bake: canaries.bake,
        auto_promote: canaries.auto_promote,
        failure_budget,
        before_restart,
        after_restart,
    }
}

/// `hosts`: host patterns.
fn decode_hosts(d: &mut Decoder, m: &Map<'_>, path: &str) -> Vec<(Pattern, Pos)> {
    let mut hosts = Vec::new();
    if let Some(n) = m.get("hosts") {
        for (text, ppos) in d.strings(n, &join(path, "hosts")) {
            match Pattern::parse(&text) {
                Ok(p) => hosts.push((p, ppos)),
                Err(e) => d.error(ppos, format!("`{path}.hosts`: {e}")),
            }
        }
    }
    hosts
}

/// `max_parallel`, `rack_budget` and `dc_budget`: whole numbers, at least 1.
fn decode_sizes(d: &mut Decoder, m: &Map<'_>, path: &str) -> Sizes {
    let positive = |d: &mut Decoder, key: &str| -> Option<u32> {
        let n = m.get(key)?;
        let p = join(path, key);
        match d.u32(n, &p) {
            Some(0) => {
                d.error(n.pos, format!("`{p}` must be at least 1"));
                Some(1)
            }
            Some(v) => Some(v),
            None => Some(1),
        }
    };
    Sizes {
        max_parallel: positive(d, "max_parallel").unwrap_or(1),
        rack_budget: positive(d, "rack_budget"),
        dc_budget: positive(d, "dc_budget"),
    }
}

/// `canary`, `canary_bake` and `auto_promote`; the last two mean nothing without
/// canaries, so setting them alone is a mistake worth naming.
fn decode_canaries(d: &mut Decoder, m: &Map<'_>, path: &str, pos: Pos) -> Canaries {
    let count = m
        .get("canary")
        .map(|n| (d.u32(n, &join(path, "canary")).unwrap_or(0), n.pos))
        .unwrap_or((0, pos));
    let bake = m
        .get("canary_bake")
        .and_then(|n| d.duration(n, &join(path, "canary_bake")))
        .unwrap_or(DEFAULT_CANARY_BAKE);
    let auto_promote = m
        .get("auto_promote")
        .and_then(|n| d.bool(n, &join(path, "auto_promote")))
        .unwrap_or(false);
    if count.0 == 0 {
        for key in ["canary_bake", "auto_promote"] {
            if let Some(n) = m.get(key) {
                d.error(
                    n.pos,
                    format!(
                        "`{path}.{key}` needs `canary` (at least 1): without canaries nothing bakes"
                    ),
                );
            }
        }
    }
    Canaries {
        count,
        bake,
        auto_promote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(Amount::parse("50%").unwrap().of(3), 2);
        assert_eq!(Amount::parse("2").unwrap().of(10), 2);
        assert_eq!(Amount::parse("100%").unwrap().of(7), 7);
        assert!(Amount::parse("101%").is_err());
        assert!(Amount::parse("half").is_err());
    }
}
