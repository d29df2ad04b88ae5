//! The committed test modules agree with their sources.

use crate::support::testdata;

/// `WASM_OCI_BLESS=1 cargo test testdata` rewrites the committed `.wasm` files.
#[test]
fn hello_wasm_is_built_from_hello_wat() {
    built_from_its_source("hello");
}

#[test]
fn echo_wasm_is_built_from_echo_wat() {
    built_from_its_source("echo");
}

/// testdata/NAME.wasm is what testdata/NAME.wat compiles to.
fn built_from_its_source(name: &str) {
    let built = wat::parse_file(testdata(&format!("{name}.wat"))).unwrap();
    let path = testdata(&format!("{name}.wasm"));
    if std::env::var_os("WASM_OCI_BLESS").is_some() {
        std::fs::write(&path, &built).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap_or_default(),
        built,
        "testdata/{name}.wasm is stale: rebuild it with WASM_OCI_BLESS=1 cargo test testdata"
    );
}

/// testdata/hello-http.wasm is testdata/hello-http.wat made a wasi:http/proxy component by
/// wit-component, with the WIT wasmtime-wasi-http ships (what `wasm-tools component embed`
/// and `wasm-tools component new` do).
#[test]
fn hello_http_wasm_is_built_from_hello_http_wat() {
    let mut core = wat::parse_file(testdata("hello-http.wat")).unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_path(crate::support::wasi_http_wit()).unwrap();
    let world = resolve
        .select_world(&[package], Some("wasi:http/proxy@0.2.12"))
        .unwrap();
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    let built = wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let path = testdata("hello-http.wasm");
    if std::env::var_os("WASM_OCI_BLESS").is_some() {
        std::fs::write(&path, &built).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap_or_default(),
        built,
        "testdata/hello-http.wasm is stale: rebuild it with WASM_OCI_BLESS=1 cargo test testdata"
    );
}
