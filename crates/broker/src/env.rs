//! The broker's environment: the one place it reads the wall clock. The
//! leader stamps this time into every proposal; the ledger never reads a
//! clock. Simulation substitutes its own implementation.

use std::sync::Arc;

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// What a broker is given instead of reaching for globals.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
}

impl Default for Env {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}
