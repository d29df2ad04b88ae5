//! The runner: modules and components, wasmtime's flags, exit paths, the sandbox and the
//! precompiled-code cache, with guests built from testdata/ sources and run by reference.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{HELLO, Registry, WasmOci, describe, guests, hello, stderr};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The probe as a module and as a component, pushed to a fresh registry.
struct Pushed {
    _registry: Registry,
    module: String,
    component: String,
}

fn push_probes(cli: &WasmOci) -> Pushed {
    let registry = Registry::start();
    let module = registry.reference("probe:module");
    let component = registry.reference("probe:component");
    let g = guests();
    cli.ok(&["push", path(&g.probe), &module]);
    let pushed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["push", path(&g.probe_component), &component, "--json"]))
            .unwrap();
    assert_eq!(pushed["kind"], "component");
    Pushed {
        _registry: registry,
        module,
        component,
    }
}

#[test]
fn args_env_and_exit_status_are_the_same_for_modules_and_components() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    for reference in [&p.module, &p.component] {
        let out = cli.ok(&[
            "run",
            "--argv0",
            "probe",
            reference,
            "--",
            "args",
            "--flag",
            "two words",
        ]);
        assert_eq!(out, "probe\nargs\n--flag\ntwo words\n", "{reference}");

        let out = cli
            .command()
            .args([
                "run",
                "--env",
                "GREETING=hi",
                "--env",
                "FROM_HOST",
                reference,
                "--",
                "env",
                "GREETING",
            ])
            .env("FROM_HOST", "host value")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hi\n",
            "{}",
            describe(&out)
        );
        let out = cli
            .command()
            .args([
                "run",
                "--env",
                "FROM_HOST",
                reference,
                "--",
                "env",
                "FROM_HOST",
            ])
            .env("FROM_HOST", "host value")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "host value\n");
        // Nothing of the host's environment leaks in unasked.
        let out = cli
            .command()
            .args(["run", reference, "--", "env", "HOME"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "(unset)\n");

        // A component built with the preview 1 adapter reports exit(42) through WASI 0.2's
        // exit(result), which carries only success or failure: wasmtime 48 exits 1 for it too.
        let expected = if reference == &p.component { 1 } else { 42 };
        let out = cli.run(&["run", reference, "--", "exit", "42"]);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{reference}: {}",
            describe(&out)
        );
    }
}

#[test]
fn stdin_passes_through() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    for reference in [&p.module, &p.component] {
        let mut cmd = cli.command();
        cmd.args(["run", reference, "--", "stdin"]);
        let out = crate::support::output_with_stdin(cmd, "line one\nline two\n");
        assert_eq!(out.stdout, b"line one\nline two\n", "{reference}");
    }
}

#[test]
fn preopens_grant_exactly_what_they_say() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("in.txt"), "from the host").unwrap();
    fs::write(host.path().join("secret.txt"), "outside the preopen").unwrap();
    std::os::unix::fs::symlink(host.path().join("secret.txt"), data.join("escape-abs")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", data.join("escape-rel")).unwrap();
    let rw = format!("{}::/data", data.display());
    let ro = format!("{}::/data:ro", data.display());

    for reference in [&p.module, &p.component] {
        // No preopen unless asked.
        let out = cli.run(&["run", reference, "--", "cat", "/data/in.txt"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

        assert_eq!(
            cli.ok(&["run", "--dir", &rw, reference, "--", "cat", "/data/in.txt"]),
            "from the host"
        );
        cli.ok(&[
            "run",
            "--dir",
            &rw,
            reference,
            "--",
            "write",
            "/data/out.txt",
            "from the guest",
        ]);
        assert_eq!(
            fs::read_to_string(data.join("out.txt")).unwrap(),
            "from the guest"
        );
        fs::remove_file(data.join("out.txt")).unwrap();

        // Read-only: reading works, writing is refused and nothing appears on the host.
        assert_eq!(
            cli.ok(&["run", "--dir", &ro, reference, "--", "cat", "/data/in.txt"]),
            "from the host"
        );
        let out = cli.run(&[
            "run",
            "--dir",
            &ro,
            reference,
            "--",
            "write",
            "/data/out.txt",
            "x",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("error: open /data/out.txt"));
        assert!(!data.join("out.txt").exists());

        // No way out: `..`, absolute host paths, symlinks pointing outside.
        for escape in [
            "/data/../secret.txt".to_owned(),
            host.path().join("secret.txt").display().to_string(),
            "/data/escape-abs".to_owned(),
            "/data/escape-rel".to_owned(),
            "/etc/passwd".to_owned(),
        ] {
            let out = cli.run(&["run", "--dir", &rw, reference, "--", "cat", &escape]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{reference} read {escape}: {}",
                describe(&out)
            );
            assert!(stdout.starts_with("error: open"), "{escape}: {stdout}");
            assert!(
                !stdout.contains("outside the preopen"),
                "{escape}: {stdout}"
            );
        }
    }
}

#[test]
fn a_trap_prints_a_wasm_backtrace_and_exits_134() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    for reference in [&p.module, &p.component] {
        let out = cli.run(&["run", reference, "--", "trap"]);
        assert_eq!(out.status.code(), Some(134), "{}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains("wasm backtrace"), "{err}");
        assert!(err.contains("unreachable"), "{err}");
    }
}

#[test]
fn a_guest_that_loops_forever_is_stopped_by_timeout() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    cli.ok(&["pull", &p.module]);
    // Spinning in wasm, or asleep in a host call: the timeout ends both.
    for (reference, how) in [
        (&p.module, &["spin"][..]),
        (&p.component, &["spin"]),
        (&p.module, &["sleep", "3600"]),
        (&p.component, &["sleep", "3600"]),
    ] {
        // The guest would spin or sleep for an hour: ended at all, the timeout ended it.
        let mut run = cli.command();
        run.args(["run", "--timeout", "1s", reference, "--"])
            .args(how);
        let out = crate::support::output_within(run, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{how:?} outlived its timeout"));
        assert_eq!(out.status.code(), Some(124), "{how:?}: {}", describe(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("longer than its timeout of 1s"), "{err}");
    }
    // Waiting for input that never comes: stdin stays open and nothing is written.
    for reference in [&p.module, &p.component] {
        let mut child = cli
            .command()
            .args(["run", "--timeout", "1s", reference, "--", "stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _held_open = child.stdin.take();
        let status = crate::support::exit_within(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!("{reference}: a guest waiting for stdin outlived its timeout")
            });
        assert_eq!(status.code(), Some(124), "{reference}");
    }
    let out = cli.run(&["run", "--fuel", "100000", &p.module, "--", "spin"]);
    assert_eq!(out.status.code(), Some(134), "{}", describe(&out));
    assert!(
        stderr(&out).contains("ran out of fuel (it was given 100000)"),
        "{}",
        describe(&out)
    );
}

#[test]
fn max_memory_refuses_growth_and_says_so() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    // The C guest sees malloc fail, reports it and exits on its own.
    let out = cli.run(&["run", "--max-memory", "16MiB", &p.module, "--", "alloc"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mib: u32 = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((8..16).contains(&mib), "{stdout}");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refused by --max-memory 16777216"), "{err}");

    // As a component, the preview 1 adapter inside it needs memory too: it traps when
    // refused, and the limit is named in one line after what the guest printed.
    let out = cli.run(&["run", "--max-memory", "16MiB", &p.component, "--", "alloc"]);
    assert_eq!(out.status.code(), Some(134), "{}", describe(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("over its limit of 16777216 bytes"), "{err}");

    // A guest that traps when refused gets one line naming the limit.
    let dir = tempfile::tempdir().unwrap();
    let greedy = dir.path().join("greedy.wasm");
    fs::write(
        &greedy,
        wat::parse_str(
            r#"(module
                 (memory (export "memory") 1)
                 (func (export "_start")
                   (loop $more
                     (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                   unreachable))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = cli.run(&["run", "--max-memory", "4MiB", path(&greedy)]);
    assert_eq!(out.status.code(), Some(134), "{}", describe(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("over its limit of 4194304 bytes"), "{err}");
}

#[test]
fn a_component_that_is_not_a_command_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library.wasm");
    fs::write(&library, wat::parse_str("(component)").unwrap()).unwrap();
    let out = WasmOci::new().run(&["run", path(&library)]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).contains("is a component but not a WASI command"),
        "{}",
        describe(&out)
    );
}

#[test]
fn hello_runs_as_a_component_by_reference() {
    let registry = Registry::start();
    let cli = WasmOci::new();
    let reference = registry.reference("hello:component");
    cli.ok(&["push", path(&guests().hello_component), &reference]);
    let m = crate::support::wasm_manifest(&registry, "hello", "component").1;
    let config = crate::support::http(
        &registry.addr,
        "GET",
        &format!(
            "/v2/hello/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
        &[],
        b"",
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(config["os"], "wasip2");
    assert_eq!(cli.ok(&["run", &reference]), HELLO);
}

/// Files under the cache's compiled/ area.
fn compiled_files(cli: &WasmOci) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(keys) = fs::read_dir(cli.cache.path().join("v1/compiled")) {
        for key in keys {
            for f in fs::read_dir(key.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn compiled_code_is_cached_and_reused() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    let logged = |args: &[&str]| {
        let out = cli
            .command()
            .args(args)
            .env("WASM_OCI_LOG", "wasm_oci_shim=debug")
            .env_remove("WASM_OCI_LOG_FILE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        stderr(&out)
    };
    for (reference, kind) in [(&p.module, "module"), (&p.component, "component")] {
        let first = logged(&["run", reference, "--", "exit", "0"]);
        assert!(first.contains("compiled and cached"), "{first}");
        let files = compiled_files(&cli);
        assert!(
            files.iter().any(|f| f.extension().unwrap() == kind),
            "{files:?}"
        );

        let second = logged(&["run", reference, "--", "exit", "0"]);
        assert!(second.contains("precompiled cache hit"), "{second}");
        assert!(!second.contains("compiled and cached"), "{second}");
        assert_eq!(compiled_files(&cli), files);
    }

    // Damaged compiled code is never trusted: it is recompiled.
    for f in compiled_files(&cli) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&f, b"not an ELF file").unwrap();
    }
    let again = logged(&["run", &p.module, "--", "exit", "0"]);
    assert!(again.contains("compiled and cached"), "{again}");

    // Another engine configuration is another key, compiled separately.
    let before = compiled_files(&cli).len();
    let fuel = logged(&["run", "--fuel", "100000000", &p.module, "--", "exit", "0"]);
    assert!(fuel.contains("compiled and cached"), "{fuel}");
    assert_eq!(compiled_files(&cli).len(), before + 1);
}

#[test]
fn compile_precompiles_without_running() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    let out = cli.run(&["compile", &p.module]);
    assert!(out.status.success(), "{}", describe(&out));
    // Only compile's own result line: the guest must not run.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("Compiled: ") && stdout.lines().count() == 1,
        "the guest must not run: {stdout}"
    );
    // Once for `wasm-oci run`, once for the containerd shim's engine.
    assert_eq!(compiled_files(&cli).len(), 2);
    let run = cli
        .command()
        .args(["run", "--pull", "never", &p.module, "--", "exit", "0"])
        .env("WASM_OCI_LOG", "wasm_oci_shim=debug")
        .env_remove("WASM_OCI_LOG_FILE")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", describe(&run));
    assert!(
        stderr(&run).contains("precompiled cache hit"),
        "{}",
        describe(&run)
    );
}

#[test]
fn concurrent_first_runs_share_one_cache_safely() {
    let cli = WasmOci::new();
    let p = push_probes(&cli);
    cli.ok(&["pull", &p.module]);
    let runs = (0..8).map(|_| {
        let mut cmd = cli.command();
        cmd.args(["run", &p.module, "--", "args"]);
        cmd
    });
    for out in crate::support::outputs_of_concurrent(runs) {
        assert!(out.status.success(), "{}", describe(&out));
    }
    assert_eq!(compiled_files(&cli).len(), 1);
    let logged = cli
        .command()
        .args(["run", &p.module, "--", "exit", "0"])
        .env("WASM_OCI_LOG", "wasm_oci_shim=debug")
        .env_remove("WASM_OCI_LOG_FILE")
        .output()
        .unwrap();
    assert!(
        stderr(&logged).contains("precompiled cache hit"),
        "{}",
        describe(&logged)
    );
}

#[test]
fn everything_after_the_module_is_the_guests() {
    let cli = WasmOci::new();
    let probe = path(&guests().probe);
    // As with wasmtime and docker: wasm-oci's own flags go before the module.
    let out = cli.run(&[
        "run", "--env", "A=1", probe, "args", "--env", "B=2", "--help",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{probe}\nargs\n--env\nB=2\n--help\n")
    );
    // `--` after the module still separates, and is not passed on.
    let out = cli.run(&["run", probe, "--", "args", "--timeout", "1s"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{probe}\nargs\n--timeout\n1s\n"),
        "{}",
        describe(&out)
    );
}

#[test]
fn local_files_run_and_the_guest_exit_status_passes_through() {
    let cli = WasmOci::new();
    assert_eq!(cli.ok(&["run", &hello()]), HELLO);

    let dir = tempfile::tempdir().unwrap();
    let exit7 = dir.path().join("exit7.wasm");
    fs::write(
        &exit7,
        wat::parse_str(
            r#"(module
                 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (memory (export "memory") 1)
                 (func (export "_start") (call $exit (i32.const 7))))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = cli.run(&["run", exit7.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));

    let trap = dir.path().join("trap.wasm");
    fs::write(
        &trap,
        wat::parse_str(
            r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = cli.run(&["run", trap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(134), "{}", describe(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", describe(&out));

    let out = cli.run(&["run", "./no-such.wasm"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no-such.wasm does not exist"),
        "{}",
        describe(&out)
    );

    // A file that is neither binary nor text wasm is named with what it starts with. (The
    // text format runs, as with wasmtime: tests/all/cli_friction.rs.)
    let notes = dir.path().join("notes.txt");
    fs::write(&notes, "Just some notes, not a module\n").unwrap();
    let out = cli.run(&["run", notes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("notes.txt is not a WebAssembly module (it starts with \""),
        "{}",
        describe(&out)
    );
}
