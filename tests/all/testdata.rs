//! The committed test modules agree with their sources.

use crate::support::testdata;

/// `WASM_OCI_BLESS=1 cargo test testdata` rewrites the committed `.wasm` files.
#[test]
fn hello_wasm_is_built_from_hello_wat() {
    let built = wat::parse_file(testdata("hello.wat")).unwrap();
    let path = testdata("hello.wasm");
    if std::env::var_os("WASM_OCI_BLESS").is_some() {
        std::fs::write(&path, &built).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        built,
        "testdata/hello.wasm is stale: rebuild it with WASM_OCI_BLESS=1 cargo test testdata"
    );
}
