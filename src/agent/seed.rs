//! `rookery agent seed`: an origin serving its tree read-only, in the controller or
//! on an origin host, until cancelled or for a while.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::torrent::engine;
use crate::torrent::storage::ReadOnlyFactory;

/// `rookery agent seed`: serve a tree read-only (the origin), until cancelled or for
/// `duration`. Returns the bytes uploaded, from librqbit's counters.
pub async fn serve(
    torrent: &[u8],
    root: &Path,
    opts: &engine::Options,
    duration: Option<Duration>,
    cancel: CancellationToken,
    mut on_tick: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let session_cancel = cancel.child_token();
    let session = engine::session(opts, root, session_cancel.clone()).await?;
    let handle = engine::add(
        &session,
        opts,
        torrent,
        root,
        Some(ReadOnlyFactory::boxed_factory(root)),
    )
    .await?;
    let deadline = duration.map(|d| Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let stats = handle.stats();
        if let Some(e) = stats.error {
            engine::stop_now(&session, &session_cancel).await;
            anyhow::bail!("serving {} failed: {e}", root.display());
        }
        on_tick(stats.uploaded_bytes);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let uploaded = handle.stats().uploaded_bytes;
    engine::stop_now(&session, &session_cancel).await;
    Ok(uploaded)
}
