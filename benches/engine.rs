//! Engine choices, measured: compile time of a 1.3 MB guest under each compilation setting,
//! the cost of epoch interruption on a compute-bound run, and the cost of one instantiation with
//! and without the pooling allocator. Prints tables with ratios to the setting wasm-oci uses.
//!
//! `cargo bench --bench engine -- target/bench/sqlite.wasm` (benches/build-sqlite builds it);
//! `scripts/bench` runs it with the others.

use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, Module, OptLevel, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn table(title: &str, rows: &[(&str, Duration)]) {
    println!("\n{title}\n");
    println!("| setting | median | ratio |");
    println!("| --- | ---: | ---: |");
    let anchor = rows[0].1.as_secs_f64();
    for (name, d) in rows {
        println!(
            "| {name} | {:.3} ms | {:.2}x |",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() / anchor
        );
    }
}

fn engine(f: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config::new();
    f(&mut config);
    Engine::new(&config).unwrap()
}

/// Runs `_start` of `module` once in a fresh store; stdio discarded.
fn run(engine: &Engine, linker: &Linker<WasiP1Ctx>, module: &Module, epoch: bool) {
    let wasi = WasiCtxBuilder::new().build_p1();
    let mut store = Store::new(engine, wasi);
    if epoch {
        store.set_epoch_deadline(u64::MAX);
    }
    let instance = linker.instantiate(&mut store, module).unwrap();
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap();
    start.call(&mut store, ()).unwrap();
}

fn linker(engine: &Engine) -> Linker<WasiP1Ctx> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c).unwrap();
    linker
}

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "target/bench/sqlite.wasm".into());
    let wasm =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}; run benches/build-sqlite"));
    println!("guest: {path} ({} bytes)", wasm.len());

    let compile = |f: &dyn Fn(&mut Config)| {
        let e = engine(f);
        time(5, || {
            e.precompile_module(&wasm).unwrap();
        })
    };
    table(
        "Compiling the guest (Engine::precompile_module)",
        &[
            (
                "default: parallel, opt-level speed (wasm-oci)",
                compile(&|_| {}),
            ),
            (
                "single-threaded compilation",
                compile(&|c| {
                    c.parallel_compilation(false);
                }),
            ),
            (
                "opt-level none",
                compile(&|c| {
                    c.cranelift_opt_level(OptLevel::None);
                }),
            ),
        ],
    );

    let module_default = Module::new(&engine(|_| {}), &wasm).unwrap();
    let plain = engine(|_| {});
    let module = Module::new(&plain, &wasm).unwrap();
    drop(module_default);
    let epoch = engine(|c| {
        c.epoch_interruption(true);
    });
    let epoch_module = Module::new(&epoch, &wasm).unwrap();
    let opt_none = engine(|c| {
        c.cranelift_opt_level(OptLevel::None);
    });
    let opt_none_module = Module::new(&opt_none, &wasm).unwrap();
    let (l_plain, l_epoch, l_none) = (linker(&plain), linker(&epoch), linker(&opt_none));
    table(
        "Running the guest (instantiate + _start: 1000 inserts, one query)",
        &[
            (
                "default (wasm-oci without --timeout)",
                time(20, || run(&plain, &l_plain, &module, false)),
            ),
            (
                "epoch interruption (wasm-oci --timeout)",
                time(20, || run(&epoch, &l_epoch, &epoch_module, true)),
            ),
            (
                "opt-level none",
                time(20, || run(&opt_none, &l_none, &opt_none_module, false)),
            ),
        ],
    );

    let empty =
        wat::parse_str(r#"(module (memory (export "memory") 17) (func (export "_start")))"#)
            .unwrap();
    let instantiate = |pooling: bool| {
        let e = engine(|c| {
            if pooling {
                c.allocation_strategy(InstanceAllocationStrategy::pooling());
            }
        });
        let m = Module::new(&e, &empty).unwrap();
        let l = linker(&e);
        time(2000, || run(&e, &l, &m, false))
    };
    let engine_new = |pooling: bool| {
        time(20, || {
            engine(|c| {
                if pooling {
                    c.allocation_strategy(InstanceAllocationStrategy::pooling());
                }
            });
        })
    };
    table(
        "One instantiation and run of a module with 1 MiB of memory, in a long-lived engine",
        &[
            ("on-demand allocator (wasm-oci run)", instantiate(false)),
            ("pooling allocator", instantiate(true)),
        ],
    );
    table(
        "Engine::new, paid once per process (so once per wasm-oci run)",
        &[
            ("on-demand allocator (wasm-oci run)", engine_new(false)),
            ("pooling allocator", engine_new(true)),
        ],
    );
}
