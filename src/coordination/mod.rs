//! The cluster's shared state, behind one small trait with two implementations:
//! ZooKeeper ([`crate::coordination::zookeeper`]) for real clusters and a directory of flock-held
//! files ([`crate::coordination::local_store`]) for the embedded default.
//!
//! What lives there (see `docs/coordination.md`):
//!
//! - `current/<service>/<host>`: a *live* entry, present only while the supervisor of
//!   that instance runs and the instance is healthy (a ZooKeeper ephemeral node; a
//!   locked file locally). Its data: version and release path. It vanishes with the
//!   process that holds it, which is how liveness reaches the rollout.
//! - `staging/<service>/<host>`: the version a host has verified and may switch to.
//! - `deploys/<id>`: the deploy record, and `deploys/last`, the id of the latest one.
//! - the deploy lock: one deploy per cluster at a time; held by a session, so a dead
//!   run does not hold it forever.

pub mod local_store;
pub mod record;
pub mod store;
pub mod zookeeper;

use std::future::Future;

use serde::{Deserialize, Serialize};

/// What a live entry says about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub host: String,
    pub version: String,
    /// The release directory the instance runs from.
    pub release: String,
}

/// Who holds the deploy lock, as other operators are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `user@machine`
    pub who: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// The deploy id, when the lock is held by a deploy.
    pub deploy: String,
}

/// The name of the effective user in the password database.
/// This machine's name, as `hostname` prints it (gethostname(3): Linux and macOS).
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`, owned here.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn passwd_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes into `pw` and `buf`, both owned here and large enough
    // (ERANGE otherwise); `found` is null or points at `pw`.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || pw.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

impl Holder {
    /// This process, now.
    pub fn me(deploy: &str) -> Holder {
        // The login name as the system knows it (cron and CI jobs have no $USER).
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(passwd_name)
            .unwrap_or_else(|| "unknown".into());
        let machine = host_name().unwrap_or_else(|| "unknown".into());
        Holder {
            who: format!("{user}@{machine}"),
            pid: std::process::id(),
            since: now(),
            deploy: deploy.to_string(),
        }
    }

    /// `alice@laptop (pid 4242, deploy d-1) since 2026-11-22 04:30:00 UTC`
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, deploy {}) since {}",
            self.who,
            self.pid,
            self.deploy,
            format_utc(self.since)
        )
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS UTC` without a date library (civil-from-days, H. Hinnant).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("another deploy holds the lock of cluster `{cluster}`: {}", holder.describe())]
    Locked { cluster: String, holder: Holder },
    #[error("the coordination session was lost (expired or closed); stopping safely")]
    SessionLost,
    #[error("{what}: {message}")]
    Store { what: String, message: String },
}

impl CoordError {
    pub fn store(what: impl Into<String>, e: impl std::fmt::Display) -> CoordError {
        CoordError::Store {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, CoordError>;

/// The coordination store of one cluster.
pub trait Coordinator: Send + Sync + 'static {
    /// Held while a deploy runs; released on drop or when the process dies.
    type Lock: Send + Sync + 'static;
    /// A live entry, removed on drop or when the process dies.
    type Live: Send + 'static;

    /// Takes the deploy lock, or says who holds it.
    fn lock(&self, holder: &Holder) -> impl Future<Output = Result<Self::Lock>> + Send;

    /// Announces a live, healthy instance of `service`.
    fn register(
        &self,
        service: &str,
        instance: &Instance,
    ) -> impl Future<Output = Result<Self::Live>> + Send;

    /// Removes a live entry now and waits until it is gone (dropping it removes it
    /// too, but in the background, which a process about to exit cannot wait for).
    fn withdraw(&self, live: Self::Live) -> impl Future<Output = ()> + Send;

    /// Releases the deploy lock now and waits until it is released (dropping the
    /// lock releases it too, but in the background: a process about to exit would
    /// leave it to its session's expiry, and the next deploy would wait for that).
    fn unlock(&self, lock: Self::Lock) -> impl Future<Output = ()> + Send;

    /// Who holds the deploy lock, if anyone.
    fn holder(&self) -> impl Future<Output = Result<Option<Holder>>> + Send;

    /// Services with live or staged entries.
    fn services(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The live instances of `service`.
    fn live(&self, service: &str) -> impl Future<Output = Result<Vec<Instance>>> + Send;

    /// Resolves when the live set of `service` may differ from `since` (what the
    /// caller last read with [`live`](Self::live)), at once if it already does: a
    /// change between that read and this call is not lost. Call `live` again after.
    fn changed(&self, service: &str, since: &[Instance])
    -> impl Future<Output = Result<()>> + Send;

    fn set_staging(
        &self,
        service: &str,
        host: &str,
        version: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    fn clear_staging(&self, service: &str, host: &str) -> impl Future<Output = Result<()>> + Send;

    /// `(host, version)` staged for `service`.
    fn staging(&self, service: &str) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;

    /// Writes the deploy record `id` (JSON) and makes it the last deploy.
    fn put_deploy(&self, id: &str, record: &[u8]) -> impl Future<Output = Result<()>> + Send;

    /// The last deploy's id and record.
    fn last_deploy(&self) -> impl Future<Output = Result<Option<(String, Vec<u8>)>>> + Send;

    /// The deploy record `id`, if there is one.
    fn get_deploy(&self, id: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Fails once the session is gone (ZooKeeper expiry); the local store never fails.
    fn check_session(&self) -> Result<()>;
}

/// The version `reconcile` brings a service's other hosts to: the one most live
/// instances run; a tie goes to the newest deployed version, else to the lexically
/// greatest (so the answer is stable). Hosts live on the newest deployed version are
/// never moved from it (the rollout's choice of work).
pub fn reconcile_target(live: &[Instance], newest: Option<&str>) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for i in live {
        *counts.entry(&i.version).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(v, n)| (*n, Some(*v) == newest, *v))
        .map(|(v, _)| v.to_string())
}

/// The version most live instances run (ties: the lexically greatest, so the
/// answer is stable).
pub fn most_popular(live: &[Instance]) -> Option<String> {
    reconcile_target(live, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock holder's machine is the name `hostname` prints (through
    /// gethostname(3), which macOS has too, not Linux's /proc).
    #[test]
    fn the_machine_is_named_as_hostname_names_it() {
        let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(host_name().as_deref(), Some(proc.trim()));
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_315_800), "2026-11-22 02:50:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    fn i(host: &str, v: &str) -> Instance {
        Instance {
            host: host.into(),
            version: v.into(),
            release: String::new(),
        }
    }

    #[test]
    fn a_tie_goes_to_the_newest_deployed_version() {
        let tie = [i("a", "v1"), i("b", "v1"), i("c", "v0"), i("d", "v0")];
        assert_eq!(reconcile_target(&tie, Some("v0")).as_deref(), Some("v0"));
        assert_eq!(reconcile_target(&tie, None).as_deref(), Some("v1"));
        // A majority still wins over the newest.
        let most = [i("a", "v1"), i("b", "v1"), i("c", "v0")];
        assert_eq!(reconcile_target(&most, Some("v0")).as_deref(), Some("v1"));
    }

    #[test]
    fn the_most_popular_version_wins_and_ties_are_stable() {
        assert_eq!(most_popular(&[]), None);
        let live = [i("a", "v1"), i("b", "v2"), i("c", "v2")];
        assert_eq!(most_popular(&live).as_deref(), Some("v2"));
        let tie = [i("a", "v1"), i("b", "v2")];
        assert_eq!(most_popular(&tie).as_deref(), Some("v2"));
    }
}
