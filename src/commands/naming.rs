//! Context for an error, given once: the fetcher's and the runner's errors already name what
//! they are about.

/// Context for an error, given only when the error does not already name what it is about:
/// the fetcher's and the runner's errors name the reference or the file, and a line that
/// says it twice reads as two failures.
pub(super) trait Naming<T> {
    /// `what` as context, unless the error's text holds one of `subjects`.
    fn naming(self, subjects: &[&str], what: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Naming<T> for Result<T, E> {
    fn naming(self, subjects: &[&str], what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e = e.into();
            let text = format!("{e:#}");
            if subjects.iter().any(|s| !s.is_empty() && text.contains(s)) {
                e
            } else {
                e.context(what())
            }
        })
    }
}
