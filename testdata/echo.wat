;; Prints its arguments (argv[1] onwards) on one line, separated by spaces, as echo(1) does.
;; The README's examples of guest arguments run it: `wasm-oci run testdata/echo.wat -- a b`.
;; testdata/echo.wasm is built from it (tests/all/testdata.rs checks that they agree).
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; 0: argc, 4: size of the arguments, 8: an iovec, 16: bytes written,
  ;; 1024: argv (up to 768 pointers), 4096: the arguments (up to 60 KiB).
  (memory (export "memory") 1)
  (func (export "_start")
    (local $start i32) (local $end i32) (local $i i32)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.or (i32.gt_u (i32.load (i32.const 0)) (i32.const 768))
                (i32.gt_u (i32.load (i32.const 4)) (i32.const 61439)))
      (then unreachable))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (local.set $end (i32.add (i32.const 4096) (i32.load (i32.const 4))))
    ;; From argv[1], when there is one; each NUL between arguments becomes a space.
    (local.set $start (local.get $end))
    (if (i32.ge_u (i32.load (i32.const 0)) (i32.const 2))
      (then (local.set $start (i32.load (i32.const 1028)))))
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $i)))
          (then (i32.store8 (local.get $i) (i32.const 32))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    ;; The line ends where the last argument's NUL was, or is a newline alone.
    (if (i32.gt_u (local.get $end) (local.get $start))
      (then (i32.store8 (i32.sub (local.get $end) (i32.const 1)) (i32.const 10)))
      (else
        (i32.store8 (local.get $end) (i32.const 10))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))))
    (i32.store (i32.const 8) (local.get $start))
    (i32.store (i32.const 12) (i32.sub (local.get $end) (local.get $start)))
    (drop (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))
