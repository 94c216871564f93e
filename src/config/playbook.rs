//! The playbook: what to ship (the artifact), how to ship it (distribution settings)
//! and how to switch each service to it (quorum, batches, health, hooks).
//!
//! Defaults follow what operators already trust: Nomad's update stanza for restarts
//! (max_parallel 1, min_healthy_time 10s, health deadline 5m), Capistrano's
//! keep_releases 5, Murder's 64 peer connections and 30 s seed window. Every key is
//! documented in `docs/playbook.md`. Checks that need the inventory (host counts,
//! quorum) live in `config.rs`.

use crate::config::diagnostic::Invalid;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::decode::{Decoder, Map, Partial, join, resolve_path};
use crate::config::diagnostic::{Diagnostics, Pos};
use crate::config::inventory::check_name;
use crate::config::selector::Pattern;
use crate::config::template::Template;
use crate::config::units::{ByteSize, Rate};
use crate::config::yaml::{self, Node, Value};

/// The stripe count `rookery simulate` uses unless told otherwise (see
/// docs/distribution.md, "Striped trees", for why 8).
pub const DEFAULT_STRIPES: usize = 8;
/// Fewer than 5 stripes leave no spare slot (floor(1.2 k) = k): a failed host's
/// orphans would have nowhere to go within the budgets; more than 64 makes slots (1/k copy) and each
/// hop's rate (C/k) too small to be worth the connections.
pub const MIN_STRIPES: usize = 5;
pub const MAX_STRIPES: usize = 64;

/// How the tracker arranges who feeds whom (`distribution.sharing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    #[default]
    Pipeline,
    Mesh,
    /// Striped trees (`tracker::stripes`): one feeder per stripe.
    Stripes,
}

/// What a host does with the page cache around a copy (`distribution.page_cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PageCache {
    pub drop_after_write: bool,
    pub lock_current: Vec<String>,
    pub preload: bool,
    /// Bytes of the hot set locked at most (`None`: the agent's default, 1 GiB).
    pub lock_max: Option<ByteSize>,
}

#[derive(Debug, Clone)]
pub struct Playbook {
    pub file: String,
    pub name: String,
    pub artifact: Artifact,
    pub distribution: Distribution,
    pub hooks: Hooks,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// Directory on the origin holding the build, resolved against the playbook's folder.
    pub source: PathBuf,
    /// `source` as written: with an inventory host as origin, a path on that host.
    pub source_as_written: String,
    /// Root on every host; releases go to `<destination>/releases/<version>`.
    pub destination: String,
    pub keep_releases: u32,
    pub version: Version,
    /// `special_bits: keep`: setuid and setgid bits of the build are shipped as they
    /// are; by default (`refuse`) a build that has any is refused, naming the file.
    pub keep_special_bits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Version {
    /// Derived from the content: the same tree always gets the same version.
    ContentHash,
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedMode {
    /// Seed for exactly `seed_window` after the copy is verified.
    Fixed,
    /// Seed until every host of the rack has the copy and no host is fed by this
    /// one, for `seed_window_max` at most (`seed_window` once the tracker is gone).
    /// docs/playbook.md, "The seed window".
    Adaptive,
}

#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    #[serde(with = "crate::config::units::serde_duration")]
    pub seed_window: Duration,
    pub seed_mode: SeedMode,
    #[serde(with = "crate::config::units::serde_duration")]
    pub seed_window_max: Duration,
    pub max_peers: u32,
    pub upload_limit: Option<Rate>,
    pub download_limit: Option<Rate>,
    /// `None` = chosen from the artifact size.
    pub piece_size: Option<ByteSize>,
    /// How the tracker arranges rookery agents (`pipeline`, `stripes`) or any client
    /// (`mesh`).
    pub sharing: Sharing,
    /// Stripes of `sharing: stripes`.
    pub stripes: usize,
    /// BitTorrent listen port on hosts (local hosts get consecutive ports from it).
    pub port: u16,
    /// An agent that receives nothing for this long gives up.
    #[serde(with = "crate::config::units::serde_duration")]
    pub stall_timeout: Duration,
    pub page_cache: PageCache,
}

/// The defaults of `distribution:`, documented in docs/playbook.md; the host agent
/// falls back on the same values for a flag an operator leaves out.
impl Default for Distribution {
    fn default() -> Distribution {
        Distribution {
            seed_window: Duration::from_secs(30),
            seed_mode: SeedMode::Fixed,
            seed_window_max: Duration::from_secs(300),
            max_peers: 64,
            upload_limit: Some(Rate(200_000_000)),
            download_limit: Some(Rate(300_000_000)),
            piece_size: None,
            sharing: Sharing::Pipeline,
            stripes: DEFAULT_STRIPES,
            port: 6881,
            stall_timeout: Duration::from_secs(300),
            page_cache: PageCache::default(),
        }
    }
}

/// Commands run around the distribution phase: on the controller before and after
/// it, and on each host once its copy is verified and installed (`after_fetch`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hooks {
    pub before_distribute: Vec<Template>,
    pub after_distribute: Vec<Template>,
    pub after_fetch: Vec<Template>,
}

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
    pub start: Option<Template>,
    pub stop: Option<Template>,
    pub health: Option<Template>,
    pub health_deadline: Duration,
    pub min_healthy_time: Duration,
    pub canary: (u32, Pos),
    pub failure_budget: Amount,
    pub before_restart: Vec<Template>,
    pub after_restart: Vec<Template>,
}

const TOP_KEYS: &[&str] = &["name", "artifact", "distribution", "hooks", "services"];
const ARTIFACT_KEYS: &[&str] = &[
    "source",
    "destination",
    "keep_releases",
    "version",
    "special_bits",
];
const DISTRIBUTION_KEYS: &[&str] = &[
    "seed_window",
    "seed_mode",
    "seed_window_max",
    "max_peers",
    "upload_limit",
    "download_limit",
    "piece_size",
    "sharing",
    "stripes",
    "port",
    "stall_timeout",
    "page_cache",
];
const PAGE_CACHE_KEYS: &[&str] = &["drop_after_write", "lock_current", "preload", "lock_max"];
const SERVICE_KEYS: &[&str] = &[
    "hosts",
    "depends_on",
    "quorum",
    "max_parallel",
    "rack_budget",
    "start",
    "stop",
    "health",
    "health_deadline",
    "min_healthy_time",
    "canary",
    "failure_budget",
    "hooks",
];

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, Diagnostics> {
        Playbook::load_partial(path).into_result()
    }

    /// Reads a playbook as far as it goes, problems and all.
    pub fn load_partial(path: &Path) -> Partial<Playbook> {
        let file = path.display().to_string();
        match yaml::read(path, &file, "playbook") {
            Ok(text) => {
                let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                Playbook::parse(&file, &text, &base)
            }
            Err(d) => Partial::failed(d),
        }
    }

    pub fn from_str(file: &str, text: &str, base: &Path) -> Result<Playbook, Diagnostics> {
        Playbook::parse(file, text, base).into_result()
    }

    /// Parses playbook text as far as it goes, problems and all.
    pub fn parse(file: &str, text: &str, base: &Path) -> Partial<Playbook> {
        let root = match yaml::parse(file, text) {
            Ok(root) => root,
            Err(d) => return Partial::failed(d),
        };
        let mut d = Decoder::new(file);
        let mut damaged_services = Vec::new();
        let pb = decode(&mut d, &root, file, base, &mut damaged_services);
        let damaged = d.damage() > 0;
        Partial {
            value: Some(pb),
            problems: d.finish(),
            damaged,
            damaged_services,
        }
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// `damaged_services` gets the names of services whose own settings had a problem.
fn decode(
    d: &mut Decoder,
    root: &Node,
    file: &str,
    base: &Path,
    damaged_services: &mut Vec<String>,
) -> Playbook {
    let top = d.map(root, "", TOP_KEYS);
    if matches!(root.value, Value::Null) {
        d.error(
            Pos { line: 1, col: 1 },
            "the playbook is empty: it needs `artifact` and `services`",
        );
    }
    let name = match top
        .get("name")
        .and_then(|n| d.string(n, "name").map(|s| (s, n.pos)))
    {
        Some((name, pos)) => {
            if let Err(why) = check_name(&name) {
                d.error(pos, format!("playbook name `{name}` {why}"));
            }
            name
        }
        None => {
            let stem = Path::new(file)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Err(why) = check_name(&stem) {
                d.file_error(format!(
                    "playbook name `{stem}` (taken from the file name) {why}; set `name:`"
                ));
            }
            stem
        }
    };
    let artifact = match top.get("artifact") {
        Some(n) => decode_artifact(d, n, base),
        None => {
            if !matches!(root.value, Value::Null) {
                d.file_error("missing key `artifact`");
            }
            Artifact {
                source: PathBuf::new(),
                source_as_written: String::new(),
                destination: String::new(),
                keep_releases: 5,
                version: Version::ContentHash,
                keep_special_bits: false,
            }
        }
    };
    let distribution = decode_distribution(d, top.get("distribution"));
    let hooks = match top.get("hooks") {
        Some(n) => {
            let m = d.map(
                n,
                "hooks",
                &["before_distribute", "after_distribute", "after_fetch"],
            );
            Hooks {
                before_distribute: templates(d, &m, "hooks", "before_distribute"),
                after_distribute: templates(d, &m, "hooks", "after_distribute"),
                after_fetch: templates(d, &m, "hooks", "after_fetch"),
            }
        }
        None => Hooks::default(),
    };
    let mut services = Vec::new();
    match top.get("services") {
        Some(n) => {
            for (name, pos, node) in d.named_entries(n, "services") {
                let before = d.damage();
                services.push(decode_service(d, name, pos, node));
                if d.damage() > before {
                    damaged_services.push(name.to_string());
                }
            }
        }
        None if !matches!(root.value, Value::Null) => d.file_error("missing key `services`"),
        None => {}
    }
    Playbook {
        file: file.to_string(),
        name,
        artifact,
        distribution,
        hooks,
        services,
    }
}

fn decode_artifact(d: &mut Decoder, node: &Node, base: &Path) -> Artifact {
    let m = d.map(node, "artifact", ARTIFACT_KEYS);
    let written = m.get("source").and_then(|s| d.string(s, "artifact.source"));
    let source = match &written {
        Some(s) => resolve_path(base, s),
        None => {
            d.error(
                node.pos,
                "missing key `source` in `artifact` (the build directory to ship)",
            );
            PathBuf::new()
        }
    };
    let destination = match m.get("destination") {
        Some(n) => {
            let dest = d.string(n, "artifact.destination").unwrap_or_default();
            let clean = dest.starts_with('/')
                && dest.len() > 1
                && !dest.split('/').any(|c| c == ".." || c == ".")
                && !dest.contains(['\n', '\0']);
            if !clean {
                d.error(n.pos, format!("`artifact.destination` must be an absolute path without `.` or `..`, found `{dest}`"));
            }
            dest.trim_end_matches('/').to_string()
        }
        None => {
            d.error(
                node.pos,
                "missing key `destination` in `artifact` (the root directory on every host)",
            );
            String::new()
        }
    };
    let keep_releases = match m.get("keep_releases") {
        Some(n) => match d.u32(n, "artifact.keep_releases") {
            Some(k) if k < 2 => {
                d.error(n.pos, format!("`artifact.keep_releases` must be at least 2 (the current release and the one to roll back to), found `{k}`"));
                2
            }
            Some(k) => k,
            None => 5,
        },
        None => 5,
    };
    let version = match m.get("version") {
        Some(n) => match d.string(n, "artifact.version") {
            Some(v) if v == "content-hash" => Version::ContentHash,
            Some(v) => {
                if let Err(why) = check_name(&v) {
                    d.error(n.pos, format!("`artifact.version` `{v}` {why}"));
                }
                Version::Label(v)
            }
            None => Version::ContentHash,
        },
        None => Version::ContentHash,
    };
    let keep_special_bits = match m.get("special_bits") {
        Some(n) => match d.string(n, "artifact.special_bits").as_deref() {
            Some("keep") => true,
            Some("refuse") | None => false,
            Some(other) => {
                d.error(
                    n.pos,
                    format!("`artifact.special_bits` must be `refuse` or `keep`, found `{other}`"),
                );
                false
            }
        },
        None => false,
    };
    Artifact {
        source,
        source_as_written: written.unwrap_or_default(),
        destination,
        keep_releases,
        version,
        keep_special_bits,
    }
}

fn decode_distribution(d: &mut Decoder, node: Option<&Node>) -> Distribution {
    let mut dist = Distribution::default();
    let Some(node) = node else { return dist };
    let m = d.map(node, "distribution", DISTRIBUTION_KEYS);
    decode_seeding(d, &m, &mut dist);
    decode_caps(d, &m, &mut dist);
    if let Some(n) = m
        .get("piece_size")
        .filter(|n| n.as_scalar() != Some("auto"))
        && let Some(size) = d.size(n, "distribution.piece_size")
    {
        if !crate::torrent::metainfo::valid_piece_size(size.0) {
            let text = n.as_scalar().unwrap_or_default();
            d.error(n.pos, format!("`distribution.piece_size` must be `auto` or a power of two from 16KiB to 64MiB, found `{text}`"));
        } else {
            dist.piece_size = Some(size);
        }
    }
    decode_sharing(d, &m, &mut dist);
    if let Some(n) = m.get("stall_timeout") {
        dist.stall_timeout = d
            .duration(n, "distribution.stall_timeout")
            .unwrap_or(dist.stall_timeout);
    }
    if let Some(n) = m.get("page_cache") {
        let pc = d.map(n, "distribution.page_cache", PAGE_CACHE_KEYS);
        let policy = &mut dist.page_cache;
        if let Some(v) = pc.get("drop_after_write") {
            policy.drop_after_write = d
                .bool(v, "distribution.page_cache.drop_after_write")
                .unwrap_or(false);
        }
        if let Some(v) = pc.get("preload") {
            policy.preload = d
                .bool(v, "distribution.page_cache.preload")
                .unwrap_or(false);
        }
        if let Some(v) = pc.get("lock_max") {
            policy.lock_max = d.size(v, "distribution.page_cache.lock_max");
        }
        if let Some(v) = pc.get("lock_current") {
            policy.lock_current = d
                .strings(v, "distribution.page_cache.lock_current")
                .into_iter()
                .map(|(s, _)| s)
                .collect();
        }
    }
    dist
}

/// `seed_window`, `seed_mode` and `seed_window_max`.
fn decode_seeding(d: &mut Decoder, m: &Map<'_>, dist: &mut Distribution) {
    if let Some(n) = m.get("seed_window") {
        dist.seed_window = d
            .duration(n, "distribution.seed_window")
            .unwrap_or(dist.seed_window);
    }
    if let Some(n) = m.get("seed_mode") {
        match d.string(n, "distribution.seed_mode").as_deref() {
            Some("fixed") => dist.seed_mode = SeedMode::Fixed,
            Some("adaptive") => dist.seed_mode = SeedMode::Adaptive,
            Some(other) => d.error(
                n.pos,
                format!("`distribution.seed_mode` must be `fixed` or `adaptive`, found `{other}`"),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("seed_window_max") {
        dist.seed_window_max = d
            .duration(n, "distribution.seed_window_max")
            .unwrap_or(dist.seed_window_max);
    }
    if dist.seed_mode == SeedMode::Adaptive && dist.seed_window_max < dist.seed_window {
        let pos = m
            .get("seed_window_max")
            .or(m.get("seed_window"))
            .map(|n| n.pos)
            .unwrap_or(m.pos);
        d.error(pos, "`distribution.seed_window_max` must not be shorter than `seed_window` in adaptive mode");
    }
}

/// `max_peers`, `upload_limit` and `download_limit`.
fn decode_caps(d: &mut Decoder, m: &Map<'_>, dist: &mut Distribution) {
    if let Some(n) = m.get("max_peers") {
        match d.u32(n, "distribution.max_peers") {
            Some(0) => d.error(n.pos, "`distribution.max_peers` must be at least 1"),
            Some(p) => dist.max_peers = p,
            None => {}
        }
    }
    for (key, slot) in [
        ("upload_limit", &mut dist.upload_limit),
        ("download_limit", &mut dist.download_limit),
    ] {
        if let Some(n) = m.get(key) {
            let path = join("distribution", key);
            *slot = match n.as_scalar() {
                Some("unlimited") => None,
                _ => d.rate(n, &path).or(*slot),
            };
        }
    }
}

/// `sharing` and `stripes`.
fn decode_sharing(d: &mut Decoder, m: &Map<'_>, dist: &mut Distribution) {
    if let Some(n) = m.get("sharing") {
        match d.string(n, "distribution.sharing").as_deref() {
            Some("pipeline") => dist.sharing = Sharing::Pipeline,
            Some("mesh") => dist.sharing = Sharing::Mesh,
            Some("stripes") => dist.sharing = Sharing::Stripes,
            Some(other) => d.error(
                n.pos,
                format!(
                    "`distribution.sharing` must be `pipeline`, `stripes` or `mesh`, found `{other}`"
                ),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("stripes") {
        match d.u32(n, "distribution.stripes") {
            Some(k) if (MIN_STRIPES..=MAX_STRIPES).contains(&(k as usize)) => {
                dist.stripes = k as usize
            }
            Some(k) => d.error(
                n.pos,
                format!("`distribution.stripes` must be {MIN_STRIPES}..={MAX_STRIPES}, found {k}"),
            ),
            None => {}
        }
    }
    if let Some(n) = m.get("port") {
        match d.u32(n, "distribution.port") {
            Some(p @ 1..=65535) => dist.port = p as u16,
            Some(p) => d.error(
                n.pos,
                format!("`distribution.port` must be 1..=65535, found {p}"),
            ),
            None => {}
        }
    }
}

fn templates(d: &mut Decoder, m: &Map<'_>, path: &str, key: &str) -> Vec<Template> {
    let Some(node) = m.get(key) else {
        return Vec::new();
    };
    let p = join(path, key);
    d.strings(node, &p)
        .into_iter()
        .filter_map(|(text, pos)| match Template::parse(&text) {
            Ok(t) => Some(t),
            Err(e) => {
                d.error(pos, format!("`{p}`: {e}"));
                None
            }
        })
        .collect()
}

fn one_template(d: &mut Decoder, m: &Map<'_>, path: &str, key: &str) -> Option<Template> {
    let node = m.get(key)?;
    let p = join(path, key);
    let text = d.string(node, &p)?;
    match Template::parse(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            d.error(node.pos, format!("`{p}`: {e}"));
            None
        }
    }
}

fn decode_service(d: &mut Decoder, name: &str, pos: Pos, node: &Node) -> Service {
    let path = format!("services.{name}");
    if let Err(why) = check_name(name) {
        d.error(pos, format!("service name `{name}` {why}"));
    }
    let m = d.map(node, &path, SERVICE_KEYS);
    let mut hosts = Vec::new();
    if let Some(n) = m.get("hosts") {
        for (text, ppos) in d.strings(n, &join(&path, "hosts")) {
            match Pattern::parse(&text) {
                Ok(p) => hosts.push((p, ppos)),
                Err(e) => d.error(ppos, format!("`{path}.hosts`: {e}")),
            }
        }
    }
    let depends_on = m
        .get("depends_on")
        .map(|n| d.strings(n, &join(&path, "depends_on")))
        .unwrap_or_default();
    let quorum = m.get("quorum").and_then(|n| {
        d.parsed(n, &join(&path, "quorum"), Amount::parse)
            .map(|a| (a, n.pos))
    });
    let positive = |d: &mut Decoder, key: &str, default: u32| -> u32 {
        let Some(n) = m.get(key) else { return default };
        let p = join(&path, key);
        match d.u32(n, &p) {
            Some(0) => {
                d.error(n.pos, format!("`{p}` must be at least 1"));
                default
            }
            Some(v) => v,
            None => default,
        }
    };
    let max_parallel = positive(d, "max_parallel", 1);
    let rack_budget = m.has("rack_budget").then(|| positive(d, "rack_budget", 1));
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
    let health_deadline = m
        .get("health_deadline")
        .and_then(|n| d.duration(n, &join(&path, "health_deadline")))
        .unwrap_or(Duration::from_secs(300));
    let min_healthy_time = m
        .get("min_healthy_time")
        .and_then(|n| d.duration(n, &join(&path, "min_healthy_time")))
        .unwrap_or(Duration::from_secs(10));
    let canary = m
        .get("canary")
        .map(|n| (d.u32(n, &join(&path, "canary")).unwrap_or(0), n.pos))
        .unwrap_or((0, pos));
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
        max_parallel,
        rack_budget,
        start,
        stop,
        health,
        health_deadline,
        min_healthy_time,
        canary,
        failure_budget,
        before_restart,
        after_restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Playbook, Vec<String>> {
        Playbook::from_str("pb.yml", text, Path::new("/pb"))
            .map_err(|ds| ds.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn defaults_follow_nomad_and_capistrano() {
        let pb = load(
            "artifact: {source: build, destination: /srv/app}\nservices:\n  api: {start: ./api}\n",
        )
        .unwrap();
        assert_eq!(pb.name, "pb");
        assert_eq!(pb.artifact.source, PathBuf::from("/pb/build"));
        assert_eq!(pb.artifact.keep_releases, 5);
        assert_eq!(pb.artifact.version, Version::ContentHash);
        assert_eq!(pb.distribution.seed_window, Duration::from_secs(30));
        assert_eq!(pb.distribution.max_peers, 64);
        let api = &pb.services[0];
        assert_eq!(api.max_parallel, 1);
        assert_eq!(api.min_healthy_time, Duration::from_secs(10));
        assert_eq!(api.health_deadline, Duration::from_secs(300));
        assert_eq!(api.failure_budget, Amount::Count(0));
        assert!(api.quorum.is_none());
    }

    #[test]
    fn amounts() {
        assert_eq!(Amount::parse("50%").unwrap().of(3), 2);
        assert_eq!(Amount::parse("2").unwrap().of(10), 2);
        assert_eq!(Amount::parse("100%").unwrap().of(7), 7);
        assert!(Amount::parse("101%").is_err());
        assert!(Amount::parse("half").is_err());
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "
artifact: {source: build, destination: srv/app, keep_releases: 1}
distribution: {seed_window: 30, upload_limit: 50MiB, piece_size: 3MiB, seed_mode: lazy}
services:
  api:
    start: ./api --data {relase}
    quorum: most
    max_parallel: 0
    depend_on: [db]
";
        assert_eq!(
            load(text).unwrap_err(),
            [
                "pb.yml:2:40: `artifact.destination` must be an absolute path without `.` or `..`, found `srv/app`",
                "pb.yml:2:64: `artifact.keep_releases` must be at least 2 (the current release and the one to roll back to), found `1`",
                "pb.yml:3:29: `distribution.seed_window`: `30` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)",
                "pb.yml:3:47: `distribution.upload_limit`: `50MiB` is not a rate (expected e.g. `50MiB/s`, `400Mbit/s`, `1Gbit/s`)",
                "pb.yml:3:66: `distribution.piece_size` must be `auto` or a power of two from 16KiB to 64MiB, found `3MiB`",
                "pb.yml:3:83: `distribution.seed_mode` must be `fixed` or `adaptive`, found `lazy`",
                "pb.yml:6:12: `services.api.start`: unknown placeholder `{relase}` (did you mean `release`?); known: {host}, {address}, {dc}, {rack}, {service}, {version}, {release}, {current}, {destination}",
                "pb.yml:7:13: `services.api.quorum`: `most` is not a count (`2`) or a percentage (`50%`)",
                "pb.yml:8:19: `services.api.max_parallel` must be at least 1",
                "pb.yml:9:5: unknown key `depend_on` in `services.api` (did you mean `depends_on`?)",
            ]
        );
    }
}
