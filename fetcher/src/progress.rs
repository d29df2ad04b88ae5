//! How a transfer's progress is told: the CLI draws bars with it, libraries never print.

/// Receives progress of blob transfers; the CLI draws bars with it, libraries never print.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (when known) of `digest`, `reference`'s `blob`, begins.
    fn transfer(
        &self,
        reference: &str,
        blob: Blob,
        digest: &str,
        total: Option<u64>,
    ) -> Box<dyn Transfer>;
}

/// Which blob of an artifact a transfer moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// The config document.
    Config,
    /// The wasm layer.
    Layer,
}

/// One blob transfer's progress.
pub trait Transfer: Send + Sync {
    /// The transfer stands at `bytes` (it resumed there, or restarted from 0).
    fn set_position(&self, bytes: u64);
    /// `bytes` more arrived.
    fn advance(&self, bytes: u64);
    /// The transfer ended, well or not.
    fn finish(&self);
}
