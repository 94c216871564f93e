//! `rookery agent start`: at boot, every service a switch left on this host starts
//! again from the arguments its last successful switch kept
//! (`.rookery/services/<service>.json`), on the release it ran or, with
//! `--catch-up`, on the version most of its live instances run elsewhere (asked of
//! the coordination store), when that release is here.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::agent::release::Layout;
use crate::agent::request::{StartArgs, SwitchArgs};
use crate::agent::switch::{SwitchError, io_err, run};
use crate::coordination::store::Location;

/// What `agent start` prints for each service.
#[derive(Debug, Serialize)]
pub struct Started {
    pub event: &'static str,
    pub service: String,
    pub version: String,
    pub ok: bool,
    /// `already`, `restarted` or `failed`, as for a switch.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `agent start`: starts every service a switch left on this host (at boot), on the
/// release it last ran, or with `--catch-up` on the version most of the service's
/// live instances run elsewhere, if that release is here.
pub fn start_all(a: &StartArgs) -> Result<Vec<Started>, SwitchError> {
    let layout = Layout::new(&a.destination);
    let dir = layout.logs().join("services");
    let specs = kept_specs(&dir, &a.service)?;
    let mut out = Vec::new();
    for mut spec in specs {
        let note = if a.catch_up {
            catch_up(&layout, &mut spec)
        } else {
            None
        };
        let o = run(&spec);
        out.push(Started {
            event: "start",
            service: spec.service.clone(),
            version: spec.version.clone(),
            ok: o.ok,
            action: o.action,
            note,
            error: o.error,
        });
    }
    Ok(out)
}

/// The specs kept under `dir` of `services` (all when empty), by service name.
fn kept_specs(dir: &Path, services: &[String]) -> Result<Vec<SwitchArgs>, SwitchError> {
    let mut specs: Vec<SwitchArgs> = Vec::new();
    let entries = fs::read_dir(dir).map_err(|source| SwitchError::NoServices {
        dir: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry.map_err(io_err("reading", dir))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = fs::read(&path).map_err(io_err("reading", &path))?;
        let spec: SwitchArgs =
            serde_json::from_slice(&text).map_err(|source| SwitchError::Spec { path, source })?;
        if services.is_empty() || services.contains(&spec.service) {
            specs.push(spec);
        }
    }
    for name in services {
        if !specs.iter().any(|s| &s.service == name) {
            return Err(SwitchError::NeverSwitched {
                name: name.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    specs.sort_by(|x, y| x.service.cmp(&y.service));
    Ok(specs)
}

/// `--catch-up`: moves `spec` to the version most live instances run, if it is here;
/// what was done, for the line.
fn catch_up(layout: &Layout, spec: &mut SwitchArgs) -> Option<String> {
    match popular_elsewhere(spec) {
        Ok(Some(v)) if v != spec.version => {
            if layout.release(&v).is_dir() {
                let note = format!(
                    "caught up: the live instances run {v}, this host last ran {}",
                    spec.version
                );
                spec.version = v;
                Some(note)
            } else {
                Some(format!(
                    "the live instances run {v}, which is not on this host: started {} instead; run `rookery reconcile` to bring {v} here",
                    spec.version
                ))
            }
        }
        Ok(_) => None,
        Err(e) => Some(format!(
            "could not ask the coordination store ({e}): started {}",
            spec.version
        )),
    }
}

/// The version most live instances of the service run on other hosts.
fn popular_elsewhere(spec: &SwitchArgs) -> Result<Option<String>, SwitchError> {
    use crate::coordination::Coordinator;
    let store_err = |e: &dyn std::fmt::Display| SwitchError::Store(e.to_string());
    let location =
        Location::from_args(&spec.store).map_err(|e| SwitchError::Store(format!("{e:#}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| store_err(&e))?;
    rt.block_on(async {
        let store = location
            .open(&spec.store.cluster)
            .await
            .map_err(|e| SwitchError::Store(format!("{e:#}")))?;
        let live: Vec<_> = store
            .live(&spec.service)
            .await
            .map_err(|e| store_err(&e))?
            .into_iter()
            .filter(|i| i.host != spec.host)
            .collect();
        Ok(crate::coordination::most_popular(&live))
    })
}
