//! The HTTP and sockets test guests: C sources in testdata/ built with clang and wasi-libc
//! against bindings that `wit-bindgen c` makes from the WIT wasmtime-wasi-http ships,
//! componentized with wit-component and the preview 1 adapters; and a component whose import
//! no host provides.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{describe, testdata};

/// The test guests, built once per test run.
pub struct HttpGuests {
    /// A wasi:http/proxy component (testdata/http_proxy.c).
    pub proxy: PathBuf,
    /// A wasi:cli/command component that connects with wasi:sockets (testdata/tcp_client.c).
    pub tcp_client: PathBuf,
    /// A command component that imports an interface no host provides.
    pub unsatisfiable: PathBuf,
}

pub fn http_guests() -> &'static HttpGuests {
    static GUESTS: OnceLock<HttpGuests> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("http-guests-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let wit = wasi_http_wit();
        let proxy = build_c_guest(
            &dir,
            "http_proxy",
            &wit,
            "wasi:http/proxy@0.2.12",
            Adapter::Proxy,
        );
        // A world of our own next to the ones wasmtime-wasi-http ships.
        let client_wit = dir.join("client-wit");
        fs::create_dir_all(&client_wit).unwrap();
        fs::write(
            client_wit.join("world.wit"),
            "package test:client;\n\
             world client {\n\
               import wasi:sockets/instance-network@0.2.12;\n\
               import wasi:sockets/tcp-create-socket@0.2.12;\n\
               import wasi:sockets/tcp@0.2.12;\n\
               import wasi:io/poll@0.2.12;\n\
               import wasi:io/streams@0.2.12;\n\
               import wasi:cli/environment@0.2.12;\n\
               export wasi:cli/run@0.2.12;\n\
             }\n",
        )
        .unwrap();
        let deps = client_wit.join("deps");
        if !deps.exists() {
            std::os::unix::fs::symlink(wit.join("deps"), &deps).unwrap();
        }
        let tcp_client = build_c_guest(
            &dir,
            "tcp_client",
            &client_wit,
            "test:client/client",
            Adapter::Reactor,
        );
        let unsatisfiable = dir.join("unsatisfiable.wasm");
        fs::write(&unsatisfiable, unsatisfiable_component()).unwrap();
        HttpGuests {
            proxy,
            tcp_client,
            unsatisfiable,
        }
    })
}

/// The `wit/` folder of the wasmtime-wasi-http crate this workspace builds with (its version
/// in Cargo.lock), in cargo's registry sources, where the build unpacked it.
pub fn wasi_http_wit() -> PathBuf {
    let lock =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime-wasi-http\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .expect("wasmtime-wasi-http is in Cargo.lock")
        .trim_matches('"')
        .to_owned();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
    let sources = cargo_home.join("registry/src");
    fs::read_dir(&sources)
        .unwrap()
        .map(|index| {
            index
                .unwrap()
                .path()
                .join(format!("wasmtime-wasi-http-{version}/wit"))
        })
        .find(|wit| wit.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no wasmtime-wasi-http-{version}/wit in {}",
                sources.display()
            )
        })
}

#[derive(Clone, Copy)]
pub enum Adapter {
    Proxy,
    Reactor,
}

/// Bindings from `wit-bindgen c`, then clang (wasm32-wasi reactor), then wit-component.
pub fn build_c_guest(dir: &Path, name: &str, wit: &Path, world: &str, adapter: Adapter) -> PathBuf {
    let bindings = dir.join(format!("{name}-bindings"));
    fs::create_dir_all(&bindings).unwrap();
    let out = Command::new("wit-bindgen")
        .arg("c")
        .arg(wit)
        .args(["--world", world, "--out-dir"])
        .arg(&bindings)
        .output()
        .expect("wit-bindgen is not installed: run ./scripts/test, which installs wit-bindgen-cli");
    assert!(out.status.success(), "wit-bindgen c: {}", describe(&out));
    let mut sources: Vec<PathBuf> = vec![testdata(&format!("{name}.c"))];
    let mut objects = Vec::new();
    for entry in fs::read_dir(&bindings).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("c") => sources.push(path),
            Some("o") => objects.push(path),
            _ => {}
        }
    }
    let core = dir.join(format!("{name}.core.wasm"));
    let out = Command::new("clang")
        .args([
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-O2",
            "-mexec-model=reactor",
            "-Wall",
            "-Werror",
            "-Wno-unused-function",
        ])
        .arg("-I")
        .arg(&bindings)
        .args(&sources)
        .args(&objects)
        .arg("-o")
        .arg(&core)
        .output()
        .expect("clang is not installed: run ./scripts/test");
    assert!(out.status.success(), "building {name}: {}", describe(&out));
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let adapter = match adapter {
        Adapter::Proxy => WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        Adapter::Reactor => WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let component = wit_component::ComponentEncoder::default()
        .module(&fs::read(&core).unwrap())
        .unwrap()
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let path = dir.join(format!("{name}.wasm"));
    fs::write(&path, component).unwrap();
    path
}

/// A command component that also imports `example:missing/api`, which no host provides.
fn unsatisfiable_component() -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str(
            "unsatisfiable.wit",
            "package example:missing;\n\
             interface api { ping: func(); }\n\
             world unsatisfiable {\n\
               import api;\n\
               export run: func();\n\
             }\n",
        )
        .unwrap();
    let world = resolve.select_world(&[package], None).unwrap();
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}
