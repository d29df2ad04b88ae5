//! The containerd shim v2 task service (`io.containerd.wasmoci.v1`): containerd starts
//! `containerd-shim-wasmoci-v1`, which runs each container's wasm in this process's runner.
//!
//! The module comes from the annotation `io.wasm-oci.reference` (pulled into the shared cache,
//! policy `io.wasm-oci.pull`, default `missing`), else from `process.args[0]` in the rootfs,
//! resolved inside it (`rootfs.rs`). The rootfs is preopened as `/`, bind mounts at their
//! destinations (`ro` honoured), and the operator's preopen profiles a container names in
//! `io.wasm-oci.preopens` ([`config`]); a pod never names a host path.
//!
//! Containers of one pod share a shim process (one engine, one fetcher), as runwasi groups
//! them; the operator's config decides otherwise, never a pod. A pod's sandbox ("pause")
//! container has no wasm: it only waits to be killed.
//!
//! The rooms: `shim` is the process (start, delete after a death), `bootstrap` what containerd
//! says to `start` and hears back; `task` answers each
//! containerd request with a `task_*` function, the `Task` trait being thin wrappers over
//! them, and a task moves only through `state`'s `TaskState`; `spec` turns a bundle's spec
//! into a `container`; `guest` runs its wasm on a thread of its own; `cgroup`,
//! `netns`, `mounts` and `rootfs` are what a container gets of the node; `store.rs` holds
//! the shared cache and the trust decision on a rootfs module.

mod annotations;
mod bootstrap;
mod cgroup;
mod compile;
pub mod config;
mod container;
mod error;
mod guest;
mod linux;
mod mounts;
mod names;
mod netns;
mod rootfs;
mod service;
mod shim;
mod spec;
mod state;
mod store;
mod task;

use containerd_shim::asynchronous::run;

pub use self::service::TaskService;

pub use self::names::{BINARY, RUNTIME};

/// What `containerd-shim-wasmoci-v1 --version` prints, in the shape of containerd's own shims.
pub fn version() -> String {
    format!(
        "{BINARY}:\n  Version:  {}\n  Runtime:  {RUNTIME}\n  Engine:   wasmtime\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs the shim; what `containerd-shim-wasmoci-v1`'s `main` calls.
///
/// `-v`/`--version` print the version; `start` is answered here, in either of containerd's
/// start protocols; every other action (`delete`, serving) runs through containerd's shim
/// protocol crate.
pub fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().and_then(|a| a.to_str()) == Some(compile::COMPILE_ARG) {
        let rest: Vec<String> = args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        std::process::exit(compile::helper_main(&rest));
    }
    let flag = |names: &[&str]| {
        args.iter()
            .any(|a| a.to_str().is_some_and(|a| names.contains(&a)))
    };
    if flag(&["-v", "--v", "-version", "--version"]) {
        print!("{}", version());
        return;
    }
    if let Ok(flags) = containerd_shim::parse(&args)
        && flags.action == "start"
    {
        let answer = shim::start(&flags, std::io::stdin().lock()).map_err(|e| e.to_string());
        let written = answer.and_then(|answer| {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&answer)
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("writing the answer: {e}"))
        });
        if let Err(e) = written {
            tracing::error!(error = %e, "start failed");
            eprintln!("{RUNTIME}: {e}");
            std::process::exit(1);
        }
        return;
    }
    // Before any pod's cgroup is joined: where the compile helper is put.
    compile::remember_home();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the shim's runtime");
    runtime.block_on(run::<shim::Service>(RUNTIME, None));
}
