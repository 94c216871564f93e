//! The deploy record: what a rollout has done, kept in the coordination store
//! (`deploys/<id>`) after every step, so that a run killed at any moment can be
//! resumed by running the same command again, and `rookery status` can say what
//! the last deploy did.
//!
//! A host moves `pending -> restarting -> done`, or ends `failed` (switched back to
//! its previous release), `unreachable` or `skipped` (not distributed). `restarting`
//! in a record read back means the run died during that host's switch; the resume
//! asks the host again, and the host-side switch is idempotent.

use crate::config::diagnostic::Invalid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Deploy,
    Rollout,
    Rollback,
    Reconcile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// In progress (or its run died: see `pid` and the lock).
    Running,
    /// Every selected host runs the target.
    Done,
    /// Stopped by a host beyond the failure budget, or a quorum that did not return.
    Failed,
    /// Stopped by the operator (Ctrl-C) between batches.
    Interrupted,
    /// Stopped because the coordination session was lost.
    Halted,
    /// The canaries baked clean and wait for `rookery rollout --promote`.
    Waiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Pending,
    Restarting,
    Done,
    /// Already ran the target; not restarted.
    Unchanged,
    /// Did not come up on the target; switched back to its previous release.
    Failed,
    /// Could not be reached.
    Unreachable,
    /// Left out: its copy of the release did not arrive.
    Skipped,
}

impl HostState {
    /// Nothing more to do for this host in this deploy.
    pub fn finished(self) -> bool {
        matches!(self, HostState::Done | HostState::Unchanged)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub host: String,
    /// The version to run.
    pub to: String,
    /// What it ran before (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub state: HostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds the restart took, from stop to healthy for min_healthy_time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub hosts: Vec<HostRecord>,
    /// Where the service's canary gate stands (services with canaries, once their
    /// canaries are up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryGate>,
}

/// A service's canary gate: its canaries bake, then wait for promotion (or promote
/// themselves with `auto_promote`), then the other hosts go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryGate {
    pub state: GateState,
    /// The canaries watched.
    pub hosts: Vec<String>,
    /// When the bake (last) began, in seconds since the epoch.
    pub since: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// The canaries are being watched (or were, by a run that died or was stopped:
    /// the next run bakes them again, without restarting them).
    Baking,
    /// Baked clean; waiting for `rookery rollout --promote`.
    Waiting,
    /// Promoted (by hand or `auto_promote`): the other hosts go.
    Promoted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    pub playbook: String,
    pub cluster: String,
    /// The version deployed (rollback and reconcile: per host, see `to`).
    pub version: String,
    /// `user@machine`
    pub who: String,
    pub pid: u32,
    pub started: u64,
    pub updated: u64,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Services still to roll, in order.
    pub queue: Vec<String>,
    /// A rollback's base: the deploy record whose `from` versions it returns to (so a
    /// second rollback after a partial one goes on to the same releases, not back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// In rollout order.
    pub services: Vec<ServiceRecord>,
}

impl Record {
    pub fn service_mut(&mut self, name: &str) -> Option<&mut ServiceRecord> {
        self.services.iter_mut().find(|s| s.name == name)
    }

    pub fn host_mut(&mut self, service: &str, host: &str) -> Option<&mut HostRecord> {
        self.service_mut(service)?
            .hosts
            .iter_mut()
            .find(|h| h.host == host)
    }

    pub fn host(&self, service: &str, host: &str) -> Option<&HostRecord> {
        self.services
            .iter()
            .find(|s| s.name == service)?
            .hosts
            .iter()
            .find(|h| h.host == host)
    }

    /// How many of `service`'s hosts are failed now (tried, switched back, not yet
    /// retried successfully): what its failure budget is checked against.
    pub fn failed(&self, service: &str) -> u32 {
        self.services
            .iter()
            .filter(|s| s.name == service)
            .flat_map(|s| &s.hosts)
            .filter(|h| h.state == HostState::Failed)
            .count() as u32
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serializable")
    }

    pub fn from_bytes(b: &[u8]) -> Option<Record> {
        serde_json::from_slice(b).ok()
    }

    /// Parses a record read back from the store, saying what is wrong with one that
    /// does not parse: a damaged record must be named, never read as "no deploy".
    pub fn parse(b: &[u8]) -> Result<Record, Invalid> {
        serde_json::from_slice(b).map_err(|e| {
            Invalid(if b.iter().all(u8::is_ascii_whitespace) {
                "corrupt deploy record: the file is empty".to_string()
            } else {
                format!("corrupt deploy record: {e}")
            })
        })
    }

    /// Counts of hosts by state, for a one-line summary.
    pub fn counts(&self) -> Vec<(HostState, usize)> {
        let mut out: Vec<(HostState, usize)> = Vec::new();
        for h in self.services.iter().flat_map(|s| &s.hosts) {
            match out.iter_mut().find(|(s, _)| *s == h.state) {
                Some((_, n)) => *n += 1,
                None => out.push((h.state, 1)),
            }
        }
        out
    }
}

/// What a run did to one service's hosts, as Ansible's recap counts it: `changed`
/// hosts were restarted on the target, `unchanged` already ran it, `failed` did not
/// come up on it, `skipped` and `unreachable` were left out, `pending` are still to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recap {
    pub service: String,
    pub changed: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    pub unreachable: usize,
    pub pending: usize,
    /// The failed and unreachable hosts, by name.
    pub failed_hosts: Vec<String>,
}

impl Record {
    /// One recap per service, in rollout order.
    pub fn recap(&self) -> Vec<Recap> {
        self.services
            .iter()
            .map(|svc| {
                let mut r = Recap {
                    service: svc.name.clone(),
                    ..Recap::default()
                };
                for h in &svc.hosts {
                    match h.state {
                        HostState::Done => r.changed += 1,
                        HostState::Unchanged => r.unchanged += 1,
                        HostState::Failed => r.failed += 1,
                        HostState::Skipped => r.skipped += 1,
                        HostState::Unreachable => r.unreachable += 1,
                        HostState::Pending | HostState::Restarting => r.pending += 1,
                    }
                    if matches!(h.state, HostState::Failed | HostState::Unreachable) {
                        r.failed_hosts.push(h.host.clone());
                    }
                }
                r
            })
            .collect()
    }
}

/// Checks a deploy id, written or read back (`deploys/last` names the last one):
/// ids name files and znodes in the store, so anything but a plain name
/// (`../../etc/passwd`, an empty file, binary junk) is refused, never used as a path.
pub fn check_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err("empty where a deploy id should be".into());
    }
    crate::config::inventory::check_name(id).map_err(|why| {
        let shown: String = id.chars().take(64).collect();
        Invalid(format!(
            "`{}` is not a deploy id (a deploy id {why})",
            shown.escape_default()
        ))
    })
}

/// A deploy id: sortable, readable, unique enough per cluster: `20261122T043000-<version>`.
pub fn new_id(version: &str) -> String {
    let t = crate::coordination::format_utc(crate::coordination::now());
    let compact: String = t
        .trim_end_matches(" UTC")
        .chars()
        .filter_map(|c| match c {
            '-' | ':' => None,
            ' ' => Some('T'),
            c => Some(c),
        })
        .collect();
    let short: String = version.chars().take(12).collect();
    format!("{compact}-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before the canary gate (no `canary`) still read, and a
    /// waiting one reads back waiting with its gate.
    #[test]
    fn records_without_a_canary_gate_read_and_the_gate_round_trips() {
        let old = br#"{"id": "x", "kind": "deploy", "playbook": "p", "cluster": "c", "version": "v", "who": "w", "pid": 1, "started": 0, "updated": 0, "state": "failed", "queue": ["a"], "services": [{"name": "a", "hosts": []}]}"#;
        let mut r = Record::parse(old).unwrap();
        assert!(r.services[0].canary.is_none());
        r.state = State::Waiting;
        r.services[0].canary = Some(CanaryGate {
            state: GateState::Waiting,
            hosts: vec!["h1".into()],
            since: 7,
        });
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.contains(r#""state": "waiting""#), "{text}");
        let back = Record::parse(text.as_bytes()).unwrap();
        assert_eq!(back.state, State::Waiting);
        assert_eq!(back.services[0].canary, r.services[0].canary);
    }

    #[test]
    fn ids_sort_by_time_and_name_the_version() {
        let id = new_id("0123456789abcdef");
        assert_eq!(id.len(), "20261122T043000-".len() + 12);
        assert!(id.ends_with("-0123456789ab"), "{id}");
        assert!(id.as_bytes()[8] == b'T', "{id}");
    }

    #[test]
    fn ids_read_back_are_plain_names() {
        check_id(&new_id("0123456789abcdef")).unwrap();
        assert_eq!(
            check_id("").unwrap_err(),
            "empty where a deploy id should be"
        );
        for bad in ["", "../../../etc/passwd", "a/b", "..", ".hidden", "x\0y"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_id("../x").unwrap_err(),
            "`../x` is not a deploy id (a deploy id may only contain letters, digits, `.`, `_` and `-`, and must start with a letter or digit)"
        );
    }

    #[test]
    fn a_damaged_record_says_so() {
        assert_eq!(
            Record::parse(b"").unwrap_err(),
            "corrupt deploy record: the file is empty"
        );
        assert!(
            Record::parse(b"{\"id\": \"x\", \"ki")
                .unwrap_err()
                .starts_with("corrupt deploy record: EOF while parsing"),
        );
    }
}
