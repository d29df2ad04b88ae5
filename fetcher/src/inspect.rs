//! What a wasm binary is and what it needs, read without compiling or running it.

use serde::Serialize;
use wasmparser::{ComponentExternalKind, ExternalKind, Parser, Payload, TypeRef};

use crate::WasmKind;

/// The interface of a module or component: its top-level imports and exports.
#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    /// Module or component.
    pub kind: WasmKind,
    /// Imports, `module::name (kind)` for modules, `name (kind)` for components.
    pub imports: Vec<String>,
    /// Exports, `name (kind)`.
    pub exports: Vec<String>,
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
        imports,
        exports,
    })
}
