//! The WASI worlds wasm-oci runs (a `wasi:cli/command`, a `wasi:http/proxy`) and which imports
//! this host provides them: one rule that the runner, `inspect`, the CLI and the shim share,
//! so that an artifact whose config lists an import nobody provides is refused before its
//! layer is downloaded, by every path alike.

/// The world a component targets, from the names of its exports (`wasi:http/proxy@0.2.x`
/// when it exports `wasi:http/incoming-handler@0.2.x`, else `wasi:cli/command@0.2.x` when it
/// exports `wasi:cli/run@0.2.x`). An export may carry a ` (kind)` suffix, as `inspect`
/// lists them.
pub fn world_of<'a>(exports: impl IntoIterator<Item = &'a str> + Clone) -> Option<String> {
    let version = |interface: &str| {
        exports.clone().into_iter().find_map(|e| {
            let name = e.rsplit_once(" (").map_or(e, |(n, _)| n);
            name.strip_prefix(interface)?
                .strip_prefix('@')
                .filter(|v| v.starts_with("0.2."))
                .map(str::to_owned)
        })
    };
    if let Some(v) = version("wasi:http/incoming-handler") {
        Some(format!("wasi:http/proxy@{v}"))
    } else {
        version("wasi:cli/run").map(|v| format!("wasi:cli/command@{v}"))
    }
}

/// Whether `world` (a config's `component.target`) is a `wasi:http/proxy`.
pub fn is_proxy(world: &str) -> bool {
    world.starts_with("wasi:http/proxy@")
}

/// Whether an import is one of the WASI 0.2 interfaces the runner's linker gets
/// (`wasmtime_wasi::p2::add_to_linker_async`, and wasi:http for proxies, `http`).
pub fn provided(import: &str, http: bool) -> bool {
    let Some((package, version)) = import.split_once('@') else {
        return false;
    };
    let Some((namespace_package, _interface)) = package.split_once('/') else {
        return false;
    };
    if !version.starts_with("0.2.") {
        return false;
    }
    match namespace_package {
        "wasi:cli" | "wasi:clocks" | "wasi:filesystem" | "wasi:io" | "wasi:random"
        | "wasi:sockets" => true,
        "wasi:http" => http,
        _ => false,
    }
}

/// Of `imports`, those this host does not provide to a component of the world `target`
/// (a `wasi:http/proxy` gets wasi:http too).
pub fn unsatisfied_imports<'a>(
    imports: impl IntoIterator<Item = &'a str>,
    target: Option<&str>,
) -> Vec<String> {
    let http = target.is_some_and(is_proxy);
    imports
        .into_iter()
        .filter(|name| !provided(name, http))
        .map(str::to_owned)
        .collect()
}

/// A config that lists imports this host does not provide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its config says it imports {}, which wasm-oci does not provide", crate::text::printable(&.missing.join(", ")))]
pub struct MissingImports {
    /// The imports not provided, as the config writes them.
    pub missing: Vec<String>,
}

/// Refuses an artifact config (its bytes) whose `component` section lists an import this host
/// does not provide. A config that is not JSON, or has no such section, says nothing: the
/// runner's own check on the component is the last word.
pub fn check_config_imports(config: &[u8]) -> Result<(), MissingImports> {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(config) else {
        return Ok(());
    };
    let component = &config["component"];
    let imports = component["imports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str());
    let missing = unsatisfied_imports(imports, component["target"].as_str());
    match missing.is_empty() {
        true => Ok(()),
        false => Err(MissingImports { missing }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_0_2_is_provided_and_http_only_to_proxies() {
        assert!(provided("wasi:cli/stdout@0.2.0", false));
        assert!(provided("wasi:http/types@0.2.3", true));
        assert!(!provided("wasi:http/types@0.2.3", false));
        assert!(!provided("wasi:cli/stdout@0.3.0", false));
        assert!(!provided("acme:db/query@1.0.0", true));
        assert_eq!(
            world_of(["wasi:http/incoming-handler@0.2.1 (instance)"]).as_deref(),
            Some("wasi:http/proxy@0.2.1")
        );
        assert_eq!(
            world_of(["wasi:cli/run@0.2.0"]).as_deref(),
            Some("wasi:cli/command@0.2.0")
        );
        let config = br#"{"component":{"target":"wasi:cli/command@0.2.0",
            "imports":["wasi:cli/stdout@0.2.0","acme:db/query@1.0.0","wasi:http/types@0.2.0"]}}"#;
        assert_eq!(
            check_config_imports(config).unwrap_err().missing,
            ["acme:db/query@1.0.0", "wasi:http/types@0.2.0"]
        );
        assert!(check_config_imports(b"{}").is_ok());
        assert!(check_config_imports(b"not json").is_ok());
    }
}
