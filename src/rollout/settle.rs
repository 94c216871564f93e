//! Waiting for the store: a host's live entry settling after a switch, and reads
//! retried while the store does not answer, up to a bound.

use super::*;

impl From<CoordError> for Stop {
    fn from(e: CoordError) -> Stop {
        Stop {
            state: match e {
                CoordError::SessionLost => State::Halted,
                _ => State::Failed,
            },
            message: e.to_string(),
        }
    }
}

/// Waits for the host's live entry with `version`, then requires it to stay for
/// `min_healthy`.
pub(super) async fn settle(
    store: &Store,
    service: &str,
    host: &str,
    version: &str,
    deadline: Duration,
    min_healthy: Duration,
) -> Result<(), Unsettled> {
    let is_live = |live: &[Instance]| live.iter().any(|i| i.host == host && i.version == version);
    // The host's deadlines run only while the store answers: time spent holding for
    // the store is added back, so a slow coordination server is never a slow host.
    let mut until = tokio::time::Instant::now() + deadline;
    let mut live;
    loop {
        let (l, held) = read_live(store, service).await?;
        live = l;
        until += held;
        if is_live(&live) {
            break;
        }
        tokio::select! {
            r = store.changed(service, &live) => until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(until) => {
                return Err(Unsettled::Host(format!(
                    "{service} {version} is not live on {host} after {}",
                    crate::config::units::format_duration(deadline)
                )));
            }
        }
    }
    let mut healthy_until = tokio::time::Instant::now() + min_healthy;
    loop {
        tokio::select! {
            r = store.changed(service, &live) => healthy_until += hold_after(store, r).await?,
            _ = tokio::time::sleep_until(healthy_until) => return Ok(()),
        }
        let (l, held) = read_live(store, service).await?;
        live = l;
        healthy_until += held;
        if !is_live(&live) {
            return Err(Unsettled::Host(format!(
                "{service} {version} on {host} was withdrawn (failed health checks or exited) within min_healthy_time {}",
                crate::config::units::format_duration(min_healthy)
            )));
        }
    }
}

impl From<Unsettled> for Stop {
    fn from(u: Unsettled) -> Stop {
        match u {
            Unsettled::Store(e) => Stop::from(e),
            Unsettled::Host(message) => Stop {
                state: State::Failed,
                message,
            },
        }
    }
}

/// Why a host did not settle: its own doing, or the store's.
pub(super) enum Unsettled {
    /// The host's instance did not become or stay live: the host failed.
    Host(String),
    /// The coordination session was lost: nothing can be said of the host.
    Store(CoordError),
}

/// How long the store is waited for between tries while it does not answer.
pub(super) const STORE_RETRY: Duration = Duration::from_millis(500);

/// The longest a rollout holds for a store that keeps failing while its session
/// lives (ZooKeeper's session ends a real outage sooner; this bounds errors that
/// do not go away, such as a local store's full disk).
pub(super) const STORE_HOLD_MAX: Duration = Duration::from_secs(120);

/// Reads the live instances of `service`, holding while the store does not answer
/// (a server that is slow or gone: the client moves to another one of the ensemble
/// within the session) until it does or the session is lost. Returns them and the
/// time spent holding.
pub(super) async fn read_live(
    store: &Store,
    service: &str,
) -> Result<(Vec<Instance>, Duration), Unsettled> {
    let began = tokio::time::Instant::now();
    loop {
        match store.live(service).await {
            Ok(live) => return Ok((live, began.elapsed())),
            Err(CoordError::SessionLost) => return Err(Unsettled::Store(CoordError::SessionLost)),
            Err(e) if began.elapsed() >= STORE_HOLD_MAX => return Err(Unsettled::Store(e)),
            Err(e) => {
                tracing::warn!(
                    "reading {service}'s live instances: {e}; holding until the store answers"
                );
                store.check_session().map_err(Unsettled::Store)?;
                tokio::time::sleep(STORE_RETRY).await;
            }
        }
    }
}

/// After a watch returned `r`: nothing held when it fired; on a store error, a pause
/// before the caller reads again (the time to add back), or the lost session.
pub(super) async fn hold_after(
    store: &Store,
    r: Result<(), CoordError>,
) -> Result<Duration, Unsettled> {
    match r {
        Ok(()) => Ok(Duration::ZERO),
        Err(CoordError::SessionLost) => Err(Unsettled::Store(CoordError::SessionLost)),
        Err(e) => {
            tracing::warn!("watching the live instances: {e}; holding until the store answers");
            store.check_session().map_err(Unsettled::Store)?;
            tokio::time::sleep(STORE_RETRY).await;
            Ok(STORE_RETRY)
        }
    }
}
