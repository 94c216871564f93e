use arc_swap::ArcSwapOption;
use governor::DefaultDirectRateLimiter as RateLimiter;
use governor::Quota;
use librqbit_core::constants::CHUNK_SIZE;
use serde::Deserialize;
use serde::Serialize;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

#[derive(Default, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub upload_bps: Option<NonZeroU32>,
    pub download_bps: Option<NonZeroU32>,
}

/// A limit lets through at most 1 / BURST_PER_SECOND of a second of its rate at
/// once (rookery patch 10).
const BURST_PER_SECOND: u64 = 10;

// rookery patch 9: the limiter counts cells of `cell` bytes, not single bytes.
// governor replenishes a cell every whole number of nanoseconds (truncated), so with
// a cell per byte a limit of 300 MB/s allowed 333 MB/s, 600 MB/s allowed 1 GB/s and
// every limit above 1 GB/s allowed 1 GB/s.
struct Limiter {
    rl: RateLimiter,
    /// Bytes per cell: a power of two, at most CHUNK_SIZE (so a block is whole cells).
    cell: u32,
}

impl Limiter {
    fn new(bps: NonZeroU32) -> Self {
        // The smallest cell replenished in 1 us or more: truncating its period then
        // costs 0.1% at most. At u32::MAX bytes/s that is 8 KiB, so a cell never
        // exceeds CHUNK_SIZE.
        let bps = u64::from(bps.get());
        let period_ns = |cell: u32| u64::from(cell) * 1_000_000_000 / bps;
        let mut cell = 1;
        while cell < CHUNK_SIZE && period_ns(cell) < 1_000 {
            cell *= 2;
        }
        // rookery patch 10: a tenth of a second of the limit at once, not a whole
        // second (Quota::per_second's burst), and never less than a block: a request
        // takes at most CHUNK_SIZE bytes, and one larger than the burst would fail.
        let burst_bytes = (bps / BURST_PER_SECOND).max(u64::from(CHUNK_SIZE));
        let burst = NonZeroU32::new(burst_bytes.div_ceil(u64::from(cell)) as u32).unwrap();
        let quota = Quota::with_period(Duration::from_nanos(period_ns(cell)))
            .unwrap()
            .allow_burst(burst);
        Self {
            rl: RateLimiter::direct(quota),
            cell,
        }
    }

    async fn acquire(&self, size: NonZeroU32) -> crate::Result<()> {
        let cells = NonZeroU32::new(size.get().div_ceil(self.cell)).unwrap();
        self.rl.until_n_ready(cells).await?;
        Ok(())
    }
}

struct Limit {
    limiter: ArcSwapOption<Limiter>,
    current_bps: std::sync::atomic::AtomicU32,
}

impl Limit {
    fn new_inner(bps: Option<NonZeroU32>) -> Option<Arc<Limiter>> {
        let bps = bps?;
        Some(Arc::new(Limiter::new(bps)))
    }

    fn new(bps: Option<NonZeroU32>) -> Self {
        use std::sync::atomic::AtomicU32;
        Self {
            limiter: ArcSwapOption::new(Self::new_inner(bps)),
            current_bps: AtomicU32::new(bps.map(|v| v.get()).unwrap_or(0)),
        }
    }

    async fn acquire(&self, size: NonZeroU32) -> crate::Result<()> {
        let lim = self.limiter.load().clone();
        if let Some(l) = lim.as_ref() {
            l.acquire(size).await?;
        }
        Ok(())
    }

    fn set(&self, limit: Option<NonZeroU32>) {
        use std::sync::atomic::Ordering;
        let new = Self::new_inner(limit);
        self.limiter.swap(new);
        self.current_bps
            .store(limit.map(|v| v.get()).unwrap_or(0), Ordering::Relaxed);
    }

    fn get(&self) -> Option<NonZeroU32> {
        use std::sync::atomic::Ordering;
        NonZeroU32::new(self.current_bps.load(Ordering::Relaxed))
    }
}

pub struct Limits {
    down: Limit,
    up: Limit,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            down: Limit::new(config.download_bps),
            up: Limit::new(config.upload_bps),
        }
    }

    pub async fn prepare_for_upload(&self, len: NonZeroU32) -> crate::Result<()> {
        self.up.acquire(len).await
    }

    pub async fn prepare_for_download(&self, len: NonZeroU32) -> crate::Result<()> {
        self.down.acquire(len).await
    }

    pub fn set_upload_bps(&self, bps: Option<NonZeroU32>) {
        self.up.set(bps);
    }

    pub fn set_download_bps(&self, bps: Option<NonZeroU32>) {
        self.down.set(bps);
    }

    pub fn get_upload_bps(&self) -> Option<NonZeroU32> {
        self.up.get()
    }

    pub fn get_download_bps(&self) -> Option<NonZeroU32> {
        self.down.get()
    }

    pub fn get_config(&self) -> LimitsConfig {
        LimitsConfig {
            upload_bps: self.get_upload_bps(),
            download_bps: self.get_download_bps(),
        }
    }
}
