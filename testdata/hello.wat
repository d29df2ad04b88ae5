;; A WASI preview 1 command that writes one line to stdout and returns.
;; testdata/hello.wasm is built from this file; the test suite checks that the two agree.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: pointer 16, length 24
  (data (i32.const 0) "\10\00\00\00\18\00\00\00")
  (data (i32.const 16) "Hello from WebAssembly!\n")
  (func (export "_start")
    (drop (call $fd_write
      (i32.const 1)   ;; stdout
      (i32.const 0)   ;; iovs
      (i32.const 1)   ;; iovs_len
      (i32.const 8))) ;; where to store the number of bytes written
  )
)
