//! A guest's memory budget: all its linear memories and tables together, counted as they grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use wasmtime::ResourceLimiter;

/// `--max-memory`: one budget for all of a guest's linear memories and tables together (a
/// table element counts 8 bytes), so a guest with four memories gets no more than one with
/// one. It remembers the growth it denied so the error can say so.
#[derive(Default)]
pub(super) struct Limits {
    pub(super) max_memory: Option<usize>,
    /// Bytes of memory and table the guest holds now.
    pub(super) used: usize,
    /// Bytes the host holds for the guest now (its header maps), counted with `used`.
    pub(super) host: usize,
    pub(super) denied: Option<usize>,
    pub(super) gauge: Option<Arc<AtomicU64>>,
    /// The budget this guest shares with others (a server's instances), charged with `used`.
    pub(super) shared: Option<Charge>,
}

/// One memory budget for many guests and what the host holds for them: a server's
/// instances together, so that a container's limit holds for the container as a whole
/// however many requests it serves at once.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` from the budget, or nothing when they do not fit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes of the budget in use now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What one holder has of a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    pub(super) budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Nothing yet of `budget`.
    pub(crate) fn empty(budget: Arc<Budget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// `bytes` of `budget`, or `None` when they do not fit.
    pub(crate) fn take(budget: &Arc<Budget>, bytes: usize) -> Option<Self> {
        budget.take(bytes).then(|| Self {
            budget: budget.clone(),
            bytes,
        })
    }

    /// Holds `bytes` instead of what it held: false (holding what it held) when the budget
    /// cannot give the difference.
    fn resize(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            if !self.budget.take(bytes - self.bytes) {
                return false;
            }
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.allow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.allow(current.saturating_mul(8), desired.saturating_mul(8)))
    }
}

impl Limits {
    /// Whether one memory or table may grow from `current` to `desired` bytes, given what
    /// all the others hold; counts it when it may.
    fn allow(&mut self, current: usize, desired: usize) -> bool {
        let memories = self.used.saturating_sub(current).saturating_add(desired);
        tracing::trace!(
            current,
            desired,
            total = memories,
            host = self.host,
            limit = self.max_memory,
            "memory or table growing"
        );
        if !self.fits(memories.saturating_add(self.host)) {
            return false;
        }
        self.used = memories;
        if let Some(gauge) = &self.gauge {
            gauge.store(memories as u64, Ordering::Relaxed);
        }
        true
    }

    /// Whether the host may hold `bytes` for the guest (instead of what it held), beside
    /// its memories; counts it when it may.
    pub(super) fn host_holds(&mut self, bytes: usize) -> bool {
        if !self.fits(self.used.saturating_add(bytes)) {
            return false;
        }
        self.host = bytes;
        true
    }

    /// Whether the guest may hold `total` bytes, memories and host's together, under its own
    /// limit and the shared budget; the shared charge follows when it may.
    fn fits(&mut self, total: usize) -> bool {
        let shared_refused = match &mut self.shared {
            Some(charge) if self.max_memory.is_none_or(|limit| total <= limit) => {
                !charge.resize(total)
            }
            _ => false,
        };
        match self.max_memory {
            Some(limit) if total > limit => {
                self.denied = Some(total);
                false
            }
            _ if shared_refused => {
                self.denied = Some(total);
                false
            }
            _ => true,
        }
    }
}
