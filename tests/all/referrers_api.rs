//! OCI 1.1 referrers through the referrers API (`GET /v2/<name>/referrers/<digest>`), against
//! [`ReferrersApi`]: a Distribution 2.8 with the API added in front as the distribution spec
//! v1.1 words it, since no registry here serves it (see support/referrers_api.rs). `attach`
//! writes no `sha256-<hex>` tag where the API lists the artifact, `discover` reads the API
//! (paged, filtered), `copy` carries referrers between API registries and to and from the tag
//! schema; a hostile API answer is refused, or its stray entries left behind.

use crate::support::{
    INDEX_TYPE, ReferrersApi, Registry, Reply, Secure, WasmOci, describe, http, manifest,
    output_with_stdin, outputs_of_concurrent, stderr, testdata,
};

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The tags Distribution itself holds for `repo`, sorted.
fn tags(registry: &Registry, repo: &str) -> Vec<String> {
    let r = http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &[],
        b"",
    )
    .expect("registry answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

/// The manifest bytes Distribution holds at `repo`/`name`; `None` when there is none.
fn manifest_bytes(registry: &Registry, repo: &str, name: &str) -> Option<Vec<u8>> {
    let r = http(
        &registry.addr,
        "GET",
        &format!("/v2/{repo}/manifests/{name}"),
        &[("Accept", ACCEPT)],
        b"",
    )
    .expect("registry answers");
    match r.status {
        200 => Some(r.body),
        404 => None,
        other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
    }
}

/// `push --json` of hello.wasm to `reference` (with `extra` arguments): the manifest digest.
/// `push --no-image --json` of hello.wasm with `extra`: the digest of the wasm manifest at
/// the tag. These tests are of the referrers of one manifest (precompiled code is attached to
/// the wasm manifest, and `save` carries that manifest's), so the tag names it directly.
fn push(cli: &WasmOci, reference: &str, extra: &[&str]) -> String {
    let hello = testdata("hello.wasm").display().to_string();
    let mut args = vec!["push", "--json", "--no-image"];
    args.extend(extra);
    args.extend([hello.as_str(), reference]);
    json(&cli.ok(&args))["digest"].as_str().unwrap().to_owned()
}

/// `attach --json` of a file holding `content` to `reference`: what attach printed.
fn attach(
    cli: &WasmOci,
    reference: &str,
    name: &str,
    content: &[u8],
    artifact_type: &str,
) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, content).unwrap();
    json(&cli.ok(&[
        "attach",
        "--json",
        reference,
        file.to_str().unwrap(),
        "--artifact-type",
        artifact_type,
        "-a",
        &format!("file={name}"),
    ]))
}

/// `discover --json` of `reference`.
fn discover(cli: &WasmOci, reference: &str) -> serde_json::Value {
    json(&cli.ok(&["discover", "--json", reference]))
}

/// The digests `discover --json` listed.
fn digests(found: &serde_json::Value) -> Vec<String> {
    found["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn attach_through_the_api_writes_no_referrers_tag_and_discover_lists_it() {
    let api = ReferrersApi::start();
    let cli = WasmOci::new();
    let subject = push(&cli, &api.reference("hello:v1"), &[]);

    // The fixture answers as the spec says before anything is attached: 200, an empty index.
    let r = http(
        &api.addr,
        "GET",
        &format!("/v2/hello/referrers/{subject}"),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains(&format!("content-type: {INDEX_TYPE}")),
        "{}",
        r.head
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&r.body))["manifests"],
        serde_json::json!([])
    );

    let sbom = attach(
        &cli,
        &api.reference("hello:v1"),
        "sbom.spdx.json",
        br#"{"spdxVersion":"SPDX-2.3"}"#,
        "application/spdx+json",
    );
    assert_eq!(sbom["subject"], subject.as_str());
    // No tag was updated: the registry lists the artifact from its `subject`.
    assert!(sbom.get("referrers_tag").is_none(), "{sbom}");
    let note = attach(
        &cli,
        &api.reference("hello:v1"),
        "note.txt",
        b"reviewed\n",
        "text/plain",
    );
    let (sbom, note) = (
        sbom["digest"].as_str().unwrap().to_owned(),
        note["digest"].as_str().unwrap().to_owned(),
    );
    // Asked of the API, which answered.
    assert!(
        api.referrers_requests()
            .iter()
            .any(|p| p.starts_with(&format!("/v2/hello/referrers/{subject}"))),
        "{:?}",
        api.referrers_requests()
    );
    // Distribution itself holds the artifacts, with their subject, and no referrers tag.
    assert_eq!(tags(&api.registry, "hello"), ["v1"]);
    let artifact = manifest(&api.registry, "hello", &sbom);
    assert_eq!(artifact["subject"]["digest"], subject.as_str());
    assert_eq!(artifact["artifactType"], "application/spdx+json");

    let found = discover(&cli, &api.reference("hello:v1"));
    assert_eq!(found["source"], "referrers API", "{found}");
    assert_eq!(found["digest"], subject.as_str());
    assert_eq!(digests(&found), [sbom.clone(), note.clone()]);
    let listed = &found["referrers"][0];
    assert_eq!(listed["artifactType"], "application/spdx+json");
    assert_eq!(listed["annotations"]["file"], "sbom.spdx.json");
    assert_eq!(
        listed["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let sbom_bytes = manifest_bytes(&api.registry, "hello", &sbom).unwrap();
    assert_eq!(listed["size"], sbom_bytes.len());
    // The fixture says it processed a subject, as the spec has a registry with the API do
    // (put again: listed once).
    let r = http(
        &api.addr,
        "PUT",
        &format!("/v2/hello/manifests/{sbom}"),
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &sbom_bytes,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.head);
    assert!(
        r.head
            .to_ascii_lowercase()
            .contains(&format!("oci-subject: {subject}")),
        "{}",
        r.head
    );

    // A list the registry pages (one per page) is followed to its end.
    api.page_size(1);
    let paged = discover(&cli, &api.reference("hello:v1"));
    assert_eq!(digests(&paged), [sbom.clone(), note]);
    assert!(
        api.referrers_requests()
            .iter()
            .any(|p| p.contains("from=1")),
        "the second page was not asked for: {:?}",
        api.referrers_requests()
    );

    // Something with nothing attached: an empty list, from the API.
    push(&cli, &api.reference("other:v1"), &["--annotation", "n=2"]);
    let none = discover(&cli, &api.reference("other:v1"));
    assert_eq!(none["source"], "referrers API", "{none}");
    assert_eq!(digests(&none), Vec::<String>::new());
    assert_eq!(cli.ok(&["discover", &api.reference("other:v1")]), "");
}

#[test]
fn discover_filters_the_api_list_by_artifact_type() {
    let api = ReferrersApi::start();
    let cli = WasmOci::new();
    let at = api.reference("hello:v1");
    push(&cli, &at, &[]);
    let mut attached = Vec::new();
    for (name, artifact_type) in [
        ("a.spdx.json", "application/spdx+json"),
        ("b.txt", "text/plain"),
        ("c.spdx.json", "application/spdx+json"),
    ] {
        let a = attach(&cli, &at, name, name.as_bytes(), artifact_type);
        attached.push(a["digest"].as_str().unwrap().to_owned());
    }
    api.page_size(2);
    let out = cli.ok(&["discover", "--artifact-type", "application/spdx+json", &at]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&format!("{} application/spdx+json ", attached[0])));
    assert!(lines[1].starts_with(&format!("{} application/spdx+json ", attached[2])));
    let plain = json(&cli.ok(&["discover", "--json", "--artifact-type", "text/plain", &at]));
    assert_eq!(digests(&plain), [attached[1].clone()]);
    assert_eq!(plain["source"], "referrers API");
    assert_eq!(
        cli.ok(&["discover", "--artifact-type", "application/x-none", &at]),
        ""
    );
}

#[test]
fn copy_between_api_registries_carries_referrers_through_the_api() {
    let (a, b) = (ReferrersApi::start(), ReferrersApi::start());
    let cli = WasmOci::new();
    let digest = push(&cli, &a.reference("hello:v1"), &[]);
    let sbom = attach(
        &cli,
        &a.reference("hello:v1"),
        "sbom.spdx.json",
        b"{}",
        "application/spdx+json",
    )["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    // An artifact attached to the SBOM: referrers are followed recursively.
    let review = attach(
        &cli,
        &format!("{}@{sbom}", a.reference("hello")),
        "review.txt",
        b"ok\n",
        "text/plain",
    )["digest"]
        .as_str()
        .unwrap()
        .to_owned();

    let copied = json(&cli.ok(&[
        "copy",
        "--json",
        &a.reference("hello:v1"),
        &b.reference("copied/hello:v2"),
    ]));
    assert_eq!(copied["digest"], digest.as_str());
    assert_eq!(copied["referrers"], 2, "{copied}");
    for name in [&digest, &sbom, &review] {
        assert_eq!(
            manifest_bytes(&b.registry, "copied/hello", name),
            manifest_bytes(&a.registry, "hello", name),
            "{name}"
        );
    }
    // Listed by the destination's API; no tag but the one copied, on either side.
    let found = discover(&cli, &b.reference("copied/hello:v2"));
    assert_eq!(found["source"], "referrers API", "{found}");
    assert_eq!(digests(&found), std::slice::from_ref(&sbom));
    let nested = discover(&cli, &format!("{}@{sbom}", b.reference("copied/hello")));
    assert_eq!(digests(&nested), [review]);
    assert_eq!(tags(&b.registry, "copied/hello"), ["v2"]);
    assert_eq!(tags(&a.registry, "hello"), ["v1"]);
    assert!(
        b.referrers_requests()
            .iter()
            .any(|p| p.contains("/referrers/")),
        "the destination's API was never asked"
    );
}

#[test]
fn copy_from_the_api_to_the_tag_schema_and_back_keeps_the_referrers() {
    let api = ReferrersApi::start();
    let plain = Registry::start();
    let back = ReferrersApi::start();
    let cli = WasmOci::new();
    let digest = push(&cli, &api.reference("hello:v1"), &[]);
    let sbom = attach(
        &cli,
        &api.reference("hello:v1"),
        "sbom.spdx.json",
        b"{}",
        "application/spdx+json",
    )["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let tag = digest.replacen(':', "-", 1);

    // Into Distribution, which has no API: the referrers tag is written.
    let there = json(&cli.ok(&[
        "copy",
        "--json",
        &api.reference("hello:v1"),
        &plain.reference("hello:v1"),
    ]));
    assert_eq!(there["referrers"], 1, "{there}");
    assert_eq!(tags(&plain, "hello"), [tag.clone(), "v1".to_owned()]);
    let index = manifest(&plain, "hello", &tag);
    let sbom_bytes = manifest_bytes(&api.registry, "hello", &sbom).unwrap();
    assert_eq!(index["manifests"][0]["digest"], sbom.as_str());
    assert_eq!(index["manifests"][0]["size"], sbom_bytes.len());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
    let found = discover(&cli, &plain.reference("hello:v1"));
    assert_eq!(found["source"], format!("tag {tag}"));
    assert_eq!(digests(&found), std::slice::from_ref(&sbom));

    // And back into a registry with the API: listed by it, and no referrers tag copied.
    let again = json(&cli.ok(&[
        "copy",
        "--json",
        &plain.reference("hello:v1"),
        &back.reference("hello:v1"),
    ]));
    assert_eq!(again["referrers"], 1, "{again}");
    assert_eq!(
        manifest_bytes(&back.registry, "hello", &sbom),
        Some(sbom_bytes)
    );
    let found = discover(&cli, &back.reference("hello:v1"));
    assert_eq!(found["source"], "referrers API", "{found}");
    assert_eq!(digests(&found), [sbom]);
    assert_eq!(tags(&back.registry, "hello"), ["v1"]);
}

#[test]
fn a_referrer_of_another_subject_in_the_api_answer_is_not_copied() {
    let api = ReferrersApi::start();
    let cli = WasmOci::new();
    let v1 = push(&cli, &api.reference("hello:v1"), &[]);
    let v2 = push(&cli, &api.reference("hello:v2"), &["--annotation", "n=2"]);
    assert_ne!(v1, v2);
    let mine = attach(
        &cli,
        &api.reference("hello:v1"),
        "sbom.json",
        b"{}",
        "application/spdx+json",
    );
    let other = attach(
        &cli,
        &api.reference("hello:v2"),
        "x.txt",
        b"x",
        "text/plain",
    );
    let (mine, other) = (
        mine["digest"].as_str().unwrap().to_owned(),
        other["digest"].as_str().unwrap().to_owned(),
    );
    let real_size = manifest_bytes(&api.registry, "hello", &mine).unwrap().len();
    // The registry lists v2's note among v1's referrers too, and lies about v1's own SBOM.
    let listed: Vec<serde_json::Value> = [&mine, &other]
        .iter()
        .map(|digest| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": real_size + 1,
                "artifactType": "application/x-lie",
            })
        })
        .collect();
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": listed});
    api.answer_referrers_with(move |_| {
        Reply::new(200)
            .header("Content-Type", INDEX_TYPE)
            .body(index.to_string())
    });

    let plain = Registry::start();
    let with_api = ReferrersApi::start();
    for dst in [&plain.addr, &with_api.addr] {
        let to = format!("{dst}/hello:v1");
        let copier = WasmOci::new();
        let copied = json(&copier.ok(&["copy", "--json", &api.reference("hello:v1"), &to]));
        assert_eq!(copied["referrers"], 1, "{copied}");
        let log = std::fs::read_to_string(copier.log_file()).unwrap();
        assert!(
            log.lines().any(|l| l.contains(
                "a listed referrer does not name this manifest as its subject; not copied"
            ) && l.contains(&other)),
            "{log}"
        );
        let found = discover(&cli, &to);
        assert_eq!(digests(&found), std::slice::from_ref(&mine), "{found}");
        // What the manifest says of itself, not what the list said of it.
        assert_eq!(
            found["referrers"][0]["artifactType"],
            "application/spdx+json"
        );
        assert_eq!(found["referrers"][0]["size"], real_size);
    }
    assert_eq!(manifest_bytes(&plain, "hello", &other), None);
    assert_eq!(manifest_bytes(&with_api.registry, "hello", &other), None);
}

/// An index of `manifests`, as a registry with the API answers.
fn index(manifests: serde_json::Value) -> Reply {
    Reply::new(200)
        .header("Content-Type", INDEX_TYPE)
        .body(serde_json::json!({"schemaVersion": 2, "manifests": manifests}).to_string())
}

/// A hostile referrers API answer: what it is, and what the error must say.
type Hostile = (
    &'static str,
    Box<dyn Fn(&str) -> Reply + Send + Sync>,
    &'static str,
);

#[test]
fn a_huge_or_garbage_api_answer_is_refused_and_a_copy_writes_no_tag() {
    let api = ReferrersApi::start();
    let cli = WasmOci::new();
    push(&cli, &api.reference("hello:v1"), &[]);
    let cases: Vec<Hostile> = vec![
        (
            "an endless body",
            Box::new(|_| Reply::new(200).header("Content-Type", INDEX_TYPE).endless()),
            "a page of the referrers list is over 4194304 bytes",
        ),
        (
            "not JSON",
            Box::new(|_| Reply::new(200).body("<html>referrers</html>")),
            "(its referrers)",
        ),
        (
            "JSON that is no index",
            Box::new(|_| Reply::new(200).body("{}")),
            "missing field `manifests`",
        ),
        (
            "a digest that is a path",
            Box::new(|_| {
                index(serde_json::json!([{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": "sha256:../../../v2/x/manifests/latest",
                    "size": 2,
                }]))
            }),
            "sha256:../../../v2/x/manifests/latest",
        ),
        (
            "over 10000 referrers",
            Box::new(move |_| {
                let one = |i: usize| {
                    serde_json::json!({
                        "mediaType": "m",
                        "digest": format!("sha256:{i:064x}"),
                        "size": 1,
                    })
                };
                index((0..10_001).map(one).collect())
            }),
            "over 10000 referrers",
        ),
        (
            "a next page that is the same page",
            Box::new(|path| {
                index(serde_json::json!([])).header("Link", &format!("<{path}>; rel=\"next\""))
            }),
            "the referrers list's next page is the one just read",
        ),
        (
            "a next page on another host",
            Box::new(|_| {
                index(serde_json::json!([]))
                    .header("Link", "<http://127.0.0.2:9/v2/x>; rel=\"next\"")
            }),
            "is on another host",
        ),
        (
            "pages without end",
            Box::new(|path| {
                let n: u64 = path
                    .split_once("page=")
                    .map_or(0, |(_, n)| n.parse().unwrap());
                let base = path.split_once('?').map_or(path, |(p, _)| p);
                index(serde_json::json!([]))
                    .header("Link", &format!("<{base}?page={}>; rel=\"next\"", n + 1))
            }),
            "the referrers list goes on for over 100 pages",
        ),
    ];
    let dst = Registry::start();
    for (what, reply, expected) in cases {
        api.answer_referrers_with(move |request| reply(&request.path));
        let out = cli.run(&["discover", &api.reference("hello:v1")]);
        assert!(!out.status.success(), "{what}: {}", describe(&out));
        assert!(
            stderr(&out).contains(expected),
            "{what}: {}",
            describe(&out)
        );
        let out = cli.run(&[
            "copy",
            &api.reference("hello:v1"),
            &dst.reference("hello:v1"),
        ]);
        assert!(!out.status.success(), "{what}: {}", describe(&out));
        assert!(
            stderr(&out).contains(expected),
            "{what}: {}",
            describe(&out)
        );
        // The tag is written last: nothing points at a half-copied artifact.
        assert_eq!(manifest_bytes(&dst, "hello", "v1"), None, "{what}");
    }
}

#[test]
fn an_api_answer_that_is_no_referrers_list_stops_attach_and_copy_before_they_list_nothing() {
    // A registry that answers 200 `{}` to any path it does not know: taken for the referrers
    // API, it would have attach and copy write no referrers tag, and list the artifact
    // nowhere.
    let api = ReferrersApi::start();
    api.answer_referrers_with(|_| {
        Reply::new(200)
            .header("Content-Type", "application/json")
            .body("{}")
    });
    let cli = WasmOci::new();
    push(&cli, &api.reference("hello:v1"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom.json");
    let content = br#"{"spdxVersion":"SPDX-2.3","name":"no-list"}"#;
    std::fs::write(&sbom, content).unwrap();
    let out = cli.run(&[
        "attach",
        &api.reference("hello:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    let said = stderr(&out);
    assert!(
        said.contains("(its referrers)") && said.contains("missing field `manifests`"),
        "{}",
        describe(&out)
    );
    // Asked before anything was sent: not even the file's blob is there.
    assert!(
        !api.registry
            .blob_file(&crate::support::sha256(content))
            .exists()
    );
    assert_eq!(tags(&api.registry, "hello"), ["v1"]);

    // A copy into it stops before its tag.
    let plain = Registry::start();
    push(&cli, &plain.reference("hello:v1"), &[]);
    cli.ok(&[
        "attach",
        &plain.reference("hello:v1"),
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
    ]);
    let out = cli.run(&[
        "copy",
        &plain.reference("hello:v1"),
        &api.reference("copied:v1"),
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("missing field `manifests`"),
        "{}",
        describe(&out)
    );
    assert_eq!(manifest_bytes(&api.registry, "copied", "v1"), None);
}

#[test]
fn copy_from_the_api_to_a_layout_and_back_keeps_the_referrers() {
    let api = ReferrersApi::start();
    let back = ReferrersApi::start();
    let cli = WasmOci::new();
    let digest = push(&cli, &api.reference("hello:v1"), &[]);
    let sbom = attach(
        &cli,
        &api.reference("hello:v1"),
        "sbom.spdx.json",
        b"{}",
        "application/spdx+json",
    )["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:v1", dir.path().join("airgap").display());

    let out = json(&cli.ok(&["copy", "--json", &api.reference("hello:v1"), &layout]));
    assert_eq!(out["referrers"], 1, "{out}");
    // The layout has no API: the referrers index is tagged in it.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("airgap/index.json")).unwrap())
            .unwrap();
    let tag = digest.replacen(':', "-", 1);
    assert!(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str()),
        "{index}"
    );

    let again = json(&cli.ok(&["copy", "--json", &layout, &back.reference("hello:v1")]));
    assert_eq!(again["referrers"], 1, "{again}");
    let found = discover(&cli, &back.reference("hello:v1"));
    assert_eq!(found["source"], "referrers API", "{found}");
    assert_eq!(digests(&found), std::slice::from_ref(&sbom));
    assert_eq!(
        manifest_bytes(&back.registry, "hello", &sbom),
        manifest_bytes(&api.registry, "hello", &sbom)
    );
    assert_eq!(tags(&back.registry, "hello"), ["v1"]);

    // `save` asks the API too, and writes the index the layout's readers look for.
    let saved = dir.path().join("saved");
    cli.ok(&[
        "save",
        &api.reference("hello:v1"),
        "-o",
        saved.to_str().unwrap(),
    ]);
    let index = std::fs::read_to_string(saved.join("index.json")).unwrap();
    assert!(index.contains(&tag), "{index}");
    assert!(
        std::fs::read_dir(saved.join("blobs/sha256"))
            .unwrap()
            .any(|e| Some(e.unwrap().file_name().to_string_lossy().as_ref())
                == sbom.strip_prefix("sha256:")),
        "the SBOM's manifest is not in the saved layout"
    );
}

#[test]
fn precompiled_code_listed_by_the_api_is_adopted_and_another_modules_is_not() {
    use crate::precompiled::{
        ADOPTED, COMPILED_LOCALLY, COMPILED_TYPE, Fleet, PASSWORD, assert_hello, compiled_files,
        log,
    };
    let api = ReferrersApi::start();
    let dir = tempfile::tempdir().unwrap();
    let builder = WasmOci::new();
    let key = Fleet::generate_key(&builder, dir.path(), "fleet");
    let key = key.to_str().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::to_vec(&serde_json::json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {api.reference("hello"): [{
                "type": "sigstoreSigned",
                "keyPath": dir.path().join("fleet.pub"),
                "signedIdentity": {"type": "matchRepository"},
            }]}},
        }))
        .unwrap(),
    )
    .unwrap();
    let with_key = |args: &[&str]| {
        let out = builder
            .command()
            .env("COSIGN_PASSWORD", PASSWORD)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let run = |node: &WasmOci, reference: &str| {
        node.run(&["run", "--policy", policy.to_str().unwrap(), reference])
    };
    // Two manifests of the same module, each signed, each with its code compiled and pushed.
    let (v1, v2) = (api.reference("hello:v1"), api.reference("hello:v2"));
    let v1_digest = push(&builder, &v1, &[]);
    let v2_digest = push(&builder, &v2, &["--annotation", "n=2"]);
    for reference in [&v1, &v2] {
        with_key(&["sign", reference, "--key", key]);
        let pushed = json(&with_key(&[
            "compile",
            "--json",
            "--push",
            "--sign-key",
            key,
            reference,
        ]));
        assert_eq!(pushed.as_array().unwrap().len(), 2, "{pushed}");
    }
    // Listed by the API, with no referrers tag.
    let found = discover(&builder, &v1);
    assert_eq!(found["source"], "referrers API", "{found}");
    assert_eq!(digests(&found).len(), 2, "{found}");
    assert!(
        found["referrers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["artifactType"] == COMPILED_TYPE),
        "{found}"
    );
    let referrers_tag = v1_digest.replacen(':', "-", 1);
    assert!(
        !tags(&api.registry, "hello").contains(&referrers_tag),
        "{:?}",
        tags(&api.registry, "hello")
    );

    // A node with an empty cache loads v1's code.
    let node = WasmOci::new();
    assert_hello(&run(&node, &v1));
    let logged = log(&node);
    assert!(logged.contains(ADOPTED), "{logged}");
    assert!(!logged.contains(COMPILED_LOCALLY), "{logged}");
    assert_eq!(compiled_files(&node).len(), 1);

    // The registry then lists v2's code (signed, for the same wasm) as v1's: its subject is
    // another manifest, so a node compiles rather than take it.
    let r = http(
        &api.addr,
        "GET",
        &format!("/v2/hello/referrers/{v2_digest}"),
        &[],
        b"",
    )
    .unwrap();
    let v2_list = r.body;
    assert_eq!(
        json(&String::from_utf8_lossy(&v2_list))["manifests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    api.answer_referrers_with(move |_| {
        Reply::new(200)
            .header("Content-Type", INDEX_TYPE)
            .body(v2_list.clone())
    });
    let node = WasmOci::new();
    assert_hello(&run(&node, &v1));
    let logged = log(&node);
    assert!(logged.contains(COMPILED_LOCALLY), "{logged}");
    assert!(!logged.contains(ADOPTED), "{logged}");
    assert!(
        logged.contains(&format!("not this module's manifest {v1_digest}")),
        "{logged}"
    );
}

#[test]
fn concurrent_attaches_through_the_api_are_all_listed_without_a_tag() {
    let api = ReferrersApi::start();
    let cli = WasmOci::new();
    let reference = api.reference("hello:v1");
    let subject = push(&cli, &reference, &[]);
    let dir = tempfile::tempdir().unwrap();
    let commands: Vec<_> = (0..6)
        .map(|i| {
            let note = dir.path().join(format!("note-{i}.txt"));
            std::fs::write(&note, format!("note {i}\n")).unwrap();
            let mut cmd = cli.command();
            cmd.args([
                "attach",
                "--json",
                &reference,
                note.to_str().unwrap(),
                "--artifact-type",
                "text/plain",
            ]);
            cmd
        })
        .collect();
    let mut attached = Vec::new();
    for out in outputs_of_concurrent(commands) {
        assert!(out.status.success(), "{}", describe(&out));
        let value = json(&String::from_utf8_lossy(&out.stdout));
        assert!(value.get("referrers_tag").is_none(), "{value}");
        attached.push(value["digest"].as_str().unwrap().to_owned());
    }
    let mut listed = digests(&discover(&cli, &reference));
    listed.sort();
    attached.sort();
    assert_eq!(listed, attached);
    assert!(!tags(&api.registry, "hello").contains(&subject.replacen(':', "-", 1)));
}

#[test]
fn the_referrers_api_behind_basic_auth_is_asked_with_the_credentials() {
    const USER: &str = "carol";
    const PASSWORD: &str = "referrers-Pa55word";
    let api = ReferrersApi::start_secure(Secure {
        tls: false,
        user: Some((USER, PASSWORD)),
    });
    let cli = WasmOci::new();
    let with_password = |args: &[&str]| {
        let mut cmd = cli.command();
        cmd.args(["--username", USER, "--password-stdin"])
            .args(args);
        let out = output_with_stdin(cmd, PASSWORD);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let reference = api.reference("private/hello:v1");
    let hello = testdata("hello.wasm").display().to_string();
    with_password(&["push", &hello, &reference]);
    // Without credentials the API says 401, as the registry does.
    let r = http(
        &api.addr,
        "GET",
        &format!("/v2/private/hello/referrers/sha256:{}", "0".repeat(64)),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.head);

    let dir = tempfile::tempdir().unwrap();
    let sbom = dir.path().join("sbom.json");
    std::fs::write(&sbom, b"{}").unwrap();
    let attached = json(&with_password(&[
        "attach",
        "--json",
        &reference,
        sbom.to_str().unwrap(),
        "--artifact-type",
        "application/spdx+json",
    ]));
    assert!(attached.get("referrers_tag").is_none(), "{attached}");
    let found = json(&with_password(&["discover", "--json", &reference]));
    assert_eq!(found["source"], "referrers API", "{found}");
    assert_eq!(digests(&found), [attached["digest"].as_str().unwrap()]);
}
