//! Bounded, jittered exponential backoff, as oras-go does it: 5 tries, 200 ms growing to 3 s.

use std::time::Duration;

use oci_client::errors::OciDistributionError;

/// How many attempts in all, the first included.
const ATTEMPTS: u32 = 5;
const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(3);

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
pub(crate) async fn with_retries<T, F, Fut>(
    what: &str,
    mut attempt: F,
) -> Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Err(e) if is_transient(&e) => match backoff.next_wait() {
                Some(wait) => {
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
