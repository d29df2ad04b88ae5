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
    /// What went wrong, in words a user reads in a retry line.
    fn cause(&self) -> String {
        self.to_string()
    }
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
                    tracing::debug!(operation = what, error = %e, "attempt failed");
                    tracing::warn!("retrying in {}: {}", seconds(wait), e.cause());
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// A wait as a person says it: `0.2 s`, `1.6 s`, `12 s`.
pub(crate) fn seconds(wait: Duration) -> String {
    let s = wait.as_secs_f64();
    if s < 10.0 {
        // Never "0.0 s": a wait is at least a tenth.
        format!("{:.1} s", (s.max(0.05) * 10.0).round() / 10.0)
    } else {
        format!("{:.0} s", s)
    }
}

/// What went wrong with a request, in words: `the registry answered 503`, `cannot connect:
/// Connection refused`, not the Debug dump of every layer in between.
pub(crate) fn in_words(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::ServerError { code, .. } => format!("the registry answered {code}"),
        OciDistributionError::RegistryError { envelope, .. } => match envelope.errors.first() {
            Some(first) => format!(
                "the registry answered: {}",
                wasm_oci_artifact::text::printable(&first.message)
            ),
            None => "the registry answered with an error".to_owned(),
        },
        OciDistributionError::RequestError(e) => {
            if let Some(status) = e.status() {
                format!("the registry answered {}", status.as_u16())
            } else if e.is_timeout() {
                "the registry did not answer in time".to_owned()
            } else if e.is_connect() {
                format!("cannot connect: {}", root_cause(e))
            } else if e.is_body() || e.is_request() {
                format!("the connection broke off: {}", root_cause(e))
            } else {
                root_cause(e)
            }
        }
        OciDistributionError::IoError(e) => root_cause(e),
        other => other.to_string(),
    }
}

/// [`in_words`] for the error a broken download carries.
pub(crate) fn io_in_words(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<OciDistributionError>())
    {
        Some(oci) => in_words(oci),
        None => format!("the connection broke off: {}", root_cause(e)),
    }
}

/// The innermost cause of `e`, without the layers that wrap it.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A number in [0, 1) that differs between processes and calls; not for cryptography.
pub(crate) fn jitter_fraction() -> f64 {
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
    fn waits_read_as_a_person_says_them() {
        let ms = Duration::from_millis;
        assert_eq!(seconds(ms(157)), "0.2 s");
        assert_eq!(seconds(ms(1)), "0.1 s");
        assert_eq!(seconds(ms(996)), "1.0 s");
        assert_eq!(seconds(ms(1_640)), "1.6 s");
        assert_eq!(seconds(ms(12_400)), "12 s");
    }

    #[test]
    fn a_server_error_reads_as_the_registrys_answer() {
        let e = OciDistributionError::ServerError {
            code: 503,
            url: "http://r/v2/".into(),
            message: "<html>busy</html>".into(),
        };
        assert_eq!(in_words(&e), "the registry answered 503");
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
