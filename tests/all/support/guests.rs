//! The test guests: C modules built with clang for wasm32-wasi, and components made of them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Test guests built from `testdata/` sources once per test run: the C probe (clang and
/// Debian's wasi-libc, installed by ./scripts/test) as a module and as a component, and hello
/// as a component (wit-component with the wasi_snapshot_preview1 command adapter).
pub struct Guests {
    pub probe: PathBuf,
    pub probe_component: PathBuf,
    pub hello_component: PathBuf,
}

pub fn guests() -> &'static Guests {
    static GUESTS: std::sync::OnceLock<Guests> = std::sync::OnceLock::new();
    GUESTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let probe = dir.join("probe.wasm");
        let out = Command::new("clang")
            .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
            .arg(&probe)
            .arg(testdata("probe.c"))
            .output()
            .expect("clang is not installed: run ./scripts/test, which installs clang, lld and wasi-libc");
        assert!(out.status.success(), "building probe.wasm failed: {}", describe(&out));
        let probe_component = dir.join("probe.component.wasm");
        fs::write(&probe_component, componentize(&fs::read(&probe).unwrap())).unwrap();
        let hello_component = dir.join("hello.component.wasm");
        fs::write(&hello_component, componentize(&fs::read(testdata("hello.wasm")).unwrap())).unwrap();
        Guests {
            probe,
            probe_component,
            hello_component,
        }
    })
}

/// Wraps a WASI preview 1 command module into a WASI 0.2 command component.
pub fn componentize(core: &[u8]) -> Vec<u8> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
    };
    wit_component::ComponentEncoder::default()
        .module(core)
        .unwrap()
        .adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// hello.wasm with a custom section of `pad` bytes: a valid module that still prints hello.
pub fn padded_hello(pad: usize) -> Vec<u8> {
    let mut wasm = fs::read(testdata("hello.wasm")).unwrap();
    let name = b"padding";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend((0..pad).map(|i| (i * 7 % 251) as u8));
    wasm.push(0); // custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            wasm.push(byte);
            break;
        }
        wasm.push(byte | 0x80);
    }
    wasm.extend(payload);
    wasm
}

/// The path of `testdata/hello.wasm`, as an argument.
pub fn hello() -> String {
    testdata("hello.wasm").display().to_string()
}

/// What `testdata/hello.wasm` prints.
pub const HELLO: &str = "Hello from WebAssembly!\n";
