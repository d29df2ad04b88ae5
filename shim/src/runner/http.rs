//! Serving a `wasi:http/proxy` component over HTTP/1.1: the component is linked once (a
//! `ProxyPre`), and every request gets a fresh instance from the engine's pooling allocator,
//! with its deadline, under one memory budget for the whole server. A request that traps or
//! panics is answered 500 and logged; the server goes on.
//!
//! Nothing a client does holds the server: connections are capped (more are answered 503),
//! idle ones and slow request heads and bodies time out, and guests yield to each other at
//! every epoch tick, so a looping request neither starves the others nor outlives a shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::sync::{Semaphore, oneshot, watch};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::{HostOutgoingBody, HyperOutgoingBody, StreamContext};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::connection::{self, Backoff, Clock, InFlight, Watched};
use super::error::Result;
use super::fields::{self, Held, HoldsFields};
use super::network::HttpPolicy;
use super::{Budget, Charge, Error, Limits, Runner};

/// How a proxy component is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Environment variables every instance sees.
    pub env: Vec<(String, String)>,
    /// Requests handled at once; more wait for a free slot.
    pub max_concurrency: usize,
    /// Wall-clock limit of one request, from instantiation to the end of its response body.
    pub timeout: Option<Duration>,
    /// The server's memory budget, in bytes: every instance's linear memories and tables
    /// together, and what the host holds for each connection (its buffers and request
    /// head). One instance gets no more than the budget, and requests at once share it.
    pub max_memory: Option<usize>,
    /// Largest request body passed to the component; a larger one is refused with 413.
    pub max_body: u64,
    /// Where the component may send HTTP requests.
    pub outbound: HttpPolicy,
    /// How long requests in flight may take to finish after a shutdown is asked for.
    pub drain: Duration,
    /// How long a connection may stay open with no request begun: after it was accepted, or
    /// after its last response (keep-alive).
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's head, from its first byte.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, from when its instance starts:
    /// a slower one is answered 408 and its instance stopped.
    pub body_timeout: Duration,
    /// Connections open at once; more are answered 503 with `Retry-After` and closed. By
    /// default [`DEFAULT_MAX_CONNECTIONS`], or fewer when the process's descriptor limit
    /// would not hold them.
    pub max_connections: Option<usize>,
    /// Where every instance's standard output goes (a container's log); the process's own
    /// when `None`.
    pub stdout: Option<Arc<std::fs::File>>,
    /// Where every instance's standard error goes; the process's own when `None`.
    pub stderr: Option<Arc<std::fs::File>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            env: Vec::new(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            timeout: None,
            max_memory: None,
            max_body: DEFAULT_MAX_BODY,
            outbound: HttpPolicy::default(),
            drain: Duration::from_secs(30),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: None,
            stdout: None,
            stderr: None,
        }
    }
}

/// How long a connection may stay open with no request begun, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request's head may take to arrive, by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request's body may take to arrive, by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

pub use connection::DEFAULT_MAX_CONNECTIONS;

/// The largest request head (request line and headers) read, and the most a connection
/// buffers each way; a larger head is refused (431).
const MAX_HEAD: usize = 32 << 10;

/// Headers in one request, at most.
const MAX_HEADERS: usize = 100;

/// What the host holds for one connection, charged to the memory budget: its read and write
/// buffers and the parsed head.
const CONNECTION_COST: usize = 3 * MAX_HEAD;

/// Resources (streams, header maps, bodies, pollables) one instance may hold in the host at
/// once, and the largest header map it may build, with no memory budget (see [`HostHeld`]).
const MAX_RESOURCES: usize = 4096;
const MAX_FIELDS_SIZE: usize = 64 << 10;

/// Requests in flight at most, by default: the pooling allocator's default number of
/// instances, so that a request never fails for want of a slot.
pub const DEFAULT_MAX_CONCURRENCY: usize = 1000;

/// The default request body cap: 16 MiB.
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;

/// A proxy component linked and ready to serve.
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    pre: ProxyPre<ProxyHost>,
    options: ServeOptions,
    outbound: Arc<HttpPolicy>,
    /// Requests running at once ([`ServeOptions::max_concurrency`]); each guest holds one.
    permits: Arc<Semaphore>,
    /// The permits there are.
    max_concurrency: u32,
    /// Connections open at once.
    connections: Arc<Semaphore>,
    /// Overload answers being written at once.
    refusing: Arc<Semaphore>,
    /// Every instance's memory, and the host's per connection, when there is a limit.
    budget: Option<Arc<Budget>>,
    next_id: AtomicU64,
    /// Whether guests are checked at every epoch tick (yield, deadline, abandon).
    interruptible: bool,
    /// Set when the requests still running are given up (a kill, or the drain is over):
    /// every guest ends at its next epoch tick or host call.
    abandoned: Arc<AtomicBool>,
    abandon: watch::Sender<bool>,
}

impl Runner {
    /// Links `component` as a `wasi:http/proxy`; fails, naming what is missing, when it is not
    /// one or imports what this host does not give.
    pub fn proxy(
        &self,
        path: &Path,
        component: &Component,
        options: ServeOptions,
    ) -> Result<Server> {
        super::check_imports(path, component, &self.engine, true)?;
        let mut linker = wasmtime::component::Linker::<ProxyHost>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| fields::add_to_linker(&mut linker))
            .map_err(|source| Error::Engine { source })?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|source| Error::Link {
                path: path.to_owned(),
                source,
            })?;
        let pre = ProxyPre::new(pre).map_err(|source| Error::NotAProxy {
            path: path.to_owned(),
            source,
        })?;
        if self.options.interruptible {
            // Every guest yields at every tick, deadline or not.
            self.start_ticker();
        }
        let max_concurrency = u32::try_from(options.max_concurrency.max(1)).unwrap_or(u32::MAX);
        let fit = connection::connections_that_fit();
        let max_connections = match options.max_connections {
            Some(n) => {
                if n > fit {
                    tracing::warn!(
                        max_connections = n,
                        fit,
                        "the connection cap is above what the descriptor limit holds; \
                         accepting will pause when descriptors run out"
                    );
                }
                n.max(1)
            }
            None => DEFAULT_MAX_CONNECTIONS.min(fit),
        };
        tracing::debug!(max_connections, max_concurrency, "serving");
        let (abandon, _) = watch::channel(false);
        Ok(Server {
            inner: Arc::new(Inner {
                pre,
                outbound: Arc::new(options.outbound.clone()),
                permits: Arc::new(Semaphore::new(max_concurrency as usize)),
                max_concurrency,
                connections: Arc::new(Semaphore::new(max_connections)),
                refusing: Arc::new(Semaphore::new(connection::MAX_REFUSING)),
                budget: options.max_memory.map(Budget::new),
                next_id: AtomicU64::new(1),
                interruptible: self.options.interruptible,
                abandoned: Arc::new(AtomicBool::new(false)),
                abandon,
                options,
            }),
        })
    }
}

impl Server {
    /// Serves HTTP/1.1 on `listener` until `shutdown` completes; then stops accepting, lets
    /// the requests in flight finish (for [`ServeOptions::drain`] at most), stops those
    /// still running, and returns.
    ///
    /// Call it inside a multi-threaded tokio runtime with time and I/O enabled.
    pub async fn serve(
        &self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        self.serve_until(listener, shutdown, std::future::pending())
            .await
    }

    /// As [`Server::serve`]; when `kill` completes (before or during the drain), the
    /// requests in flight are stopped at once.
    pub async fn serve_until(
        &self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()>,
        kill: impl Future<Output = ()>,
    ) -> Result<()> {
        let io = |e: std::io::Error| Error::Engine { source: e.into() };
        listener.set_nonblocking(true).map_err(io)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        let mut backoff = Backoff::default();
        let mut paused: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut refused = 0u64;
        let mut killed = false;
        tokio::pin!(shutdown);
        tokio::pin!(kill);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                () = &mut kill => {
                    killed = true;
                    break;
                }
                () = async { paused.as_mut().expect("paused").await }, if paused.is_some() => {
                    paused = None;
                }
                accepted = listener.accept(), if paused.is_none() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            paused = backoff.failed(&e).map(|wait| Box::pin(tokio::time::sleep(wait)));
                            continue;
                        }
                    };
                    backoff.accepted();
                    let _ = stream.set_nodelay(true);
                    match self.inner.admit() {
                        Some(admitted) => {
                            if refused > 0 {
                                tracing::info!(refused, "accepting connections again after refusing some");
                                refused = 0;
                            }
                            connections.spawn(serve_connection(
                                self.inner.clone(),
                                stream,
                                peer,
                                stop_rx.clone(),
                                admitted,
                            ));
                        }
                        None => {
                            if refused == 0 {
                                tracing::warn!(
                                    connections = connections.len(),
                                    "too many connections (or no memory left for one): \
                                     answering 503 until some close"
                                );
                            }
                            refused += 1;
                            match self.inner.refusing.clone().try_acquire_owned() {
                                Ok(permit) => {
                                    tokio::spawn(async move {
                                        connection::refuse(stream).await;
                                        drop(permit);
                                    });
                                }
                                Err(_) => drop(stream),
                            }
                        }
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let in_flight = connections.len();
        tracing::info!(connections = in_flight, "shutting down: no new connections");
        let drain = self.inner.options.drain;
        let drained = !killed
            && tokio::select! {
                drained = tokio::time::timeout(drain, async {
                    while connections.join_next().await.is_some() {}
                }) => drained.is_ok(),
                () = &mut kill => false,
            };
        if !drained {
            if !killed {
                tracing::warn!(
                    connections = connections.len(),
                    "requests still running {drain:?} after the shutdown began; stopping them"
                );
            }
            connections.abort_all();
        }
        // Every guest still running ends at its next epoch tick or host call; each holds a
        // permit until its store is gone.
        self.inner.abandoned.store(true, Ordering::SeqCst);
        let _ = self.inner.abandon.send(true);
        let all = self.inner.max_concurrency;
        if tokio::time::timeout(GUESTS_END, self.inner.permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("guests still running {GUESTS_END:?} after they were stopped");
        }
        Ok(())
    }
}

/// How long stopped guests are waited for; they end at their next epoch tick (10 ms) or as
/// soon as their host call is dropped, unless a host call blocks a thread.
const GUESTS_END: Duration = Duration::from_secs(5);

/// What an admitted connection holds until it closes.
struct Admitted {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _memory: Option<Charge>,
}

/// Serves one connection's requests, one after another (HTTP/1.1 keep-alive), until the client
/// closes it, it stays idle or sends a head too slowly, or a shutdown finishes the request in
/// flight and closes it.
async fn serve_connection(
    inner: Arc<Inner>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    admitted: Admitted,
) {
    let options = &inner.options;
    // A client that takes nothing of its response for the idle timeout is gone as much as
    // one that sends nothing: its connection is closed, and its guest with it.
    let clock = Clock::new(
        options.idle_timeout,
        options.header_timeout,
        options.idle_timeout,
    );
    // A connection's requests run one after another: the next one's instance starts once
    // the last one's is gone, so that they never hold the memory budget together.
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let service = {
        let (inner, clock) = (inner.clone(), clock.clone());
        hyper::service::service_fn(move |req| {
            let in_flight = clock.begin();
            inner.clone().handle(req, in_flight, turn.clone())
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        // hyper's own header timer runs from the moment a connection waits for a request:
        // a backstop for the clock's two.
        .header_read_timeout(options.idle_timeout.saturating_add(options.header_timeout))
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    let connection =
        builder.serve_connection(TokioIo::new(Watched::new(stream, clock.clone())), service);
    tokio::pin!(connection);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            why = clock.expired() => {
                tracing::debug!(%peer, why, "closing a connection");
                break Ok(());
            }
        }
    };
    drop(admitted);
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// How a request's guest ended.
enum Ended {
    Done,
    TimedOut,
    Failed(wasmtime::Error),
    Panicked,
}

/// A response on its way out; the connection is busy until it is sent (or dropped).
struct Answer {
    body: HyperOutgoingBody,
    /// The guest that writes the body, for the guest's answers (none for our own).
    guest: Option<Writer>,
    /// The body's last frame went out.
    sent: bool,
    _in_flight: InFlight,
}

/// The guest behind a response body.
struct Writer {
    /// Where the guest is: [`RUNNING`], [`RETURNED`] or [`STOPPED`].
    state: Arc<AtomicU8>,
    /// Ends the guest, when its response is given up before it was sent.
    abort: tokio::task::AbortHandle,
}

/// The guest is running.
const RUNNING: u8 = 0;
/// The guest returned from its handler.
const RETURNED: u8 = 1;
/// The guest was stopped (its timeout, a trap, a kill, its response given up).
const STOPPED: u8 = 2;

/// Marks its guest [`STOPPED`] when dropped before it returned: held by the guest's task
/// and dropped before its store (and so before its response body's end is seen).
struct Running(Arc<AtomicU8>);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(RUNNING, STOPPED, Ordering::SeqCst, Ordering::SeqCst);
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        // A response given up before it was sent (the client went away, or took nothing of
        // it in time) ends its guest, and frees its slot, whatever its timeout.
        if !self.sent
            && let Some(guest) = &self.guest
        {
            guest.abort.abort();
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = <HyperOutgoingBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match polled {
            // The body also ends when the guest's store is dropped, finished or not: a guest
            // that was stopped did not finish it, and its response must not look complete
            // (hyper breaks the connection off instead of ending the body).
            Poll::Ready(None)
                if this
                    .guest
                    .as_ref()
                    .is_some_and(|g| g.state.load(Ordering::SeqCst) == STOPPED) =>
            {
                this.sent = true;
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                    "the component was stopped before its response was complete".into(),
                )))))
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.sent = true;
                polled
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that must arrive within a deadline; when it does not, it ends with
/// [`BodyTimedOut`] and says so on `timed_out`.
struct Deadlined<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Option<oneshot::Sender<()>>,
    done: bool,
}

impl<B> Body for Deadlined<B>
where
    B: Body<Data = Bytes, Error = Box<dyn std::error::Error + Send + Sync>> + Unpin,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.done {
            return polled;
        }
        match polled {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                this.done = true;
                if let Some(tx) = this.timed_out.take() {
                    let _ = tx.send(());
                }
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that did not arrive within [`ServeOptions::body_timeout`].
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl Inner {
    /// A slot and the host's memory for a new connection, or `None` when it is to be refused.
    fn admit(&self) -> Option<Admitted> {
        let slot = self.connections.clone().try_acquire_owned().ok()?;
        let memory = match &self.budget {
            Some(budget) => Some(Charge::take(budget, CONNECTION_COST)?),
            None => None,
        };
        Some(Admitted {
            _slot: slot,
            _memory: memory,
        })
    }

    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        in_flight: InFlight,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<hyper::Response<Answer>, Infallible> {
        let (response, guest) = self.answer(req, turn).await;
        Ok(response.map(|body| Answer {
            body,
            guest,
            sent: false,
            _in_flight: in_flight,
        }))
    }

    async fn answer(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> (hyper::Response<HyperOutgoingBody>, Option<Writer>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let max_body = self.options.max_body;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            tracing::warn!(
                request = id,
                limit = max_body,
                "request body too large; answered 413"
            );
            return (plain(413, "request body too large\n"), None);
        }
        tracing::debug!(request = id, method = %req.method(), uri = %req.uri(), "request");
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return (plain(503, "shutting down\n"), None);
        };
        let turn = turn.lock_owned().await;
        // The body's deadline runs from here: time spent waiting for a slot is not the
        // client's.
        let (timed_out_tx, timed_out) = oneshot::channel();
        let body_timeout = self.options.body_timeout;
        let req = req.map(|body| {
            Deadlined {
                inner: Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX)),
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
                timed_out: Some(timed_out_tx),
                done: false,
            }
            .map_err(body_error)
        });
        let mut store = self.store();
        let (sender, receiver) = oneshot::channel();
        let handles = (|| {
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, req)?;
            let out = http.new_response_outparam(sender)?;
            wasmtime::Result::<_>::Ok((req, out))
        })();
        let (req, out) = match handles {
            Ok(handles) => handles,
            Err(e) => {
                tracing::warn!(request = id, error = %format!("{e:#}"), "bad request; answered 400");
                return (plain(400, "bad request\n"), None);
            }
        };
        let pre = self.pre.clone();
        let timeout = self.options.timeout;
        let mut abandon = self.abandon.subscribe();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let running = Running(state.clone());
        let mut guest = tokio::spawn(async move {
            let _permit = permit;
            let _turn = turn;
            let mut store = store;
            // Dropped before the store, however the task ends (even aborted).
            let running = running;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            // Epoch deadlines stop a guest running wasm; this stops one waiting in a host call
            // (an outbound request, a sleep), on tokio's timer wheel, or when the server gives
            // its requests up.
            let run = async {
                tokio::select! {
                    result = run => result,
                    _ = abandon.wait_for(|a| *a) => Err(Trap::Interrupt.into()),
                }
            };
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, run)
                    .await
                    .unwrap_or_else(|_| Err(Trap::Interrupt.into())),
                None => run.await,
            };
            let ended = match result {
                Ok(()) => {
                    running.0.store(RETURNED, Ordering::SeqCst);
                    Ended::Done
                }
                Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Ended::TimedOut,
                Err(e) => Ended::Failed(e),
            };
            let limits = &store.data().limits;
            match &ended {
                Ended::TimedOut => tracing::warn!(
                    request = id,
                    timeout = ?timeout.unwrap_or_default(),
                    "request ran past its timeout, or the server stopped it"
                ),
                Ended::Failed(e) => match limits.denied {
                    Some(desired) => tracing::warn!(
                        request = id,
                        desired,
                        limit = limits.max_memory,
                        shared = limits.shared.as_ref().map(|c| c.budget.used()),
                        error = %format!("{e:#}"),
                        "request asked for memory over its limit and failed"
                    ),
                    None => tracing::warn!(
                        request = id,
                        trap = %e.downcast_ref::<Trap>().map_or("none".into(), Trap::to_string),
                        error = %format!("{e:#}"),
                        "request failed"
                    ),
                },
                _ => {}
            }
            // A body the guest neither finished nor dropped is not complete: it ends as an
            // aborted one, not as the end its store's drop would look like.
            abort_unfinished(&mut store.data_mut().table);
            drop(running);
            drop(store);
            ended
        });
        let response = tokio::select! {
            // A body that timed out is the answer, whatever the guest made of its error.
            biased;
            Ok(()) = timed_out => {
                guest.abort();
                tracing::warn!(
                    request = id,
                    timeout = ?body_timeout,
                    "the request body did not arrive in time; answered 408"
                );
                let mut response = plain(408, "the request body took too long\n");
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                response
            }
            answered = receiver => match answered {
                Ok(Ok(response)) => {
                    let writer = Writer {
                        state,
                        abort: guest.abort_handle(),
                    };
                    return (response, Some(writer));
                }
                Ok(Err(code)) => {
                    tracing::warn!(request = id, error = ?code, "the component answered with an error; answered 500");
                    plain(500, "internal server error\n")
                }
                // The guest ended without answering: it trapped, timed out, panicked, or
                // returned.
                Err(_) => match (&mut guest).await.unwrap_or(Ended::Panicked) {
                    Ended::TimedOut => plain(504, "the request timed out\n"),
                    Ended::Panicked => {
                        tracing::error!(request = id, "request panicked; answered 500");
                        plain(500, "internal server error\n")
                    }
                    Ended::Done => {
                        tracing::warn!(
                            request = id,
                            "the component returned without a response; answered 500"
                        );
                        plain(500, "internal server error\n")
                    }
                    Ended::Failed(_) => plain(500, "internal server error\n"),
                },
            },
        };
        (response, None)
    }

    /// A store for one request: its own WASI context and resource table, a share of the
    /// server's memory budget, and an epoch callback that yields to other requests at every
    /// tick and stops this one at its deadline or when the server gives it up.
    fn store(&self) -> Store<ProxyHost> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout()
            .inherit_stderr()
            .envs(&self.options.env)
            .max_random_size(max_random(self.options.max_memory));
        let output = |file: &Option<Arc<std::fs::File>>| {
            let file = file.as_ref()?;
            match file.try_clone() {
                Ok(file) => Some(wasmtime_wasi::cli::OutputFile::new(file)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand the guest its output; it is dropped");
                    None
                }
            }
        };
        if let Some(out) = output(&self.options.stdout) {
            wasi.stdout(out);
        }
        if let Some(err) = output(&self.options.stderr) {
            wasi.stderr(err);
        }
        let mut table = ResourceTable::new();
        let held = HostHeld::under(self.options.max_memory);
        table.set_max_capacity(held.resources);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(held.fields_size);
        let host = ProxyHost {
            ctx: wasi.build(),
            http,
            table,
            hooks: Outbound {
                policy: self.outbound.clone(),
            },
            limits: Limits {
                max_memory: self.options.max_memory,
                shared: self.budget.clone().map(Charge::empty),
                ..Limits::default()
            },
            held: Held::default(),
        };
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|h| &mut h.limits);
        if self.interruptible {
            let deadline = self
                .options
                .timeout
                .and_then(|t| Instant::now().checked_add(t));
            let abandoned = self.abandoned.clone();
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if abandoned.load(Ordering::Relaxed)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return Err(Trap::Interrupt.into());
                }
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            });
        }
        store
    }
}

/// Aborts every outgoing body (the response's, an outbound request's) still in `table`, once
/// its guest is done: its store's drop would end it as if the guest had called `finish`, and
/// a client would take a response cut short for a whole one. Aborted, its chunked encoding
/// gets no last chunk, a declared length is never reached, and the connection is closed,
/// as for a body the guest dropped unfinished.
fn abort_unfinished(table: &mut ResourceTable) {
    for entry in table.iter_mut() {
        if let Some(body) = entry.downcast_mut::<HostOutgoingBody>() {
            let (stand_in, _) = HostOutgoingBody::new(StreamContext::Response, None, 1, 1);
            std::mem::replace(body, stand_in).abort();
        }
    }
}

/// What one instance may make the host hold in resources: header maps are the largest (the
/// host copies every name and value a guest gives), so the resource cap times the largest
/// header map is what a guest can make the host allocate. Under a memory budget the resource
/// cap shrinks with the budget so that this stays within half of it (64 resources at the
/// least: half of an 8 MiB budget); without one, 4096 resources. Header maps stay at 64 KiB.
/// What the maps hold is also charged to the budget as they are made (see the fields
/// module), so that the server's guests together stay within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostHeld {
    resources: usize,
    fields_size: usize,
}

impl HostHeld {
    const LEAST_RESOURCES: usize = 64;

    fn under(max_memory: Option<usize>) -> Self {
        let Some(budget) = max_memory else {
            return Self {
                resources: MAX_RESOURCES,
                fields_size: MAX_FIELDS_SIZE,
            };
        };
        let resources = (budget / 2 / MAX_FIELDS_SIZE).clamp(Self::LEAST_RESOURCES, MAX_RESOURCES);
        Self {
            resources,
            fields_size: MAX_FIELDS_SIZE,
        }
    }
}

/// The most random bytes one `get-random-bytes` call may ask the host for: the host makes
/// them before the guest's memory is asked for room, so a call may take an eighth of the
/// memory budget, and 1 MiB at most (a call asking for more traps).
fn max_random(max_memory: Option<usize>) -> u64 {
    const MOST: u64 = 1 << 20;
    max_memory.map_or(MOST, |m| u64::try_from(m / 8).unwrap_or(u64::MAX).min(MOST))
}

/// A short plain-text answer of our own.
fn plain(status: u16, body: &'static str) -> hyper::Response<HyperOutgoingBody> {
    let mut response = hyper::Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What the component reads when the request body breaks off or passes the cap.
fn body_error(e: Box<dyn std::error::Error + Send + Sync>) -> wasmtime_wasi_http::Error {
    if e.is::<http_body_util::LengthLimitError>() {
        return wasmtime_wasi_http::Error::HttpRequestBodySize(None);
    }
    if e.is::<BodyTimedOut>() {
        return wasmtime_wasi_http::Error::ConnectionReadTimeout;
    }
    match e.downcast::<hyper::Error>() {
        Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
        Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
    }
}

struct ProxyHost {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outbound,
    limits: Limits,
    /// The header maps the guest made the host hold, charged to `limits`.
    held: Held,
}

impl HoldsFields for ProxyHost {
    fn fields_parts(&mut self) -> (WasiHttpCtxView<'_>, &mut Limits, &mut Held) {
        (
            WasiHttpCtxView {
                ctx: &mut self.http,
                table: &mut self.table,
                hooks: &mut self.hooks,
            },
            &mut self.limits,
            &mut self.held,
        )
    }
}

impl WasiView for ProxyHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ProxyHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// `wasi:http/outgoing-handler`, behind the `--allow-http` rules.
struct Outbound {
    policy: Arc<HttpPolicy>,
}

type Io = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

impl WasiHttpHooks for Outbound {
    // Small chunks: what a body's buffer holds is charged to the guest (see the fields
    // module), and a 1 MiB chunk would make every response cost megabytes of the budget.
    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        fields::BODY_CHUNK
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        fields::BODY_BUFFER_CHUNKS
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Io,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, Io)>> + Send>
    {
        drop(fut);
        let uri = request.uri();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        let allowed = uri
            .host()
            .is_some_and(|host| self.policy.allows(host, uri.port_u16(), default_port));
        if !allowed {
            tracing::warn!(
                authority = %uri.authority().map(|a| a.as_str()).unwrap_or(""),
                "outbound HTTP request denied (allow it with --allow-http HOST[:PORT])"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_guest_makes_the_host_hold_stays_within_half_of_its_budget() {
        for mib in [8usize, 24, 64, 256, 1024, 4096] {
            let budget = mib << 20;
            let held = HostHeld::under(Some(budget));
            assert!(
                held.resources * held.fields_size <= budget / 2,
                "{mib} MiB: {held:?}"
            );
        }
        let unlimited = HostHeld::under(None);
        assert_eq!(unlimited.resources, MAX_RESOURCES);
        assert_eq!(unlimited.fields_size, MAX_FIELDS_SIZE);
    }
}
