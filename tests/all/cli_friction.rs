//! What a newcomer types, with the usual mistakes (issue 27): docker's spellings on `run`,
//! usage errors that exit 125 as `docker run` does, wasm-oci's options after the module, serve
//! with only its own options, `push REF FILE`, `--addr PORT`, text modules, `-o` on every verb
//! that writes a file, and what a registry's names may not do to the terminal or the disk.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{Registry, WasmOci, describe, put_manifest, stderr, testdata, wasm_manifest};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_options_on_run_are_named_with_wasm_oci_s_spelling_and_exit_125() {
    let cli = WasmOci::new();
    // No registry listens there: each is refused before anything is asked of one.
    let reference = "localhost:1/hello:v1";
    for (args, says) in [
        (
            vec!["run", "-v", "./d:/d", reference],
            "unknown option -v (use --dir ./d::/d)",
        ),
        (
            vec!["run", "--volume", "./d:/d:ro", reference],
            "unknown option --volume (use --dir ./d::/d:ro)",
        ),
        (
            vec!["run", "-e", "A=1", reference],
            "unknown option -e (use --env KEY=VALUE)",
        ),
        (
            vec!["run", "--nosuchflag", reference],
            "unknown option --nosuchflag (`wasm-oci run --help` lists",
        ),
        (
            vec!["run", "--max-mem", "1MiB", reference],
            "unknown option --max-mem (did you mean --max-memory?",
        ),
    ] {
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("invalid reference"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn usage_errors_of_run_exit_125_and_a_guest_s_own_2_stays_2() {
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm");
    for args in [
        vec!["run", "--pull", "sometimes", path(&hello)],
        vec!["run", "--timeout", "soon", path(&hello)],
        vec!["run"],
        vec![
            "--cache-dir",
            "/nonexistent",
            "run",
            "--fuel",
            "x",
            path(&hello),
        ],
        vec!["serve", "--addr", "nowhere", path(&hello)],
    ] {
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("error:"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    // Other verbs keep clap's 2, and help is no error.
    let out = cli.run(&["pull", "--pull", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = cli.run(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // A guest that exits 2 (a text module, run as wasmtime runs one) still gives 2.
    let dir = tempfile::tempdir().unwrap();
    let exit2 = dir.path().join("exit2.wat");
    fs::write(
        &exit2,
        r#"(module
             (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
             (memory (export "memory") 1)
             (func (export "_start") (call $exit (i32.const 2))))"#,
    )
    .unwrap();
    let out = cli.run(&["run", path(&exit2)]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(stderr(&out), "", "{}", describe(&out));
}

#[test]
fn text_modules_run_and_a_bad_one_is_named_by_line_and_column() {
    let cli = WasmOci::new();
    let out = cli.run(&["run", path(&testdata("hello.wat"))]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "Hello from WebAssembly!\n");
    let out = cli.run(&["run", path(&testdata("echo.wat")), "--", "a", "b c"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "a b c\n");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wat");
    fs::write(&bad, "(module\n  (func (oops)))\n").unwrap();
    let out = cli.run(&["run", path(&bad)]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("bad.wat:2:"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_option_of_wasm_oci_after_the_module_reaches_the_guest_with_a_warning() {
    let cli = WasmOci::new();
    let echo = testdata("echo.wasm");
    let out = cli.run(&["run", path(&echo), "--env", "A=1", "x"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "--env A=1 x\n");
    let err = stderr(&out);
    assert!(
        err.contains("warning: --env after the module is passed to the guest, not to wasm-oci"),
        "{err}"
    );
    // After `--`, the words are plainly the guest's: no warning.
    let out = cli.run(&["run", path(&echo), "--", "--env", "A=1"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "--env A=1\n");
    assert_eq!(stderr(&out), "", "{}", describe(&out));
    // A guest's own options are not wasm-oci's.
    let out = cli.run(&["run", path(&echo), "--verbose", "--help"]);
    assert_eq!(stdout(&out), "--verbose --help\n");
    assert_eq!(stderr(&out), "", "{}", describe(&out));
}

/// What bash completes after `words` (the word under the cursor last), with wasm-oci's script.
fn bash_completes(cli: &WasmOci, words: &str, cwd: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wasm-oci.bash");
    fs::write(&file, cli.ok(&["completion", "bash"])).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {file}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
             f=$(complete -p wasm-oci | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
             $f wasm-oci \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file = file.display()
        ))
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_run_s_options_before_the_module_and_files_after_it() {
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("--dir-notes.txt"), "").unwrap();
    fs::write(dir.path().join("input.txt"), "").unwrap();
    let before = bash_completes(&cli, "wasm-oci run --di", dir.path());
    assert_eq!(before, ["--dir"], "{before:?}");
    let before = bash_completes(&cli, "wasm-oci run --dir x --ma", dir.path());
    assert!(before.contains(&"--max-memory".to_owned()), "{before:?}");
    // After the module: files (the guest's arguments), never wasm-oci's options.
    let after = bash_completes(&cli, "wasm-oci run ./m.wasm --di", dir.path());
    assert_eq!(after, ["--dir-notes.txt"], "{after:?}");
    let after = bash_completes(&cli, "wasm-oci run --dir x ./m.wasm in", dir.path());
    assert_eq!(after, ["input.txt"], "{after:?}");
    let after = bash_completes(
        &cli,
        "wasm-oci --cache-dir c run --pull never m:v1 --",
        dir.path(),
    );
    assert!(
        !after.iter().any(|w| w == "--max-memory" || w == "--dir"),
        "{after:?}"
    );
}

#[test]
fn serve_shows_and_takes_only_its_own_options() {
    let cli = WasmOci::new();
    let help = cli.ok(&["serve", "--help"]);
    for own in [
        "--addr",
        "--max-memory",
        "--timeout",
        "--max-concurrency",
        "--max-body",
        "--allow-http",
        "--shutdown-timeout",
        "--env",
        "--pull",
        "--policy",
    ] {
        assert!(help.contains(own), "{own}: {help}");
    }
    for not_serve in [
        "--dir",
        "--fuel",
        "--argv0",
        "--allow-connect",
        "--allow-bind",
        "--allow-dns",
        "[ARGS]",
    ] {
        assert!(!help.contains(not_serve), "{not_serve}: {help}");
    }
    // Refused by the parser, before anything is read, pulled or compiled.
    let hello = testdata("hello.wasm");
    for args in [
        vec!["serve", "--fuel", "10", path(&hello)],
        vec!["serve", "--dir", ".", path(&hello)],
        vec!["serve", path(&hello), "guest-argument"],
        vec!["serve", "--allow-dns", path(&hello)],
    ] {
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("unexpected argument"),
            "{args:?}: {}",
            describe(&out)
        );
    }
}

#[test]
fn run_of_a_proxy_refuses_a_command_s_options_before_compiling_and_addr_takes_a_port() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello-http:v1");
    let proxy = &crate::support::http_guests().proxy;
    cli.ok(&["push", path(proxy), &reference]);
    let compiled = cli.cache.path().join("v1/compiled");
    let compiled_files = || {
        fn count(dir: &Path) -> usize {
            fs::read_dir(dir).map_or(0, |d| {
                d.map(|e| {
                    let p = e.unwrap().path();
                    if p.is_dir() { count(&p) } else { 1 }
                })
                .sum()
            })
        }
        count(&compiled)
    };
    for (args, names) in [
        (vec!["--fuel", "100"], "options of commands: --fuel;"),
        (vec!["--dir", "."], "options of commands: --dir;"),
        (vec!["--allow-dns"], "options of commands: --allow-dns;"),
    ] {
        let mut line = vec!["run"];
        line.extend(&args);
        line.push(&reference);
        let out = cli.run(&line);
        assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
        assert!(stderr(&out).contains(names), "{}", describe(&out));
        assert_eq!(compiled_files(), 0, "refused after a compile: {args:?}");
    }
    let out = cli.run(&["run", &reference, "an-argument"]);
    assert!(
        stderr(&out).contains("options of commands: guest arguments;"),
        "{}",
        describe(&out)
    );
    assert_eq!(compiled_files(), 0);

    // --addr PORT and --addr localhost:PORT listen on loopback.
    for addr in [
        crate::support::free_port().to_string(),
        format!("localhost:{}", crate::support::free_port()),
    ] {
        let mut child = cli
            .command()
            .args(["serve", "--addr", &addr, &reference])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0 {
            if line.contains("Serving HTTP on") {
                break;
            }
        }
        let port = addr.rsplit(':').next().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            line.contains(&format!("Serving HTTP on http://127.0.0.1:{port}/"))
                || line.contains(&format!("Serving HTTP on http://[::1]:{port}/")),
            "{addr}: {line}"
        );
    }
}

#[test]
fn push_in_oras_order_says_which_argument_looks_like_what() {
    let cli = WasmOci::new();
    let hello = testdata("hello.wasm");
    let out = cli.run(&["push", "localhost:1/hello:v1", path(&hello)]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "push takes FILE then REF: {} looks like a file and localhost:1/hello:v1 like a reference",
            hello.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "run `wasm-oci push {} localhost:1/hello:v1`",
            hello.display()
        )),
        "{err}"
    );
}

#[test]
fn sign_s_password_hint_names_what_works_on_sign() {
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release");
    let out = cli
        .command()
        .args(["key", "generate", path(&prefix)])
        .env("COSIGN_PASSWORD", "k3y-pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let key = dir.path().join("release.key");
    let hello = testdata("hello.wasm");
    for args in [
        vec!["sign", "localhost:1/hello:v1", "--key", path(&key)],
        vec![
            "push",
            path(&hello),
            "localhost:1/hello:v1",
            "--sign-key",
            path(&key),
        ],
    ] {
        let out = cli
            .command()
            .args(&args)
            .env_remove("COSIGN_PASSWORD")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains("set COSIGN_PASSWORD to its password"), "{err}");
        assert!(
            !err.contains("or pass --password-stdin"),
            "--password-stdin is the registry's password here: {err}"
        );
        let out = cli
            .command()
            .args(&args)
            .env("COSIGN_PASSWORD", "wrong")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains("COSIGN_PASSWORD does not decrypt it"), "{err}");
        assert!(!err.contains("--password-stdin with"), "{err}");
    }
}

#[test]
fn compile_inspect_and_save_take_policy() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    fs::write(
        &policy,
        format!(
            r#"{{"default":[{{"type":"insecureAcceptAnything"}}],
                 "transports":{{"docker":{{"{}":[{{"type":"reject"}}]}}}}}}"#,
            registry.addr
        ),
    )
    .unwrap();
    cli.ok(&["push", path(&testdata("hello.wasm")), &reference]);
    let layout = dir.path().join("layout");
    for args in [
        vec!["compile", &reference],
        vec!["inspect", &reference],
        vec!["save", &reference, "-o", path(&layout)],
    ] {
        let mut with_policy = args.clone();
        with_policy.extend(["--policy", path(&policy)]);
        let out = cli.run(&with_policy);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).contains("reject"),
            "{args:?}: {}",
            describe(&out)
        );
    }
    assert!(!layout.join("index.json").exists());
    // Without it, the same commands work.
    cli.ok(&["compile", &reference]);
}

#[test]
fn inspect_prints_a_component_s_world_escaped() {
    // A component whose export (and so the world inspect derives) carries an OSC sequence that
    // would set the terminal's title, and a bell.
    let name = "wasi:cli/run@0.2.0\u{1b}]0;pwned\u{7}";
    let mut section = vec![1u8, 0x00, name.len() as u8];
    section.extend(name.as_bytes());
    section.extend([0x05, 0x00, 0x00]); // an instance, index 0, no type ascription
    let mut wasm = b"\0asm\x0d\x00\x01\x00".to_vec();
    wasm.push(11); // the component export section
    wasm.push(section.len() as u8);
    wasm.extend(section);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("title.wasm");
    fs::write(&file, wasm).unwrap();
    let out = WasmOci::new().run(&["inspect", path(&file)]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("World:     wasi:cli/command@0.2.0"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
}

#[test]
fn pull_output_never_replaces_a_file_nor_takes_a_hidden_or_path_title() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", path(&testdata("hello.wasm")), &reference]);
    // The same artifact, its layer titled by a hostile registry.
    let (_, mut hostile) = wasm_manifest(&registry, "hello", "v1");
    let mut tags = Vec::new();
    for title in [".bashrc", "../escape.wasm", "sub/dir.wasm"] {
        hostile["layers"][0]["annotations"]["org.opencontainers.image.title"] = title.into();
        let tag = format!("t{}", tags.len());
        put_manifest(
            &registry,
            "hello",
            &tag,
            hostile["mediaType"].as_str().unwrap(),
            &serde_json::to_vec(&hostile).unwrap(),
        );
        tags.push((title, tag));
    }
    let home = tempfile::tempdir().unwrap();
    let bashrc = home.path().join(".bashrc");
    fs::write(&bashrc, "# mine\n").unwrap();
    for (title, tag) in &tags {
        let out = cli.run(&[
            "pull",
            &registry.reference(&format!("hello:{tag}")),
            "-o",
            path(home.path()),
            "--force",
        ]);
        assert!(out.status.success(), "{title}: {}", describe(&out));
        assert!(
            stderr(&out).contains("is not a plain file name; writing hello.wasm"),
            "{title}: {}",
            describe(&out)
        );
        fs::remove_file(home.path().join("hello.wasm")).unwrap();
    }
    assert_eq!(fs::read_to_string(&bashrc).unwrap(), "# mine\n");
    assert!(!home.path().parent().unwrap().join("escape.wasm").exists());

    // An existing file is not replaced without --force: named, or found in a directory.
    let target = home.path().join("mine.wasm");
    fs::write(&target, "precious").unwrap();
    for out_arg in ["-o", "--output", "--out"] {
        let out = cli.run(&["pull", &reference, out_arg, path(&target)]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            stderr(&out).contains("exists: pass --force to replace it"),
            "{}",
            describe(&out)
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
    }
    fs::write(home.path().join("hello.wasm"), "also mine").unwrap();
    let out = cli.run(&["pull", &reference, "-o", path(home.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        fs::read_to_string(home.path().join("hello.wasm")).unwrap(),
        "also mine"
    );
    cli.ok(&["pull", &reference, "-o", path(&target), "--force"]);
    assert_eq!(
        fs::read(&target).unwrap(),
        fs::read(testdata("hello.wasm")).unwrap()
    );
    // A new file is written whole, and nothing else is left beside it.
    let fresh = tempfile::tempdir().unwrap();
    cli.ok(&["pull", &reference, "--output", path(fresh.path())]);
    let names: Vec<_> = fs::read_dir(fresh.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["hello.wasm"]);
}

#[test]
fn prefetch_without_a_terminal_prints_each_failure_once() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    cli.ok(&[
        "push",
        path(&testdata("hello.wasm")),
        &registry.reference("hello:v1"),
    ]);
    let missing = registry.reference("missing:v1");
    let out = cli.run(&[
        "prefetch",
        "--no-compile",
        &registry.reference("hello:v1"),
        &missing,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(
        err.matches(&format!("failed {missing}: ")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("prefetched 1 of 2 references"), "{err}");
    // --json: every verb's keys for the same facts.
    let out = cli.run(&["prefetch", "--json", &registry.reference("hello:v1")]);
    assert!(out.status.success(), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pulled: serde_json::Value =
        serde_json::from_str(&cli.ok(&["pull", "--json", &registry.reference("hello:v1")]))
            .unwrap();
    for key in [
        "reference",
        "digest",
        "layer_digest",
        "layer_media_type",
        "size",
    ] {
        assert_eq!(json[0][key], pulled[key], "{key}: {json} {pulled}");
    }
}

#[test]
fn fingerprints_say_sha256_and_times_are_rfc3339_in_every_json() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release");
    let generated = cli
        .command()
        .args(["key", "generate", path(&prefix)])
        .env("COSIGN_PASSWORD", "k3y-pass")
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", describe(&generated));
    // What `key generate` prints: the fingerprint as every JSON names it.
    let fingerprint = stdout(&generated)
        .lines()
        .find(|l| l.starts_with("sha256:"))
        .expect("key generate prints the fingerprint")
        .to_owned();
    let key = dir.path().join("release.key");
    let public = dir.path().join("release.pub");
    let reference = registry.reference("apps/hello:v1");
    cli.ok(&["push", path(&testdata("hello.wasm")), &reference]);
    let signed = cli
        .command()
        .args(["sign", &reference, "--key", path(&key), "--json"])
        .env("COSIGN_PASSWORD", "k3y-pass")
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", describe(&signed));
    let signed: serde_json::Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(signed["key_fingerprint"], fingerprint.as_str(), "{signed}");
    let verified: serde_json::Value =
        serde_json::from_str(&cli.ok(&["verify", &reference, "--key", path(&public), "--json"]))
            .unwrap();
    assert_eq!(
        verified["key_fingerprint"],
        fingerprint.as_str(),
        "{verified}"
    );
    let policy = dir.path().join("policy.json");
    fs::write(
        &policy,
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/apps":[{{
                "type":"sigstoreSigned","keyPath":"{}",
                "signedIdentity":{{"type":"matchRepository"}}}}]}}}}}}"#,
            registry.addr,
            public.display()
        ),
    )
    .unwrap();
    let pulled: serde_json::Value =
        serde_json::from_str(&cli.ok(&["pull", &reference, "--policy", path(&policy), "--json"]))
            .unwrap();
    let verdict = &pulled["verified"][0];
    assert_eq!(verdict["key_fingerprint"], fingerprint.as_str(), "{pulled}");
    let at = verdict["verified_at"].as_str().unwrap_or_default();
    assert!(
        humantime::parse_rfc3339(at).is_ok() && at.ends_with('Z'),
        "{pulled}"
    );
}

#[test]
fn ctrl_c_during_a_pull_takes_the_bars_off_the_screen_and_exits_130() {
    use crate::cli::{Tmux, on_terminal};
    use crate::proxy::{Fault, Proxy};
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("big.wasm");
    fs::write(&module, crate::support::padded_hello(8 << 20)).unwrap();
    cli.ok(&["push", path(&module), &registry.reference("big:v1")]);
    // Half the layer arrives, then nothing: the bar stays on screen until Ctrl-C.
    let proxy = Proxy::start(&registry.addr, Fault::StallFirstBlob);
    let tmux = Tmux::start(
        &on_terminal(&cli, &["pull", &proxy.reference("big:v1")]),
        &[],
    );
    let raw = dir.path().join("raw.log");
    tmux.tmux(&["pipe-pane", "-O", &format!("cat > '{}'", raw.display())]);
    tmux.wait_for("big:v1 wasm");
    tmux.tmux(&["send-keys", "C-c"]);
    let screen = tmux.wait_for("EXIT=");
    let raw = String::from_utf8_lossy(&fs::read(&raw).unwrap_or_default()).into_owned();
    assert!(screen.contains("EXIT=130"), "{screen}");
    assert!(
        !screen.contains("big:v1 wasm"),
        "a bar was left behind: {screen}\nwritten: {raw:?}"
    );
    assert!(!screen.contains("=>"), "a bar was left behind: {screen}");
}

#[test]
fn a_spinner_shows_while_a_module_compiles_on_a_terminal_and_is_gone_after() {
    use crate::cli::{Tmux, on_terminal};
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("proxy:v1");
    cli.ok(&[
        "push",
        path(&crate::support::http_guests().proxy),
        &reference,
    ]);
    cli.ok(&["pull", &reference]);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw.log");
    let tmux = Tmux::start(
        &format!("sleep 0.3; {}", on_terminal(&cli, &["compile", &reference])),
        &[],
    );
    tmux.tmux(&["pipe-pane", "-O", &format!("cat > '{}'", raw.display())]);
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("EXIT=0"), "{screen}");
    let raw = String::from_utf8_lossy(&fs::read(&raw).unwrap()).into_owned();
    assert!(
        raw.contains(&format!("compiling {reference}")),
        "no spinner: {raw:?}"
    );
    assert!(
        !screen.contains("compiling"),
        "the spinner was left: {screen}"
    );
    assert!(screen.contains("Compiled: "), "{screen}");
}

#[test]
fn the_pulled_log_event_says_digest_as_every_output_does() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:v1");
    cli.ok(&["push", path(&testdata("hello.wasm")), &reference]);
    let pulled: serde_json::Value =
        serde_json::from_str(&cli.ok(&["pull", "--json", &reference])).unwrap();
    let log = fs::read_to_string(cli.log_file()).unwrap();
    let event = log
        .lines()
        .find(|l| l.contains(" pulled "))
        .unwrap_or_else(|| panic!("no pulled event: {log}"));
    assert!(
        event.contains(&format!("digest={}", pulled["digest"].as_str().unwrap())),
        "{event}"
    );
    assert!(
        event.contains(&format!(
            "layer_digest={}",
            pulled["layer_digest"].as_str().unwrap()
        )),
        "{event}"
    );
}

/// `out` as every verb prints JSON: pretty (one key or value a line, two spaces a level, as
/// `serde_json`'s pretty printer writes it), ending in a newline.
fn pretty(out: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    let again = serde_json::to_string_pretty(&value).unwrap();
    assert!(out.ends_with('\n'), "{out:?}");
    assert_eq!(
        out.lines().count(),
        again.lines().count(),
        "not pretty: {out}"
    );
    // Keys may come in another order than the printer's: the same indents, counted.
    let indents = |text: &str| {
        let mut all: Vec<usize> = text
            .lines()
            .map(|l| l.len() - l.trim_start().len())
            .collect();
        all.sort_unstable();
        all
    };
    assert_eq!(indents(out), indents(&again), "not pretty: {out}");
    value
}

#[test]
fn every_verb_s_json_is_pretty_with_the_same_keys_for_the_same_facts() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let hello = testdata("hello.wasm");
    let size = fs::metadata(&hello).unwrap().len();
    let reference = registry.reference("hello:v1");
    let pushed = pretty(&cli.ok(&["push", path(&hello), &reference, "--json"]));
    // push's `digest` names what the tag names (the index), `manifest_digest` the wasm
    // manifest: the `digest` of every other verb.
    let digest = pushed["manifest_digest"].as_str().unwrap().to_owned();
    let layer_digest = pushed["layer_digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:") && layer_digest.starts_with("sha256:"));
    assert_ne!(digest, layer_digest);
    assert_ne!(pushed["digest"], digest.as_str());
    let same_facts = |value: &serde_json::Value, reference: &str| {
        assert_eq!(value["reference"], reference, "{value}");
        assert_eq!(value["digest"], digest.as_str(), "{value}");
        assert_eq!(value["layer_digest"], layer_digest.as_str(), "{value}");
        assert_eq!(value["size"], size, "{value}");
    };
    let mut as_manifest = pushed.clone();
    as_manifest["digest"] = as_manifest["manifest_digest"].clone();
    same_facts(&as_manifest, &reference);

    // pull names the file it wrote as its option does: output.
    let written = dir.path().join("copy.wasm");
    let pulled = pretty(&cli.ok(&["pull", &reference, "-o", path(&written), "--json"]));
    same_facts(&pulled, &reference);
    assert_eq!(pulled["output"], path(&written), "{pulled}");
    assert!(pulled.get("out").is_none(), "{pulled}");
    same_facts(
        &pretty(&cli.ok(&["compile", &reference, "--json"])),
        &reference,
    );
    same_facts(
        &pretty(&cli.ok(&["inspect", &reference, "--json"])),
        &reference,
    );
    let prefetched = pretty(&cli.ok(&["prefetch", &reference, "--json"]));
    same_facts(&prefetched[0], &reference);

    // cache ls, streamed, prints what print_json prints: pretty, element by element, and
    // last_used as every time in JSON, RFC 3339 in UTC.
    let other = registry.reference("other:v1");
    cli.ok(&["push", path(&hello), &other]);
    cli.ok(&["pull", &other]);
    let listed = pretty(&cli.ok(&["cache", "ls", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let ours = listed.iter().find(|l| l["reference"] == reference.as_str());
    same_facts(ours.expect("hello:v1 is listed"), &reference);
    for entry in listed {
        let at = entry["last_used"].as_str().unwrap_or_default();
        assert!(
            humantime::parse_rfc3339(at).is_ok() && at.ends_with('Z'),
            "{entry}"
        );
    }
    assert_eq!(
        pretty(&cli.ok(&["cache", "ls", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A manifest's own size is named as such: `size` is a wasm layer's bytes everywhere.
    // `tag` and `manifest` are of the document the tag names: here the index push wrote.
    let index = pushed["digest"].as_str().unwrap();
    let tagged = pretty(&cli.ok(&["tag", "--json", &reference, "stable"]));
    assert_eq!(tagged["digest"], index, "{tagged}");
    assert!(tagged.get("size").is_none(), "{tagged}");
    // The manifest as the registry stores it, a blob of its own.
    let manifest_size = fs::metadata(registry.blob_file(index)).unwrap().len();
    assert_eq!(tagged["manifest_size"], manifest_size, "{tagged}");
    let shown = pretty(&cli.ok(&["manifest", "--json", &reference]));
    assert_eq!(shown["digest"], index, "{shown}");
    assert_eq!(shown["manifest_size"], manifest_size, "{shown}");
    assert!(shown.get("size").is_none(), "{shown}");
    let tags = pretty(&cli.ok(&["tags", "--json", &registry.reference("hello")]));
    let mut names: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["stable", "v1"], "{tags}");
}

#[test]
fn a_large_module_s_compile_is_said_on_one_line_off_a_terminal() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    let wasm = crate::support::padded_hello(8 << 20);
    let size = wasm_oci::units::human_size(wasm.len() as u64);
    fs::write(&big, &wasm).unwrap();

    // A local file: said while it compiles, not when its kept code loads.
    let first = cli.run(&["run", path(&big)]);
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(stdout(&first), crate::support::HELLO);
    assert_eq!(
        stderr(&first),
        format!("compiling {} ({size})...\n", path(&big))
    );
    let again = cli.run(&["run", path(&big)]);
    assert_eq!(stdout(&again), crate::support::HELLO);
    assert_eq!(stderr(&again), "", "its code was kept: nothing compiles");

    // A reference: said once by compile, for both engines it compiles; then never again.
    let reference = registry.reference("big:v1");
    cli.ok(&["push", path(&big), &reference]);
    let pulled = cli.run(&["pull", &reference]);
    assert!(pulled.status.success(), "{}", describe(&pulled));
    let compiled = cli.run(&["compile", &reference]);
    assert!(compiled.status.success(), "{}", describe(&compiled));
    assert_eq!(
        stderr(&compiled),
        format!("compiling {reference} ({size})...\n")
    );
    let ran = cli.run(&["run", &reference]);
    assert_eq!(stdout(&ran), crate::support::HELLO);
    assert_eq!(stderr(&ran), "", "compile kept its code");

    // A small module is not announced.
    let small = cli.run(&["run", path(&testdata("hello.wasm"))]);
    assert_eq!(stdout(&small), crate::support::HELLO);
    assert_eq!(stderr(&small), "");
}

#[test]
fn the_readme_names_every_verb_that_prints_json() {
    use clap::CommandFactory as _;
    /// The verbs (as typed after `wasm-oci`) that take `--json`.
    fn walk(command: &clap::Command, path: &[&str], out: &mut Vec<Vec<String>>) {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p: Vec<&str> = path.to_vec();
            p.push(sub.get_name());
            if sub.get_arguments().any(|a| a.get_long() == Some("json")) {
                out.push(p.iter().map(|s| s.to_string()).collect());
            }
            walk(sub, &p, out);
        }
    }
    let mut with_json = Vec::new();
    walk(&wasm_oci::commands::Cli::command(), &[], &mut with_json);
    assert!(with_json.len() > 15, "{with_json:?}");
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("`--json` prints the result as JSON on stdout instead, on every verb")
        .expect("the README says which verbs print JSON");
    let list = &readme[start..start + readme[start..].find(". ").unwrap()];
    // The verbs as the list names them: `push`, ..., `cache ls|verify|prune`.
    let named: Vec<&str> = list.split('`').skip(3).step_by(2).collect();
    for verb in &with_json {
        let listed = match verb.as_slice() {
            [one] => named.contains(&one.as_str()),
            [group, sub] => named.iter().any(|n| {
                n.strip_prefix(&format!("{group} "))
                    .is_some_and(|subs| subs.split('|').any(|s| s == sub))
            }),
            _ => false,
        };
        assert!(listed, "the README's --json list lacks {verb:?}: {list}");
    }
}
