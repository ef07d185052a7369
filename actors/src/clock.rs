//! The one source of time for business rules. `actors` never reads the wall
//! clock itself: the engine hands it a [`SystemClock`], tests a [`ManualClock`].

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
