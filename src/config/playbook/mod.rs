//! The playbook: what to ship (the artifact), how to ship it (distribution settings)
//! and how to switch each service to it (quorum, batches, health, hooks).
//!
//! Defaults follow what operators already trust: Nomad's update stanza for restarts
//! (max_parallel 1, min_healthy_time 10s, health deadline 5m), Capistrano's
//! keep_releases 5, Murder's 64 peer connections and 30 s seed window. Every key is
//! documented in `docs/playbook.md`. Checks that need the inventory (host counts,
//! quorum) live in `config/mod.rs`.
//!
//! - this file: the playbook, `artifact`, `hooks`, and decoding the whole;
//! - `distribution.rs`: the `distribution:` section;
//! - `service.rs`: the `services:` section.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::decode::{Decoder, Map, Partial, join, resolve_path};
use crate::config::diagnostic::{Diagnostics, Pos};
use crate::config::inventory::check_name;
use crate::config::template::Template;
use crate::config::yaml::{self, Node, Value};

mod distribution;
mod service;

pub use distribution::*;
pub use service::*;

#[derive(Debug, Clone)]
pub struct Playbook {
    pub file: String,
    pub name: String,
    pub artifact: Artifact,
    pub distribution: Distribution,
    pub hooks: Hooks,
    pub rollout: Rollout,
    pub services: Vec<Service>,
}

/// The `rollout:` section: how the services of one deploy share the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// How many services roll at once, each as soon as its dependencies are done
    /// (1: one after another, in plan order).
    pub max_parallel_services: u32,
}

/// `rollout.max_parallel_services` when the playbook does not say: one service at a
/// time, as `max_parallel` is one host at a time, so a host running several services
/// never has two of them restarting at once unless the playbook asks for it.
pub const DEFAULT_MAX_PARALLEL_SERVICES: u32 = 1;

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            max_parallel_services: DEFAULT_MAX_PARALLEL_SERVICES,
        }
    }
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

/// Commands run around the distribution phase: on the controller before and after
/// it, and on each host once its copy is verified and installed (`after_fetch`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hooks {
    pub before_distribute: Vec<Template>,
    pub after_distribute: Vec<Template>,
    pub after_fetch: Vec<Template>,
}

const TOP_KEYS: &[&str] = &[
    "name",
    "artifact",
    "distribution",
    "hooks",
    "rollout",
    "services",
];
const ARTIFACT_KEYS: &[&str] = &[
    "source",
    "destination",
    "keep_releases",
    "version",
    "special_bits",
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
    let name = decode_name(d, &top, file);
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
    let hooks = decode_hooks(d, top.get("hooks"));
    let rollout = decode_rollout(d, top.get("rollout"));
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
        rollout,
        services,
    }
}

/// The `rollout:` section.
fn decode_rollout(d: &mut Decoder, node: Option<&Node>) -> Rollout {
    let Some(n) = node else {
        return Rollout::default();
    };
    let m = d.map(n, "rollout", &["max_parallel_services"]);
    let max_parallel_services = match m.get("max_parallel_services") {
        Some(n) => match d.u32(n, "rollout.max_parallel_services") {
            Some(0) => {
                d.error(n.pos, "`rollout.max_parallel_services` must be at least 1");
                1
            }
            Some(v) => v,
            None => DEFAULT_MAX_PARALLEL_SERVICES,
        },
        None => DEFAULT_MAX_PARALLEL_SERVICES,
    };
    Rollout {
        max_parallel_services,
    }
}

/// `name`, or the file name without its extension.
fn decode_name(d: &mut Decoder, top: &Map<'_>, file: &str) -> String {
    match top
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
    }
}

/// The controller's and the hosts' hooks around the distribution.
fn decode_hooks(d: &mut Decoder, node: Option<&Node>) -> Hooks {
    let Some(n) = node else {
        return Hooks::default();
    };
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

/// `artifact.destination`: absolute, clean, without its trailing `/`.
fn decode_destination(d: &mut Decoder, m: &Map<'_>, pos: Pos) -> String {
    match m.get("destination") {
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
                pos,
                "missing key `destination` in `artifact` (the root directory on every host)",
            );
            String::new()
        }
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
    let destination = decode_destination(d, &m, node.pos);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert_eq!(pb.rollout.max_parallel_services, 1);
    }

    #[test]
    fn max_parallel_services() {
        let pb = load("artifact: {source: b, destination: /srv}\nrollout: {max_parallel_services: 3}\nservices: {}\n").unwrap();
        assert_eq!(pb.rollout.max_parallel_services, 3);
        assert_eq!(
            load("artifact: {source: b, destination: /srv}\nrollout: {max_parallel_services: 0}\nservices: {}\n").unwrap_err(),
            ["pb.yml:2:34: `rollout.max_parallel_services` must be at least 1"]
        );
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

    #[test]
    fn canary_gate_and_datacenter_budget() {
        let pb = load(
            "artifact: {source: b, destination: /srv}\nservices:\n  api: {start: x, canary: 1, canary_bake: 2s, auto_promote: true, dc_budget: 1}\n  web: {start: x, canary: 2}\n",
        )
        .unwrap();
        let (api, web) = (&pb.services[0], &pb.services[1]);
        assert_eq!(api.canary_bake, Duration::from_secs(2));
        assert!(api.auto_promote);
        assert_eq!(api.dc_budget, Some(1));
        assert_eq!(web.canary_bake, DEFAULT_CANARY_BAKE);
        assert!(!web.auto_promote);
        assert_eq!(web.dc_budget, None);
        let text = "artifact: {source: b, destination: /srv}\nservices:\n  api:\n    start: x\n    canary_bake: 10\n    dc_budget: 0\n  web:\n    start: x\n    auto_promote: yes\n";
        assert_eq!(
            load(text).unwrap_err(),
            [
                "pb.yml:5:18: `services.api.canary_bake`: `10` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)",
                "pb.yml:5:18: `services.api.canary_bake` needs `canary` (at least 1): without canaries nothing bakes",
                "pb.yml:6:16: `services.api.dc_budget` must be at least 1",
                "pb.yml:9:19: `services.web.auto_promote` needs `canary` (at least 1): without canaries nothing bakes",
            ]
        );
    }
}
