//! Header maps (`wasi:http/types.fields`: headers and trailers) a guest makes the host hold,
//! charged to its memory budget as its linear memories are: the host copies every name and
//! value a guest gives, so without this a server's guests together could make it hold far
//! more than `--max-memory`, however small their own memories.
//!
//! The `fields` functions that build, grow, shrink, copy, hand over or drop a map are
//! wrapped around wasmtime-wasi-http's own: each counts what the map holds after the call,
//! and a guest whose maps would pass its budget traps, as one whose memory would.
//!
//! An outgoing request's own strings (its method, scheme, authority, path) are copies the
//! host holds too, however often the guest reuses one buffer to set them: the constructor,
//! setters and drop of `outgoing-request` are wrapped the same way. So is what an outgoing
//! body's buffer may hold (the bytes written that hyper has not taken yet, sent or not):
//! each body a guest makes is charged the most its buffer holds, [`BODY_COST`].

use std::collections::HashMap;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi_http::p2::bindings::http::types as wit;
use wasmtime_wasi_http::p2::bindings::http::types::{Method, Scheme};
use wasmtime_wasi_http::p2::body::HostOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostOutgoingRequest, HostOutgoingResponse};
use wasmtime_wasi_http::{FieldMap, WasiHttpCtxView};

use super::Limits;

/// The instance of `wasi:http/types` wasmtime-wasi-http defines (its WIT's version); a guest
/// importing any 0.2 version is linked to it.
const TYPES: &str = "wasi:http/types@0.2.12";

/// What a map entry costs beyond its name and value: the `HeaderMap`'s entry and index, the
/// allocations' own overhead.
const ENTRY_COST: usize = 96;

/// What one write into an outgoing body may hand the host at most (wasmtime-wasi-http's
/// default is 1 MiB): the server's hooks set it, so that a body's buffer stays small.
pub(super) const BODY_CHUNK: usize = 64 << 10;

/// The chunks an outgoing body's channel holds beyond the one being written.
pub(super) const BODY_BUFFER_CHUNKS: usize = 1;

/// The most an outgoing body holds in the host before hyper takes it: its channel's chunks,
/// the one being sent, and the one being written.
const BODY_COST: usize = (BODY_BUFFER_CHUNKS + 2) * BODY_CHUNK;

/// The header maps one instance has made the host hold, in bytes.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Each live `fields` resource the guest built or changed, by its handle.
    maps: HashMap<u32, usize>,
    /// Each live `outgoing-request`'s strings, by its handle: apart from the maps, so that
    /// a handle one kind frees (a request handed to the outgoing handler leaves its handle
    /// without a drop) never releases what the other kind counted there.
    requests: HashMap<u32, usize>,
    /// Maps handed over to a request, a response or a body's trailers: held until the
    /// instance ends (they go out with what holds them).
    handed_over: usize,
}

impl Held {
    fn total(&self) -> usize {
        self.maps
            .values()
            .chain(self.requests.values())
            .fold(self.handed_over, |sum, bytes| sum.saturating_add(*bytes))
    }

    /// The counts of one kind of resource.
    fn of(&mut self, kind: Kind) -> &mut HashMap<u32, usize> {
        match kind {
            Kind::Map => &mut self.maps,
            Kind::Request => &mut self.requests,
        }
    }
}

/// The kinds of resource whose host memory is counted by handle.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A `fields` map.
    Map,
    /// An `outgoing-request`'s strings.
    Request,
}

/// What a host gives the wrappers: the wasi:http view, and the guest's budget with what its
/// maps hold.
pub(super) trait HoldsFields: Send + 'static {
    /// The view, the budget and the count, borrowed together.
    fn fields_parts(&mut self) -> (WasiHttpCtxView<'_>, &mut Limits, &mut Held);
}

/// What `map` holds in the host, roughly as the allocator sees it.
fn cost(map: &FieldMap) -> usize {
    let names: usize = map.keys().map(|k| k.as_str().len()).sum();
    let values: usize = map.values().map(|v| v.len()).sum();
    names + values + map.len().saturating_mul(ENTRY_COST)
}

/// What the strings of an outgoing request hold in the host, with the entry's overhead.
fn request_cost(request: &HostOutgoingRequest) -> usize {
    let method = match &request.method {
        Method::Other(name) => name.len(),
        _ => 0,
    };
    let scheme = match &request.scheme {
        Some(Scheme::Other(name)) => name.len(),
        _ => 0,
    };
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    ENTRY_COST
        .saturating_add(method)
        .saturating_add(scheme)
        .saturating_add(optional(&request.authority))
        .saturating_add(optional(&request.path_with_query))
}

/// The outgoing request behind handle `rep` now, in bytes (none when it is gone).
fn measure_request(view: &WasiHttpCtxView<'_>, rep: u32) -> Option<usize> {
    view.table
        .get(&Resource::<HostOutgoingRequest>::new_borrow(rep))
        .ok()
        .map(request_cost)
}

/// After a setter of the outgoing request at `rep`: its strings are counted as they are now.
fn request_changed<R>(
    view: &WasiHttpCtxView<'_>,
    limits: &mut Limits,
    held: &mut Held,
    rep: u32,
    result: wasmtime::Result<R>,
) -> wasmtime::Result<(R,)> {
    let result = result?;
    if let Some(bytes) = measure_request(view, rep) {
        settle_kind(limits, held, Kind::Request, rep, bytes)?;
    }
    Ok((result,))
}

/// The map behind handle `rep` now, in bytes (none when it is gone).
fn measure(view: &WasiHttpCtxView<'_>, rep: u32) -> Option<usize> {
    view.table
        .get(&Resource::<FieldMap>::new_borrow(rep))
        .ok()
        .map(cost)
}

/// The map at `rep` holds `bytes` now: charged to the budget, or a trap when it does not fit.
fn settle(limits: &mut Limits, held: &mut Held, rep: u32, bytes: usize) -> wasmtime::Result<()> {
    settle_kind(limits, held, Kind::Map, rep, bytes)
}

/// [`settle`] for a resource of `kind`.
fn settle_kind(
    limits: &mut Limits,
    held: &mut Held,
    kind: Kind,
    rep: u32,
    bytes: usize,
) -> wasmtime::Result<()> {
    held.of(kind).insert(rep, bytes);
    if limits.host_holds(held.total()) {
        return Ok(());
    }
    held.of(kind).remove(&rep);
    limits.host_holds(held.total());
    Err(wasmtime::format_err!(
        "the guest's header maps and outgoing requests would hold more host memory than its memory limit allows"
    ))
}

/// A new map was made at `rep`: whatever was counted there before was a map handed over
/// without being dropped (its handle is free again).
fn fresh(held: &mut Held, rep: u32) {
    fresh_kind(held, Kind::Map, rep);
}

/// [`fresh`] for a resource of `kind`.
fn fresh_kind(held: &mut Held, kind: Kind, rep: u32) {
    if let Some(old) = held.of(kind).remove(&rep) {
        held.handed_over = held.handed_over.saturating_add(old);
    }
}

/// The map at `rep` is handed over (to a request, a response, a body's trailers).
fn hand_over(held: &mut Held, rep: u32) {
    fresh(held, rep);
}

/// Wraps the `fields` functions of `linker` (wasi:http already added) with the count.
pub(super) fn add_to_linker<T: HoldsFields>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.resource(
        "fields",
        ResourceType::host::<FieldMap>(),
        |mut store: StoreContextMut<'_, T>, rep| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            held.maps.remove(&rep);
            limits.host_holds(held.total());
            wit::HostFields::drop(&mut view, Resource::new_own(rep))
        },
    )?;
    types.func_wrap(
        "[constructor]fields",
        |mut store: StoreContextMut<'_, T>, (): ()| {
            let (mut view, _, held) = store.data_mut().fields_parts();
            let fields = wit::HostFields::new(&mut view)?;
            fresh(held, fields.rep());
            Ok((fields,))
        },
    )?;
    types.func_wrap(
        "[static]fields.from-list",
        |mut store: StoreContextMut<'_, T>, (entries,): (Vec<(String, Vec<u8>)>,)| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            match wit::HostFields::from_list(&mut view, entries) {
                Ok(fields) => {
                    let rep = fields.rep();
                    fresh(held, rep);
                    let bytes = measure(&view, rep).unwrap_or(0);
                    if let Err(e) = settle(limits, held, rep, bytes) {
                        let _ = view.table.delete(fields);
                        return Err(e);
                    }
                    Ok((Ok(fields),))
                }
                Err(e) => Ok((Err(wit::Host::convert_header_error(&mut view, e)?),)),
            }
        },
    )?;
    types.func_wrap(
        "[method]fields.clone",
        |mut store: StoreContextMut<'_, T>, (this,): (Resource<FieldMap>,)| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let fields = wit::HostFields::clone(&mut view, this)?;
            let rep = fields.rep();
            fresh(held, rep);
            // Shared with its original until either changes; counted as a copy, which a
            // change makes it.
            let bytes = measure(&view, rep).unwrap_or(0);
            if let Err(e) = settle(limits, held, rep, bytes) {
                let _ = view.table.delete(fields);
                return Err(e);
            }
            Ok((fields,))
        },
    )?;
    types.func_wrap(
        "[method]fields.set",
        |mut store: StoreContextMut<'_, T>,
         (this, name, values): (Resource<FieldMap>, String, Vec<Vec<u8>>)| {
            let rep = this.rep();
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let result = wit::HostFields::set(&mut view, this, name, values);
            changed(view, limits, held, rep, result)
        },
    )?;
    types.func_wrap(
        "[method]fields.append",
        |mut store: StoreContextMut<'_, T>,
         (this, name, value): (Resource<FieldMap>, String, Vec<u8>)| {
            let rep = this.rep();
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let result = wit::HostFields::append(&mut view, this, name, value);
            changed(view, limits, held, rep, result)
        },
    )?;
    types.func_wrap(
        "[method]fields.delete",
        |mut store: StoreContextMut<'_, T>, (this, name): (Resource<FieldMap>, String)| {
            let rep = this.rep();
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let result = wit::HostFields::delete(&mut view, this, name);
            changed(view, limits, held, rep, result)
        },
    )?;
    types.func_wrap(
        "[constructor]outgoing-request",
        |mut store: StoreContextMut<'_, T>, (headers,): (Resource<FieldMap>,)| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let rep = headers.rep();
            let request: Resource<HostOutgoingRequest> =
                wit::HostOutgoingRequest::new(&mut view, headers)?;
            hand_over(held, rep);
            // Its handle may be one a request handed to the outgoing handler had.
            let request_rep = request.rep();
            fresh_kind(held, Kind::Request, request_rep);
            let bytes = measure_request(&view, request_rep).unwrap_or(0);
            settle_kind(limits, held, Kind::Request, request_rep, bytes)?;
            Ok((request,))
        },
    )?;
    types.resource(
        "outgoing-request",
        ResourceType::host::<HostOutgoingRequest>(),
        |mut store: StoreContextMut<'_, T>, rep| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            held.requests.remove(&rep);
            limits.host_holds(held.total());
            wit::HostOutgoingRequest::drop(&mut view, Resource::new_own(rep))
        },
    )?;
    // The four setters of an outgoing request: each may grow the request's strings, which
    // are counted again after the call.
    macro_rules! request_setter {
        ($($name:literal => $method:ident: $arg:ty),* $(,)?) => {$(
            types.func_wrap(
                $name,
                |mut store: StoreContextMut<'_, T>, (this, value): (Resource<HostOutgoingRequest>, $arg)| {
                    let rep = this.rep();
                    let (mut view, limits, held) = store.data_mut().fields_parts();
                    let result = wit::HostOutgoingRequest::$method(&mut view, this, value);
                    request_changed(&view, limits, held, rep, result)
                },
            )?;
        )*};
    }
    request_setter! {
        "[method]outgoing-request.set-method" => set_method: Method,
        "[method]outgoing-request.set-scheme" => set_scheme: Option<Scheme>,
        "[method]outgoing-request.set-authority" => set_authority: Option<String>,
        "[method]outgoing-request.set-path-with-query" => set_path_with_query: Option<String>,
    }
    types.func_wrap(
        "[constructor]outgoing-response",
        |mut store: StoreContextMut<'_, T>, (headers,): (Resource<FieldMap>,)| {
            let (mut view, _, held) = store.data_mut().fields_parts();
            let rep = headers.rep();
            let response: Resource<HostOutgoingResponse> =
                wit::HostOutgoingResponse::new(&mut view, headers)?;
            hand_over(held, rep);
            Ok((response,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-response.body",
        |mut store: StoreContextMut<'_, T>, (this,): (Resource<HostOutgoingResponse>,)| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let body = wit::HostOutgoingResponse::body(&mut view, this)?;
            charge_body(limits, held, body.is_ok())?;
            Ok((body,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.body",
        |mut store: StoreContextMut<'_, T>, (this,): (Resource<HostOutgoingRequest>,)| {
            let (mut view, limits, held) = store.data_mut().fields_parts();
            let body = wit::HostOutgoingRequest::body(&mut view, this)?;
            charge_body(limits, held, body.is_ok())?;
            Ok((body,))
        },
    )?;
    types.func_wrap(
        "[static]outgoing-body.finish",
        |mut store: StoreContextMut<'_, T>,
         (this, trailers): (Resource<HostOutgoingBody>, Option<Resource<FieldMap>>)| {
            let (mut view, _, held) = store.data_mut().fields_parts();
            let rep = trailers.as_ref().map(|t| t.rep());
            let result = wit::HostOutgoingBody::finish(&mut view, this, trailers);
            if let Some(rep) = rep {
                hand_over(held, rep);
            }
            match result {
                Ok(()) => Ok((Ok(()),)),
                Err(e) => Ok((Err(wit::Host::convert_error_code(&mut view, e)?),)),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// An outgoing body was made (`made`): what its buffer may hold is charged until the
/// instance ends (the body goes out with what holds it), or the guest traps.
fn charge_body(limits: &mut Limits, held: &mut Held, made: bool) -> wasmtime::Result<()> {
    if !made {
        return Ok(());
    }
    held.handed_over = held.handed_over.saturating_add(BODY_COST);
    if limits.host_holds(held.total()) {
        return Ok(());
    }
    held.handed_over = held.handed_over.saturating_sub(BODY_COST);
    limits.host_holds(held.total());
    Err(wasmtime::format_err!(
        "the guest's outgoing bodies would hold more host memory than its memory limit allows"
    ))
}

/// After a call that may have changed the map at `rep` in place: its new size is counted.
fn changed(
    mut view: WasiHttpCtxView<'_>,
    limits: &mut Limits,
    held: &mut Held,
    rep: u32,
    result: Result<(), wasmtime_wasi_http::p2::HeaderError>,
) -> wasmtime::Result<(Result<(), wit::HeaderError>,)> {
    // A call that failed changed nothing (an immutable map, a forbidden name).
    if result.is_ok()
        && let Some(bytes) = measure(&view, rep)
    {
        settle(limits, held, rep, bytes)?;
    }
    match result {
        Ok(()) => Ok((Ok(()),)),
        Err(e) => Ok((Err(wit::Host::convert_header_error(&mut view, e)?),)),
    }
}
