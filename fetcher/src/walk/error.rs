//! What can be wrong on the way from an index to its image manifest: a leaf, so that every
//! room's error can hold it.

/// Why the manifest an index entry names is not the image it should lead to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalkError {
    /// The manifest is not the size the index says.
    #[error("its index entry {digest} says {says} bytes, but that manifest is {is} bytes")]
    EntrySize {
        /// The manifest's digest (escaped).
        digest: String,
        /// The size the index says.
        says: i64,
        /// The manifest's size.
        is: usize,
    },
    /// The entry is an index itself.
    #[error("an image index points to another index; nested indexes are not followed")]
    Nested,
}
