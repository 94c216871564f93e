//! The deploy lock, taken for a whole deploy; a holder that is a dead run of this
//! machine is waited out rather than reported.

use super::*;

/// Takes the deploy lock. A holder that is a dead process of this same machine is
/// waited out (its ZooKeeper session expires within the session timeout) instead of
/// being reported.
pub async fn take_lock(
    store: &Store,
    config: &Config,
    deploy: &str,
    say: impl Fn(&str),
) -> anyhow::Result<<Store as Coordinator>::Lock> {
    let me = Holder::me(deploy);
    let patience = Location::of(&config.inventory).session_timeout() + Duration::from_secs(5);
    let until = Instant::now() + patience;
    let mut said = false;
    loop {
        match store.lock(&me).await {
            Ok(l) => return Ok(l),
            Err(CoordError::Locked { holder, .. })
                if holder.who == me.who
                    && holder.pid != me.pid
                    && !crate::os::alive(holder.pid)
                    && Instant::now() < until =>
            {
                if !said {
                    say(&format!(
                        "the deploy lock is held by a dead run of this machine (pid {}); waiting up to {}s for its session to expire",
                        holder.pid,
                        patience.as_secs()
                    ));
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("taking the deploy lock")),
        }
    }
}
