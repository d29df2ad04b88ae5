//! Bounded, jittered exponential backoff, as oras-go does it: 5 tries, 200 ms growing to 3 s;
//! a registry's `Retry-After` (429, 503) is honoured up to a minute.

use std::time::Duration;

use oci_client::errors::OciDistributionError;

/// How many attempts in all, the first included.
const ATTEMPTS: u32 = 5;
const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(3);
/// The longest `Retry-After` waited for; a registry asking for more gets asked again then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// An error that may pass if the request is made again.
pub(crate) trait Transient: std::fmt::Display {
    /// Worth another try.
    fn is_transient(&self) -> bool;
    /// When the server said to come back (`Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// The wait before the next try: the backoff's, or longer when the server asked for it.
pub(crate) fn wait_for(backoff_wait: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.min(MAX_RETRY_AFTER).max(backoff_wait),
        None => backoff_wait,
    }
}

/// Hands out the waits between attempts; `None` once the attempts are used up.
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { attempt: 1 }
    }

    /// The wait before the next attempt, or `None` when there is none left.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        if self.attempt >= ATTEMPTS {
            return None;
        }
        let base = FIRST.saturating_mul(1 << (self.attempt - 1)).min(MAX);
        self.attempt += 1;
        // Full jitter in [base/2, base): many clients do not retry in lockstep.
        let jitter = jitter_fraction();
        Some(base / 2 + base.mul_f64(jitter / 2.0))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the attempts run out; `what` names
/// the operation in the warnings.
pub(crate) async fn with_retries<T, E, F, Fut>(what: &str, mut attempt: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Err(e) if e.is_transient() => match backoff.next_wait() {
                Some(wait) => {
                    let wait = wait_for(wait, e.retry_after());
                    tracing::warn!(error = %e, "{what} failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Connection failures, server errors and throttling may pass; other 4xx answers will not.
pub(crate) fn is_transient(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode;
    match e {
        // A certificate that is not trusted now will not be trusted in a second either.
        OciDistributionError::RequestError(e) if crate::error::is_certificate_error(e) => false,
        OciDistributionError::RequestError(e) => {
            // `is_request` covers a pooled connection the server closed under us.
            e.is_connect()
                || e.is_timeout()
                || e.is_body()
                || e.is_request()
                || e.status()
                    .is_some_and(|s| s.is_server_error() || s.as_u16() == 429)
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// A number in [0, 1) that differs between processes and calls; not for cryptography.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let x = RandomState::new().hash_one(std::time::Instant::now());
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_lengthens_a_wait_up_to_a_minute() {
        let b = Duration::from_millis(200);
        assert_eq!(wait_for(b, None), b);
        assert_eq!(wait_for(b, Some(Duration::ZERO)), b);
        assert_eq!(
            wait_for(b, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            wait_for(b, Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn waits_grow_are_bounded_and_run_out() {
        let mut b = Backoff::new();
        let waits: Vec<_> = std::iter::from_fn(|| b.next_wait()).collect();
        assert_eq!(waits.len(), 4);
        for (w, base) in waits.iter().zip([200, 400, 800, 1600]) {
            let base = Duration::from_millis(base);
            assert!(*w >= base / 2 && *w < base, "{w:?} for {base:?}");
        }
    }
}
