;; The core module of testdata/hello-http.wasm, a wasi:http/proxy component that answers every
;; request 200 "Hello from a wasi:http component!\n". wit-component makes the component from
;; it and the wasi:http/proxy@0.2.12 world (as `wasm-tools component embed` then `component
;; new` do); tests/all/testdata.rs builds it and checks the committed file agrees.
;;
;; Imports and exports follow the component model's canonical ABI for 32-bit memories: a
;; result is written where the last argument points (its case in the first byte, the handle
;; at offset 4), and response-outparam.set takes its result<outgoing-response, error-code>
;; flattened (case, handle, then the error code's unused slots).
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields"
    (func $fields (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response"
    (func $response (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body"
    (func $response_body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write"
    (func $body_write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish"
    (func $body_finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set"
    (func $set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request"
    (func $drop_request (param i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush"
    (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream"
    (func $drop_stream (param i32)))

  ;; 0: results, 1024: the answer, 4096 on: what the host allocates (an error's text).
  (memory (export "memory") 1)
  (data (i32.const 1024) "Hello from a wasi:http component!\n")
  (global $heap (mut i32) (i32.const 4096))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $out i32)
    (local $response i32) (local $body i32) (local $stream i32)
    (call $drop_request (local.get $request))
    ;; 200 (the default status), no headers.
    (local.set $response (call $response (call $fields)))
    (call $response_body (local.get $response) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (local.set $body (i32.load (i32.const 4)))
    (call $set (local.get $out)
      (i32.const 0) (local.get $response)
      (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $body_write (local.get $body) (i32.const 0))
    (if (i32.load8_u (i32.const 0)) (then unreachable))
    (local.set $stream (i32.load (i32.const 4)))
    (call $write (local.get $stream) (i32.const 1024) (i32.const 34) (i32.const 16))
    (call $drop_stream (local.get $stream))
    ;; No trailers.
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 32)))

  ;; The host's allocations (an error code's strings), from a bump pointer: each request has
  ;; an instance of its own.
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32)
      (param $size i32) (result i32)
    (local $at i32)
    (local.set $at
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $heap (i32.add (local.get $at) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.const 65536)) (then unreachable))
    (local.get $at)))
