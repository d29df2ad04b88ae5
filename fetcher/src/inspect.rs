//! What a wasm binary is and what it needs, read without compiling or running it.

use serde::Serialize;
use wasmparser::{ComponentExternalKind, ExternalKind, Parser, Payload, TypeRef};

use crate::WasmKind;

/// The interface of a module or component: its top-level imports and exports.
#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    /// Module or component.
    pub kind: WasmKind,
    /// The WASI world a component targets, from what it exports: `wasi:http/proxy@0.2.x` for
    /// one that exports `wasi:http/incoming-handler`, `wasi:cli/command@0.2.x` for one that
    /// exports `wasi:cli/run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
    /// Imports, `module::name (kind)` for modules, `name (kind)` for components.
    pub imports: Vec<String>,
    /// Exports, `name (kind)`.
    pub exports: Vec<String>,
}

/// A component's part of the CNCF wasm config (`component`), as `wkg oci push` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ComponentConfig {
    /// The world it targets, when it is a WASI one this program knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The interfaces it imports, e.g. `wasi:io/streams@0.2.6`.
    pub imports: Vec<String>,
    /// The interfaces it exports.
    pub exports: Vec<String>,
}

impl Interface {
    /// The `component` section of a CNCF config; `None` for a core module.
    pub fn component_config(&self) -> Option<ComponentConfig> {
        if self.kind != WasmKind::Component {
            return None;
        }
        let names = |items: &[String]| {
            items
                .iter()
                .map(|i| {
                    i.rsplit_once(" (")
                        .map_or(i.as_str(), |(n, _)| n)
                        .to_owned()
                })
                .collect()
        };
        Some(ComponentConfig {
            target: self.world.clone(),
            imports: names(&self.imports),
            exports: names(&self.exports),
        })
    }
}

/// The world a component targets, from the names of its exports.
fn world_of(exports: &[String]) -> Option<String> {
    let version = |interface: &str| {
        exports.iter().find_map(|e| {
            let name = e.rsplit_once(" (").map_or(e.as_str(), |(n, _)| n);
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

/// Reads the interface of `bytes`; `None` when they are not valid WebAssembly.
pub fn interface(bytes: &[u8]) -> Option<Interface> {
    let kind = WasmKind::detect(bytes)?;
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components (inside a component) are not the outer interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.ok()? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ImportSection(section) if depth == 0 => {
                for import in section.into_imports() {
                    let import = import.ok()?;
                    let what = match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
                        TypeRef::Memory(_) => "memory",
                        TypeRef::Table(_) => "table",
                        TypeRef::Global(_) => "global",
                        TypeRef::Tag(_) => "tag",
                    };
                    imports.push(format!("{}::{} ({what})", import.module, import.name));
                }
            }
            Payload::ExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.ok()?;
                    let what = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => "func",
                        ExternalKind::Memory => "memory",
                        ExternalKind::Table => "table",
                        ExternalKind::Global => "global",
                        ExternalKind::Tag => "tag",
                    };
                    exports.push(format!("{} ({what})", export.name));
                }
            }
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    imports.push(format!("{} (import)", import.ok()?.name.name));
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.ok()?;
                    let what = match export.kind {
                        ComponentExternalKind::Instance => "instance",
                        ComponentExternalKind::Func => "func",
                        ComponentExternalKind::Type => "type",
                        ComponentExternalKind::Component => "component",
                        ComponentExternalKind::Module => "module",
                        ComponentExternalKind::Value => "value",
                    };
                    exports.push(format!("{} ({what})", export.name.name));
                }
            }
            _ => {}
        }
    }
    Some(Interface {
        kind,
        world: (kind == WasmKind::Component)
            .then(|| world_of(&exports))
            .flatten(),
        imports,
        exports,
    })
}
