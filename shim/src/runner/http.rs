//! Serving a `wasi:http/proxy` component over HTTP/1.1: the component is linked once (a
//! `ProxyPre`), and every request gets a fresh instance from the engine's pooling allocator,
//! with its own memory cap and deadline. A request that traps or panics is answered 500 and
//! logged; the server goes on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use tokio::sync::{Semaphore, watch};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::network::HttpPolicy;
use super::{Error, Limits, Runner, TICKS_PER_SECOND};
use crate::Result;

/// How a proxy component is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Environment variables every instance sees.
    pub env: Vec<(String, String)>,
    /// Requests handled at once; more wait for a free slot.
    pub max_concurrency: usize,
    /// Wall-clock limit of one request, from instantiation to the end of its response body.
    pub timeout: Option<Duration>,
    /// Cap on one instance's linear memories and tables together, in bytes.
    pub max_memory: Option<usize>,
    /// Largest request body passed to the component; a larger one is refused with 413.
    pub max_body: u64,
    /// Where the component may send HTTP requests.
    pub outbound: HttpPolicy,
    /// How long requests in flight may take to finish after a shutdown is asked for.
    pub drain: Duration,
    /// Set to stop every request's guest at once, running wasm or not (a container's
    /// SIGKILL); needs an engine made with `EngineOptions::interruptible`.
    pub stop: Option<Arc<AtomicBool>>,
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
            stop: None,
        }
    }
}

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
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    /// Epoch ticks a request may run, when it has a timeout.
    deadline_ticks: Option<u64>,
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
        let deadline_ticks = match options.timeout {
            Some(timeout) if self.options.interruptible => {
                self.start_ticker();
                let tick = Duration::from_secs(1) / TICKS_PER_SECOND as u32;
                // One tick more, so that a deadline is never cut short by a tick that comes
                // right after the request starts.
                Some(timeout.as_nanos().div_ceil(tick.as_nanos()) as u64 + 1)
            }
            _ => None,
        };
        if options.stop.is_some() && self.options.interruptible {
            self.start_ticker();
        }
        Ok(Server {
            inner: Arc::new(Inner {
                pre,
                outbound: Arc::new(options.outbound.clone()),
                permits: Arc::new(Semaphore::new(options.max_concurrency.max(1))),
                next_id: AtomicU64::new(1),
                deadline_ticks,
                options,
            }),
        })
    }
}

impl Server {
    /// Serves HTTP/1.1 on `listener` until `shutdown` completes; then stops accepting, lets
    /// the requests in flight finish (for [`ServeOptions::drain`] at most) and returns.
    ///
    /// Call it inside a multi-threaded tokio runtime with time and I/O enabled.
    pub async fn serve(
        &self,
        listener: std::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let io = |e: std::io::Error| Error::Engine { source: e.into() };
        listener.set_nonblocking(true).map_err(io)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(io)?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors, a connection reset before accept: wait a
                            // moment instead of spinning.
                            tracing::warn!(error = %e, "accepting a connection");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(self.inner.clone(), stream, peer, stop_rx.clone()));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let in_flight = connections.len();
        tracing::info!(connections = in_flight, "shutting down: no new connections");
        let drain = self.inner.options.drain;
        let drained = tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "requests still running {drain:?} after the shutdown began; abandoning them"
            );
            connections.abort_all();
        }
        Ok(())
    }
}

/// Serves one connection's requests, one after another (HTTP/1.1 keep-alive), until the client
/// closes it or a shutdown finishes the request in flight and closes it.
async fn serve_connection(
    inner: Arc<Inner>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| inner.clone().handle(req));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
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

impl Inner {
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Infallible> {
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
            return Ok(plain(413, "request body too large\n"));
        }
        tracing::debug!(request = id, method = %req.method(), uri = %req.uri(), "request");
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Ok(plain(503, "shutting down\n"));
        };
        let req = req.map(|body| Limited::new(body, max_body as usize).map_err(body_error));
        let mut store = self.store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
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
                return Ok(plain(400, "bad request\n"));
            }
        };
        let pre = self.pre.clone();
        let timeout = self.options.timeout;
        let guest = tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            // Epoch deadlines stop a guest running wasm; this stops one waiting in a host call
            // (an outbound request, a sleep), on tokio's timer wheel.
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, run)
                    .await
                    .unwrap_or_else(|_| Err(Trap::Interrupt.into())),
                None => run.await,
            };
            let ended = match result {
                Ok(()) => Ended::Done,
                Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Ended::TimedOut,
                Err(e) => Ended::Failed(e),
            };
            match &ended {
                Ended::TimedOut => tracing::warn!(
                    request = id,
                    timeout = ?timeout.unwrap_or_default(),
                    "request ran past its timeout and was stopped"
                ),
                Ended::Failed(e) => match store.data().limits.denied {
                    Some(desired) => tracing::warn!(
                        request = id,
                        desired,
                        limit = store.data().limits.max_memory,
                        error = %format!("{e:?}"),
                        "request asked for memory over its limit and failed"
                    ),
                    None => tracing::warn!(
                        request = id,
                        trap = %e.downcast_ref::<Trap>().map_or("none".into(), Trap::to_string),
                        error = %format!("{e:?}"),
                        "request failed"
                    ),
                },
                _ => {}
            }
            ended
        });
        Ok(match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => {
                tracing::warn!(request = id, error = ?code, "the component answered with an error; answered 500");
                plain(500, "internal server error\n")
            }
            // The guest ended without answering: it trapped, timed out, panicked, or returned.
            Err(_) => match guest.await.unwrap_or(Ended::Panicked) {
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
        })
    }

    /// A store for one request: its own WASI context, resource table, memory budget and
    /// deadline.
    fn store(&self) -> Store<ProxyHost> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout()
            .inherit_stderr()
            .envs(&self.options.env);
        let host = ProxyHost {
            ctx: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: Outbound {
                policy: self.outbound.clone(),
            },
            limits: Limits {
                max_memory: self.options.max_memory,
                ..Limits::default()
            },
        };
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|h| &mut h.limits);
        match (self.options.stop.clone(), self.deadline_ticks) {
            // Checked at every tick: stopped, or out of ticks, the guest traps.
            (Some(stop), ticks) => {
                let mut left = ticks;
                store.set_epoch_deadline(1);
                store.epoch_deadline_callback(move |_| {
                    if stop.load(Ordering::SeqCst) || left.is_some_and(|l| l <= 1) {
                        return Err(Trap::Interrupt.into());
                    }
                    left = left.map(|l| l - 1);
                    Ok(wasmtime::UpdateDeadline::Continue(1))
                });
            }
            (None, Some(ticks)) => {
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
            }
            (None, None) => store.set_epoch_deadline(u64::MAX),
        }
        store
    }
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
