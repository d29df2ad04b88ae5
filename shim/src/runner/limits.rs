//! A guest's memory budget: all its linear memories and tables together, counted as they grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::ResourceLimiter;

/// `--max-memory`: one budget for all of a guest's linear memories and tables together (a
/// table element counts 8 bytes), so a guest with four memories gets no more than one with
/// one. It remembers the growth it denied so the error can say so.
#[derive(Default)]
pub(super) struct Limits {
    pub(super) max_memory: Option<usize>,
    /// Bytes of memory and table the guest holds now.
    pub(super) used: usize,
    pub(super) denied: Option<usize>,
    pub(super) gauge: Option<Arc<AtomicU64>>,
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
        let total = self.used.saturating_sub(current).saturating_add(desired);
        tracing::trace!(
            current,
            desired,
            total,
            limit = self.max_memory,
            "memory or table growing"
        );
        match self.max_memory {
            Some(limit) if total > limit => {
                self.denied = Some(total);
                false
            }
            _ => {
                self.used = total;
                if let Some(gauge) = &self.gauge {
                    gauge.store(total as u64, Ordering::Relaxed);
                }
                true
            }
        }
    }
}
