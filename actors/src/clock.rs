//! The one source of time for business rules. `actors` never reads the wall
//! clock itself: the engine hands it a [`SystemClock`], tests a [`ManualClock`]
//! or, with paused tokio time, a [`TokioClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use protocol::time::UnixMs;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> UnixMs;
}

pub type SharedClock = Arc<dyn Clock>;

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn new(start: UnixMs) -> Arc<Self> {
        Arc::new(ManualClock { now: AtomicI64::new(start) })
    }

    pub fn advance_ms(&self, delta: i64) {
        self.now.fetch_add(delta, Ordering::SeqCst);
    }

    /// The current reading (also available through [`Clock`]).
    pub fn now_ms_for_test(&self) -> UnixMs {
        self.now.load(Ordering::SeqCst)
    }

    pub fn set(&self, at: UnixMs) {
        self.now.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> UnixMs {
        self.now.load(Ordering::SeqCst)
    }
}

/// Unix milliseconds that follow tokio's clock from `base`: with paused tokio
/// time (`#[tokio::test(start_paused = true)]`) it moves only when the test
/// advances time, and tokio timers and this clock agree.
#[derive(Debug)]
pub struct TokioClock {
    base: UnixMs,
    started: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: UnixMs) -> Arc<Self> {
        Arc::new(TokioClock { base, started: tokio::time::Instant::now() })
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> UnixMs {
        self.base + self.started.elapsed().as_millis() as i64
    }
}
