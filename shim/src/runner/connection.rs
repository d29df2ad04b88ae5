//! What one client connection may hold of an HTTP server: how long it may sit idle, take to
//! send a request's head, or leave a response unread, the answer a client gets when the server is full, and an accept
//! loop that backs off, quietly, while the process is out of file descriptors.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// Where a connection is, for its deadlines.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request begun: since the connection was accepted or the last response went out.
    Idle { since: Instant },
    /// The first bytes of a request came in at `since`; its head is not complete.
    Head { since: Instant },
    /// A request is being served, from its complete head to the end of its response.
    Busy { requests: usize },
}

/// A connection's deadlines: `idle` with no request begun, `header` from a request's first
/// byte to its complete head, `write` for a client to take any byte of what is written to it
/// (see [`Watched`]). A request being served has no other here (its body and its run have
/// theirs).
///
/// A change of phase wakes nothing: a notification per request would wake the connection's
/// task (often on another worker thread) two or three times for each request, for nothing,
/// which doubled the latency of a keep-alive connection's requests. The waiter looks again at
/// the deadline it knows, or every `min(idle, header)` while it knows none (see
/// [`Clock::expired`]).
#[derive(Debug)]
pub(super) struct Clock {
    phase: Mutex<Phase>,
    idle: Duration,
    header: Duration,
    write: Duration,
}

impl Clock {
    pub(super) fn new(idle: Duration, header: Duration, write: Duration) -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
            }),
            idle,
            header,
            write,
        })
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().expect("clock lock") = phase;
    }

    /// Bytes came in: a request begins, unless one already has.
    fn read(&self) {
        let mut phase = self.phase.lock().expect("clock lock");
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    /// A request's head is complete: the connection is busy until the guard is dropped (its
    /// response sent, or abandoned).
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        let requests = match *self.phase.lock().expect("clock lock") {
            Phase::Busy { requests } => requests + 1,
            _ => 1,
        };
        self.set(Phase::Busy { requests });
        InFlight(self.clone())
    }

    /// When the connection is to be closed unless something happens first; `None` while a
    /// request is served.
    fn deadline(&self) -> Option<Instant> {
        match *self.phase.lock().expect("clock lock") {
            Phase::Idle { since } => since.checked_add(self.idle),
            Phase::Head { since } => since.checked_add(self.header),
            Phase::Busy { .. } => None,
        }
    }

    /// Waits until the connection has been idle, or has taken to send a request's head,
    /// longer than it may; returns which.
    ///
    /// Nothing tells it of a change of phase: it wakes at the deadline it knows, but never
    /// later than `min(idle, header)` from now, and looks again. A change can bring the
    /// deadline earlier only by a request's head beginning, whose deadline is `header` after
    /// the change, so at or after the next wake: no deadline passes unseen, or late.
    pub(super) async fn expired(&self) -> &'static str {
        let period = self.idle.min(self.header).max(Duration::from_millis(1));
        loop {
            let now = Instant::now();
            let next = now.checked_add(period);
            let wake = match self.deadline() {
                Some(deadline) if now >= deadline => {
                    return match *self.phase.lock().expect("clock lock") {
                        Phase::Head { .. } => "its request's head took too long",
                        _ => "it was idle too long",
                    };
                }
                Some(deadline) => next.map_or(deadline, |next| deadline.min(next)),
                None => match next {
                    Some(next) => next,
                    // No time that far: nothing to wait for but a change, looked for daily.
                    None => now + Duration::from_secs(24 * 3600),
                },
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request being served on a connection; dropping it makes the connection idle again.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut phase = self.0.phase.lock().expect("clock lock");
        *phase = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        };
    }
}

/// A client's stream that tells its [`Clock`] when bytes come in, and fails a write that
/// makes no progress for the clock's `write` time: a client that reads nothing of its
/// response does not hold its connection (its slot, its share of the memory budget, what the
/// guest wrote, the guest itself) for longer than that, whatever the phase.
pub(super) struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
    /// Armed while a write waits for the client to take bytes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, clock: Arc<Clock>) -> Self {
        Self {
            inner,
            clock,
            stalled: None,
        }
    }

    /// What a write (or flush) polled to `polled` comes to: progress disarms the stall
    /// timer, waiting arms it, and waiting past it fails the write.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let write = self.clock.write;
        let stalled = self.stalled.get_or_insert_with(|| {
            let deadline = Instant::now().checked_add(write);
            Box::pin(match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline),
                // No deadline that far: wait "for ever" (a century).
                None => tokio::time::sleep(Duration::from_secs(100 * 365 * 24 * 3600)),
            })
        });
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of its response in time",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Connections answered "overloaded" at once, at most; past that, a connection over the cap
/// is closed without an answer (each answer holds a descriptor for a moment).
pub(super) const MAX_REFUSING: usize = 64;

/// What a client over the connection cap (or the memory budget) reads before its connection
/// is closed.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Retry-After: 1\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 24\r\n\
    Connection: close\r\n\r\n\
    the server is too busy\r\n";

/// Answers 503 with `Retry-After` and closes: first the answer and our half of the
/// connection, then what the client sent is read (a little, for a second at most) so that
/// closing does not reset the connection before the client has read the answer.
pub(super) async fn refuse(mut stream: tokio::net::TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(OVERLOADED).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 << 10 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// The connection cap when none is given: this many, or three quarters of the process's
/// descriptor limit less what refusals take, whichever is lower.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How many connections fit in this process's descriptor limit, leaving a quarter of it to
/// everything else the process opens (guests' outbound connections, the log, the cache).
pub(super) fn connections_that_fit() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit / 4 * 3).saturating_sub(MAX_REFUSING).max(16)
}

/// Accepting while the process is out of descriptors (or memory): wait, longer each time up
/// to a second, and say so once per episode instead of once per attempt.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const LONGEST: Duration = Duration::from_secs(1);

    /// After a failed accept: how long to wait before the next one, `None` when the error
    /// concerns that one connection only (it was reset before it was accepted).
    pub(super) fn failed(&mut self, e: &io::Error) -> Option<Duration> {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(
                libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM
            )
        );
        if !exhausted {
            tracing::debug!(error = %e, "accepting a connection");
            return None;
        }
        if self.failures == 0 {
            tracing::warn!(
                error = %e,
                "cannot accept connections: out of file descriptors or memory; \
                 retrying with a backoff until some are free"
            );
        }
        self.failures += 1;
        let shift = u32::try_from(self.failures - 1).unwrap_or(u32::MAX).min(10);
        Some((Self::FIRST * 2u32.pow(shift)).min(Self::LONGEST))
    }

    /// After an accept that worked.
    pub(super) fn accepted(&mut self) {
        if self.failures > 0 {
            tracing::info!(failed = self.failures, "accepting connections again");
            self.failures = 0;
        }
    }
}

/// The errno values [`Backoff`] tells apart.
mod libc_errno {
    pub(super) const EMFILE: i32 = rustix::io::Errno::MFILE.raw_os_error();
    pub(super) const ENFILE: i32 = rustix::io::Errno::NFILE.raw_os_error();
    pub(super) const ENOBUFS: i32 = rustix::io::Errno::NOBUFS.raw_os_error();
    pub(super) const ENOMEM: i32 = rustix::io::Errno::NOMEM.raw_os_error();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_backs_off_to_a_second_and_resets() {
        let mut backoff = Backoff::default();
        let emfile = io::Error::from_raw_os_error(libc_errno::EMFILE);
        let waits: Vec<Duration> = (0..12).map(|_| backoff.failed(&emfile).unwrap()).collect();
        assert_eq!(waits[0], Backoff::FIRST);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), Backoff::LONGEST);
        backoff.accepted();
        assert_eq!(backoff.failed(&emfile), Some(Backoff::FIRST));
        // A connection reset before it was accepted is that connection's problem only.
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&aborted), None);
    }
}
