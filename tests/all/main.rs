//! End-to-end tests of wasm-oci against real components: a Docker Distribution registry started
//! per test, real wasmtime, and the interop peers (the ORAS SDK, skopeo, the oras and crane
//! CLIs, crane's registry) where a test names them.
//!
//! One integration-test binary for the whole workspace; one module per feature (`pull.rs`, `run.rs`,
//! `shim.rs`, ...), its attacks beside it (`pull_attacks.rs`), fixtures in `support/`.

mod annotations;
mod auth;
mod auth_attacks;
mod auth_token;
mod cache;
mod cache_attacks;
mod cli;
mod cli_attacks;
mod cli_errors;
mod cli_friction;
mod compile_limits;
mod compiled_code;
mod copy;
mod copy_attacks;
mod cri;
mod cri_image;
mod cri_memory;
mod cri_mixed;
mod egress;
mod egress_attacks;
mod faults;
mod full_disk;
mod hosts_toml;
mod interop;
mod interop_copy;
mod interop_crane;
mod interop_oras;
mod kubelet;
mod layout;
mod layout_attacks;
mod mirror_attacks;
mod mirrors;
mod no_home;
mod precompiled;
mod precompiled_attacks;
mod precompiled_follows;
mod prefetch;
mod pull;
mod pull_attacks;
mod push;
mod push_attacks;
mod push_platforms;
mod readme;
mod red_team;
mod red_team_session;
mod red_team_shim;
mod referrers;
mod referrers_api;
mod registry_friction;
mod resume;
mod run;
mod scale;
mod serve;
mod serve_attacks;
mod serve_limits;
mod shim;
mod shim_attacks;
mod shim_kill;
mod shim_network;
mod shim_start;
mod shim_world;
mod support;
mod tags;
mod testdata;
mod trust;

// Old module paths that other branches' tests may still name; removed once they are merged.
#[allow(unused_imports)]
use support::{containerd, proxy};
