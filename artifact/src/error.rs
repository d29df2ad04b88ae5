//! The errors of this crate.

/// What went wrong with an artifact's name or description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a reference.
    #[error(
        "invalid reference {reference:?}: {reason}; expected [REGISTRY/]REPOSITORY[:TAG|@DIGEST], e.g. localhost:5000/hello:v1"
    )]
    InvalidReference {
        /// What the user typed.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },
}
