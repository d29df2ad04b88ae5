//! What containerd writes on the stdin of `containerd-shim-wasmoci-v1 start`, and what the
//! shim answers on stdout. Two protocols are spoken, and the request says which:
//!
//! - containerd 2.3 and later send a `BootstrapParams` message (containerd's
//!   `api/runtime/bootstrap/v1/bootstrap.proto`) and read back a `BootstrapResult`;
//! - containerd up to 2.2 send the runtime options as a bare `google.protobuf.Any` (or
//!   nothing), with the identity on the command line, and read back the socket address.
//!
//! The two cannot be told apart by decoding alone: an `Any`'s `type_url` (field 1) and `value`
//! (field 2) decode as a `BootstrapParams`' `instance_id` and `namespace`. So a request is the
//! new protocol when the identity it carries is the one the command line names, as containerd's
//! own `pkg/shim` decides.

use prost::Message;

/// The most containerd may write on stdin: containerd's own shims read at most 10 MiB.
pub(crate) const MAX_INPUT: u64 = 10 << 20;

/// The type of runc's options (`containerd.runc.v1.Options`), the one options message whose
/// `shim_cgroup` a shim honours; the type URL of an `Any` may carry a prefix up to a `/`.
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// The task API version this shim serves (ttrpc `containerd.task.v2.Task`), as
/// `BootstrapResult.version` tells containerd which client to use.
pub(crate) const TASK_API_VERSION: i32 = 2;

/// `BootstrapParams` (bootstrap.proto, package `containerd.runtime.bootstrap.v1`), field for
/// field with the numbers of the .proto.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct BootstrapParams {
    /// `string instance_id = 1`: the container's (or sandbox's) id.
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// `string namespace = 2`.
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// `LogLevel log_level = 3`: an open enum, INFO = 0, DEBUG = -4, TRACE = -8.
    #[prost(int32, tag = "3")]
    pub log_level: i32,
    /// `string containerd_version = 4`.
    #[prost(string, tag = "4")]
    pub containerd_version: String,
    /// `string containerd_ttrpc_address = 5`: where events are published.
    #[prost(string, tag = "5")]
    pub containerd_ttrpc_address: String,
    /// `string containerd_grpc_address = 6`.
    #[prost(string, tag = "6")]
    pub containerd_grpc_address: String,
    /// `string containerd_binary = 7`.
    #[prost(string, tag = "7")]
    pub containerd_binary: String,
    /// `repeated Extension extensions = 8`: the runtime options among them.
    #[prost(message, repeated, tag = "8")]
    pub extensions: Vec<Extension>,
    /// `optional string socket_dir = 9`: where the shim's socket goes (else
    /// `/run/containerd/s`).
    #[prost(string, optional, tag = "9")]
    pub socket_dir: Option<String>,
}

/// `Extension` (bootstrap.proto): `google.protobuf.Any value = 1`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Extension {
    #[prost(message, optional, tag = "1")]
    pub value: Option<Any>,
}

/// `google.protobuf.Any`: `string type_url = 1`, `bytes value = 2`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// runc's `Options` (containerd's `api/types/runc/options/oci.proto`): only
/// `string shim_cgroup = 3` concerns a shim's start; the other fields are skipped.
#[derive(Clone, PartialEq, Message)]
struct RuncOptions {
    #[prost(string, tag = "3")]
    shim_cgroup: String,
}

/// `BootstrapResult` (bootstrap.proto): `int32 version = 1`, `string address = 2`,
/// `string protocol = 3` (`repeated Capability capabilities = 4` and
/// `map<string, string> metadata = 5` stay empty).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct BootstrapResult {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(string, tag = "2")]
    pub address: String,
    #[prost(string, tag = "3")]
    pub protocol: String,
}

/// Why a `start` request cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BootstrapError {
    /// stdin is neither a `BootstrapParams` for this container nor runtime options.
    #[error(
        "containerd sent {bytes} bytes on stdin that are neither bootstrap parameters for \
         container {id:?} nor runtime options: {cause}"
    )]
    Unreadable {
        /// How much was sent.
        bytes: usize,
        /// The container the command line names.
        id: String,
        /// Why it does not decode as runtime options.
        cause: prost::DecodeError,
    },
    /// The runtime options are runc's but do not decode.
    #[error("the runtime options ({RUNC_OPTIONS}) do not decode: {0}")]
    RuncOptions(prost::DecodeError),
    /// A bootstrap request names neither a container nor a namespace.
    #[error("the bootstrap parameters name no {0}")]
    Missing(&'static str),
}

/// What a `start` was asked, in either protocol.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StartRequest {
    /// containerd 2.3+: everything is in the parameters.
    Bootstrap(BootstrapParams),
    /// containerd up to 2.2: the runtime options, if any; the rest is on the command line and
    /// in the environment.
    Legacy(Option<Any>),
}

impl StartRequest {
    /// Reads what containerd wrote on stdin; `id` and `namespace` are the command line's
    /// (empty when it names none).
    pub(crate) fn decode(
        input: &[u8],
        id: &str,
        namespace: &str,
    ) -> Result<StartRequest, BootstrapError> {
        if input.is_empty() {
            return Ok(StartRequest::Legacy(None));
        }
        let named = |given: &str, sent: &str| given.is_empty() || given == sent;
        if let Ok(params) = BootstrapParams::decode(input)
            && !params.instance_id.is_empty()
            && named(id, &params.instance_id)
            && named(namespace, &params.namespace)
        {
            if params.namespace.is_empty() {
                return Err(BootstrapError::Missing("namespace"));
            }
            return Ok(StartRequest::Bootstrap(params));
        }
        match Any::decode(input) {
            Ok(options) => Ok(StartRequest::Legacy(Some(options))),
            Err(cause) => Err(BootstrapError::Unreadable {
                bytes: input.len(),
                id: id.to_owned(),
                cause,
            }),
        }
    }

    /// The cgroup runc's options ask the shim to be placed in, if any.
    pub(crate) fn shim_cgroup(&self) -> Result<Option<String>, BootstrapError> {
        let options = match self {
            StartRequest::Bootstrap(params) => params
                .extensions
                .iter()
                .filter_map(|e| e.value.as_ref())
                .find(|any| is_runc_options(any)),
            StartRequest::Legacy(any) => any.as_ref().filter(|any| is_runc_options(any)),
        };
        let Some(options) = options else {
            return Ok(None);
        };
        let options =
            RuncOptions::decode(options.value.as_slice()).map_err(BootstrapError::RuncOptions)?;
        Ok(Some(options.shim_cgroup).filter(|c| !c.is_empty()))
    }

    /// What `start` writes on stdout once the shim serves at `address`.
    pub(crate) fn answer(&self, address: &str) -> Vec<u8> {
        match self {
            StartRequest::Bootstrap(_) => BootstrapResult {
                version: TASK_API_VERSION,
                address: address.to_owned(),
                protocol: "ttrpc".to_owned(),
            }
            .encode_to_vec(),
            StartRequest::Legacy(_) => address.as_bytes().to_vec(),
        }
    }
}

/// Whether `any` holds runc's options (`MessageIs` in Go: the type URL's last segment).
fn is_runc_options(any: &Any) -> bool {
    any.type_url.rsplit('/').next() == Some(RUNC_OPTIONS)
}

/// containerd's `LogLevel` at or below which a shim logs debug detail (`LOG_LEVEL_DEBUG`).
pub(crate) const LOG_LEVEL_DEBUG: i32 = -4;

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field (wire type 2) of field number `field` (< 16, so one tag byte).
    fn field(field: u8, bytes: &[u8]) -> Vec<u8> {
        assert!(field < 16 && bytes.len() < 128, "one-byte tag and length");
        let mut out = vec![field << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    /// The bytes containerd 2.3's `pkg/shim` `Command` marshals for a CRI pod's sandbox with
    /// debug logging, runc options naming a shim cgroup, and a socket directory, built by hand
    /// from bootstrap.proto (not by the decoder under test), in field order as Go's
    /// `proto.Marshal` writes them.
    fn containerd_2_3_request() -> Vec<u8> {
        let runc_options = field(3, b"/kubepods/shim"); // Options.shim_cgroup = 3
        let any = [
            field(1, b"containerd.runc.v1.Options"), // Any.type_url = 1
            field(2, &runc_options),                 // Any.value = 2
        ]
        .concat();
        let extension = field(1, &any); // Extension.value = 1
        [
            field(1, b"0123abcd"), // instance_id = 1
            field(2, b"k8s.io"),   // namespace = 2
            // log_level = 3, varint (wire type 0): LOG_LEVEL_DEBUG = -4, an int32 enum
            // sign-extended to ten bytes on the wire.
            vec![
                3 << 3,
                0xfc,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0x01,
            ],
            field(4, b"2.3.4"), // containerd_version = 4
            field(5, b"/run/containerd/containerd.sock.ttrpc"), // containerd_ttrpc_address = 5
            field(6, b"/run/containerd/containerd.sock"), // containerd_grpc_address = 6
            field(7, b"/usr/bin/containerd"), // containerd_binary = 7
            field(8, &extension), // extensions = 8
            field(9, b"/run/containerd/s2"), // socket_dir = 9 (optional)
        ]
        .concat()
    }

    #[test]
    fn the_bytes_containerd_2_3_sends_are_read_field_by_field() {
        let input = containerd_2_3_request();
        let request = StartRequest::decode(&input, "0123abcd", "k8s.io").unwrap();
        let StartRequest::Bootstrap(params) = &request else {
            panic!("read as the legacy protocol: {request:?}");
        };
        assert_eq!(params.instance_id, "0123abcd");
        assert_eq!(params.namespace, "k8s.io");
        assert_eq!(params.log_level, LOG_LEVEL_DEBUG);
        assert_eq!(params.containerd_version, "2.3.4");
        assert_eq!(
            params.containerd_ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        assert_eq!(
            params.containerd_grpc_address,
            "/run/containerd/containerd.sock"
        );
        assert_eq!(params.containerd_binary, "/usr/bin/containerd");
        assert_eq!(params.socket_dir.as_deref(), Some("/run/containerd/s2"));
        assert_eq!(params.extensions.len(), 1);
        assert_eq!(
            request.shim_cgroup().unwrap().as_deref(),
            Some("/kubepods/shim")
        );
        // The same request with no identity on the command line (as a containerd that has
        // dropped the deprecated flags would start it) is still the new protocol.
        assert_eq!(StartRequest::decode(&input, "", "").unwrap(), request);
    }

    #[test]
    fn the_answer_to_containerd_2_3_is_a_bootstrap_result() {
        let request = StartRequest::decode(&containerd_2_3_request(), "0123abcd", "k8s.io")
            .expect("a bootstrap request");
        let answer = request.answer("unix:///run/containerd/s2/ab");
        // BootstrapResult, by hand: version = 1 (varint 2), address = 2, protocol = 3.
        let expected = [
            vec![1 << 3, 2],
            field(2, b"unix:///run/containerd/s2/ab"),
            field(3, b"ttrpc"),
        ]
        .concat();
        assert_eq!(answer, expected);
    }

    #[test]
    fn containerd_before_2_3_sends_options_or_nothing_and_reads_an_address() {
        // containerd 1.6 to 2.2: the runtime options as a bare Any, the identity on the command
        // line. The Any decodes as BootstrapParams too (type_url as instance_id): the identity
        // tells them apart.
        let any = [
            field(1, b"containerd.runc.v1.Options"),
            field(2, &field(3, b"/system.slice/shim")),
        ]
        .concat();
        let request = StartRequest::decode(&any, "c1", "default").unwrap();
        assert!(
            matches!(request, StartRequest::Legacy(Some(_))),
            "{request:?}"
        );
        assert_eq!(
            request.shim_cgroup().unwrap().as_deref(),
            Some("/system.slice/shim")
        );
        assert_eq!(request.answer("unix:///run/x"), b"unix:///run/x");
        // ctr and a CRI runtime without options send nothing.
        let none = StartRequest::decode(b"", "c1", "default").unwrap();
        assert_eq!(none, StartRequest::Legacy(None));
        assert_eq!(none.shim_cgroup().unwrap(), None);
        // The CRI plugin's options for a runtime that is not runc's (runtimeoptions.v1):
        // no shim cgroup is read from them (runc's Options would not decode them).
        let other = [
            field(1, b"runtimeoptions.v1.Options"),
            field(2, &field(1, b"conf")),
        ]
        .concat();
        let other = StartRequest::decode(&other, "c1", "default").unwrap();
        assert_eq!(other.shim_cgroup().unwrap(), None);
    }

    #[test]
    fn a_request_that_is_neither_protocol_is_refused() {
        // The errors containerd 2.3's bytes gave the runc-options parser: an end-group wire
        // type where a field was expected.
        let garbage = [0x0c, 0x01, 0x02];
        let e = StartRequest::decode(&garbage, "c1", "default").unwrap_err();
        assert!(
            e.to_string().contains("neither bootstrap parameters"),
            "{e}"
        );
        // A bootstrap request for another container is not this one's.
        let other = StartRequest::decode(&containerd_2_3_request(), "other", "k8s.io");
        assert!(
            !matches!(other, Ok(StartRequest::Bootstrap(_))),
            "{other:?}"
        );
        // Runc options that do not decode are an error, not an absent cgroup.
        let bad = [
            field(1, b"containerd.runc.v1.Options"),
            field(2, &[3 << 3 | 2, 5, b'a']),
        ]
        .concat();
        let request = StartRequest::decode(&bad, "c1", "default").unwrap();
        assert!(request.shim_cgroup().is_err());
    }
}
