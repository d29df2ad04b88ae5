//! `push --platform OS=FILE ... REF`: a wasip1 module and a wasip2 component pushed as one
//! image index that wasm-oci, skopeo and the `oras` CLI read, and the command lines that
//! cannot make a sound index refused before anything is sent.

use std::fs;
use std::process::Command;

use crate::support::{
    HELLO, Registry, WasmOci, describe, guests, hello, http, manifest, oras_in, sha256, stderr,
};

/// `text` as JSON, or a failure that shows it.
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn push_platforms_writes_one_index_that_run_skopeo_and_oras_read() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let component = guests().probe_component.display().to_string();
    let module = hello();
    let reference = registry.reference("multi:v1");
    // The component first: which entry run takes must not depend on the order given.
    let pushed = json(&cli.ok(&[
        "push",
        "--json",
        "--platform",
        &format!("wasip2={component}"),
        "--platform",
        &format!("wasip1={module}"),
        "-a",
        "com.example.note=both",
        "--artifact-type",
        "application/vnd.example.multi+wasm",
        &reference,
    ]));

    // The index at the tag, its digest the one push printed, both entries by digest.
    let index = manifest(&registry, "multi", "v1");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["annotations"]["com.example.note"], "both", "{index}");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    for (entry, (os, kind)) in entries
        .iter()
        .zip([("wasip2", "component"), ("wasip1", "module")])
    {
        assert_eq!(entry["platform"]["os"], os, "{index}");
        assert_eq!(entry["platform"]["architecture"], "wasm", "{index}");
        let shown = pushed["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["os"] == os)
            .unwrap_or_else(|| panic!("{pushed}"));
        assert_eq!(shown["digest"], entry["digest"], "{pushed}");
        assert_eq!(shown["kind"], kind, "{pushed}");
        let digest = entry["digest"].as_str().unwrap();
        let written = manifest(&registry, "multi", digest);
        assert_eq!(
            written["config"]["mediaType"],
            "application/vnd.wasm.config.v0+json"
        );
        assert_eq!(
            written["artifactType"],
            "application/vnd.example.multi+wasm"
        );
        assert_eq!(written["annotations"]["com.example.note"], "both");
    }

    // skopeo reads the index with both platforms, byte for byte the one pushed.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is not installed: run ./scripts/test, which installs it");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sha256(&out.stdout), pushed["digest"].as_str().unwrap());
    assert_eq!(json(&String::from_utf8(out.stdout).unwrap()), index);

    // `wasm-oci manifest` lists both entries.
    let shown = json(&cli.ok(&["manifest", "--json", &reference]));
    assert_eq!(shown["digest"], pushed["digest"], "{shown}");
    let text = cli.ok(&["manifest", &reference]);
    for entry in entries {
        assert!(text.contains(entry["digest"].as_str().unwrap()), "{text}");
    }
    assert!(text.contains("wasip1") && text.contains("wasip2"), "{text}");

    // run takes the wasip1 entry (wasm-oci prefers wasip1, then wasip2): hello prints its
    // line and exits 0, where the probe component would print its usage and exit 2.
    let out = cli.run(&["run", &reference]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        HELLO,
        "{}",
        describe(&out)
    );

    // oras fetches the index and pulls each platform's own file.
    let fetched = oras_in(None, &["manifest", "fetch", "--plain-http", &reference]);
    assert_eq!(json(&fetched), index);
    for (platform, file, original) in [
        ("wasip1/wasm", "hello.wasm", module.as_str()),
        ("wasip2/wasm", "probe.component.wasm", component.as_str()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        oras_in(
            Some(dir.path()),
            &[
                "pull",
                "--plain-http",
                "--platform",
                platform,
                "-o",
                ".",
                &reference,
            ],
        );
        assert_eq!(
            fs::read(dir.path().join(file)).unwrap(),
            fs::read(original).unwrap(),
            "oras pull --platform {platform}"
        );
    }

    // An index of the component alone runs the component.
    let only = registry.reference("multi:p2");
    cli.ok(&[
        "push",
        "--platform",
        &format!("wasip2={}", guests().hello_component.display()),
        &only,
    ]);
    let out = cli.run(&["run", &only]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
}

#[test]
fn push_platforms_refuses_what_would_make_a_wrong_index_before_sending_anything() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let module = hello();
    let component = guests().hello_component.display().to_string();
    let reference = registry.reference("bad:v1");
    let p1 = format!("wasip1={module}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // A file positionally as well as with --platform.
        (
            vec!["--platform", &p1, &module, &reference],
            "with --platform every file is given as --platform OS=FILE",
        ),
        // The same platform twice.
        (
            vec!["--platform", &p1, "--platform", &p1, &reference],
            "--platform wasip1 is given twice",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["push"];
        all.extend(args);
        let out = cli.run(&all);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(stderr(&out).contains(says), "{}", describe(&out));
    }
    // A component named wasip1, a core module named wasip2: each told what it is.
    let swapped_component = format!("wasip1={component}");
    let swapped_module = format!("wasip2={module}");
    for (args, says) in [
        (
            [
                "--platform",
                &swapped_component,
                "--platform",
                &swapped_module,
            ],
            format!(
                "is a component but was given as --platform wasip1; a component is wasip2: pass --platform wasip2={component}"
            ),
        ),
        (
            ["--platform", &p1, "--platform", &swapped_module],
            format!(
                "is a core module but was given as --platform wasip2; a core module is wasip1: pass --platform wasip1={module}"
            ),
        ),
    ] {
        let mut all = vec!["push"];
        all.extend(args);
        all.push(&reference);
        let out = cli.run(&all);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(stderr(&out).contains(&says), "{}", describe(&out));
    }
    // Not a WASI platform, or not OS=FILE: refused by the parser.
    for (value, says) in [
        ("linux=x.wasm", "is not a WASI platform"),
        ("wasip1", "expected OS=FILE"),
        ("wasip1=", "a file after the `=`"),
    ] {
        let out = cli.run(&["push", "--platform", value, &reference]);
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        assert!(stderr(&out).contains(says), "{}", describe(&out));
    }
    // Nothing reached the registry: not a blob, not a manifest, not a tag.
    let r = http(&registry.addr, "GET", "/v2/bad/tags/list", &[], b"").unwrap();
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
}
