//! What a wasm binary is and what it needs, read without compiling or running it.

use serde::Serialize;
use wasmparser::{ComponentExternalKind, ExternalKind, Parser, Payload, TypeRef};

/// A core module or a component, told apart by the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WasmKind {
    /// A core module (WASI preview 1).
    Module,
    /// A component (WASI 0.2).
    Component,
}

impl WasmKind {
    /// Reads the 8-byte header; `None` when it is not WebAssembly.
    pub(crate) fn detect(header: &[u8]) -> Option<Self> {
        if Parser::is_component(header) {
            Some(Self::Component)
        } else if Parser::is_core_wasm(header) {
            Some(Self::Module)
        } else {
            None
        }
    }

    /// The `os` a CNCF config names for this kind.
    pub fn os(self) -> &'static str {
        match self {
            Self::Module => "wasip1",
            Self::Component => "wasip2",
        }
    }
}

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
    let mut found = Found::default();
    found.read(bytes)?;
    Some(found.into_interface(kind))
}

/// Reads the interface of the wasm file at `path` without holding the file: only the top-level
/// import and export sections are read, every other section (code, data, custom, nested
/// modules) is skipped over. `Ok(None)` when it is not WebAssembly, or its sections do not
/// add up to the file; the sections skipped are not validated.
pub fn interface_of_file(path: &std::path::Path) -> std::io::Result<Option<Interface>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut header = [0u8; 8];
    if file.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    let Some(kind) = WasmKind::detect(&header) else {
        return Ok(None);
    };
    let wanted: &[u8] = match kind {
        WasmKind::Module => &[IMPORT_SECTION, EXPORT_SECTION],
        WasmKind::Component => &[COMPONENT_IMPORT_SECTION, COMPONENT_EXPORT_SECTION],
    };
    let len = file.get_ref().metadata()?.len();
    let mut found = Found::default();
    loop {
        let mut id = [0u8; 1];
        if file.read(&mut id)? == 0 {
            break;
        }
        let Some(size) = read_leb_u32(&mut file)? else {
            return Ok(None);
        };
        if !wanted.contains(&id[0]) {
            let before = file.stream_position()?;
            let after = file.seek(SeekFrom::Current(i64::from(size)))?;
            // Seeking past the end succeeds: a truncated file is caught by its length.
            if after - before != u64::from(size) || after > len {
                return Ok(None);
            }
            continue;
        }
        // A size past the end is refused before anything is allocated for it.
        if file.stream_position()? + u64::from(size) > len {
            return Ok(None);
        }
        // An import or export section alone, after the header: wasmparser reads it as a
        // binary of that one section.
        let mut section = header.to_vec();
        section.push(id[0]);
        leb_u32(size, &mut section);
        let start = section.len();
        section.resize(start + size as usize, 0);
        if file.read_exact(&mut section[start..]).is_err() {
            return Ok(None);
        }
        if found.read(&section).is_none() {
            return Ok(None);
        }
    }
    Ok(Some(found.into_interface(kind)))
}

/// Section ids of a core module's imports and exports.
const IMPORT_SECTION: u8 = 2;
const EXPORT_SECTION: u8 = 7;
/// Section ids of a component's imports and exports.
const COMPONENT_IMPORT_SECTION: u8 = 10;
const COMPONENT_EXPORT_SECTION: u8 = 11;

/// An unsigned LEB128 of at most 32 bits; `None` when it is longer or ends early.
fn read_leb_u32(reader: &mut impl std::io::Read) -> std::io::Result<Option<u32>> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte)? == 0 {
            return Ok(None);
        }
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(u32::try_from(value).ok());
        }
    }
    Ok(None)
}

fn leb_u32(mut value: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Imports and exports found so far.
#[derive(Default)]
struct Found {
    imports: Vec<String>,
    exports: Vec<String>,
}

impl Found {
    fn into_interface(self, kind: WasmKind) -> Interface {
        Interface {
            kind,
            world: (kind == WasmKind::Component)
                .then(|| world_of(&self.exports))
                .flatten(),
            imports: self.imports,
            exports: self.exports,
        }
    }

    /// Adds the top-level imports and exports of `bytes`; `None` when they are not valid.
    fn read(&mut self, bytes: &[u8]) -> Option<()> {
        let Found { imports, exports } = self;
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
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/hello.wasm"
        ))
        .unwrap()
    }

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    /// A custom section named `name` holding `len` zero bytes.
    fn custom(name: &str, len: usize) -> Vec<u8> {
        let mut payload = Vec::new();
        leb_u32(name.len() as u32, &mut payload);
        payload.extend_from_slice(name.as_bytes());
        payload.resize(payload.len() + len, 0);
        let mut section = vec![0u8];
        leb_u32(payload.len() as u32, &mut section);
        section.extend(payload);
        section
    }

    #[test]
    fn a_file_read_section_by_section_says_what_the_bytes_say() {
        let mut bytes = hello();
        bytes.extend(custom("padding", 1 << 20));
        let whole = interface(&bytes).unwrap();
        let streamed = interface_of_file(file(&bytes).path()).unwrap().unwrap();
        assert_eq!(streamed.kind, whole.kind);
        assert_eq!(streamed.imports, whole.imports);
        assert_eq!(streamed.exports, whole.exports);
        assert!(
            streamed.imports.iter().any(|i| i.contains("fd_write")),
            "{streamed:?}"
        );
    }

    #[test]
    fn a_section_claiming_more_than_the_file_holds_is_refused_unread() {
        // An import section that claims 4 GiB: refused before a byte is allocated for it.
        let mut bytes = hello()[..8].to_vec();
        bytes.push(IMPORT_SECTION);
        leb_u32(u32::MAX, &mut bytes);
        bytes.extend_from_slice(&[0; 16]);
        assert!(interface_of_file(file(&bytes).path()).unwrap().is_none());
        // A skipped section that runs past the end: the file is cut short.
        let mut cut = hello();
        let section = custom("padding", 4096);
        cut.extend_from_slice(&section[..section.len() - 1]);
        assert!(interface_of_file(file(&cut).path()).unwrap().is_none());
        // Not wasm at all.
        assert!(interface_of_file(file(b"hello").path()).unwrap().is_none());
    }

    #[test]
    fn leb128_sizes_round_trip_and_overlong_ones_are_refused() {
        for n in [0, 1, 127, 128, 300, 1 << 20, u32::MAX] {
            let mut out = Vec::new();
            leb_u32(n, &mut out);
            assert_eq!(read_leb_u32(&mut out.as_slice()).unwrap(), Some(n));
        }
        let overlong = [0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_leb_u32(&mut overlong.as_slice()).unwrap(), None);
    }

    #[test]
    fn modules_and_components_are_told_apart() {
        assert_eq!(WasmKind::detect(b"\0asm\x01\0\0\0"), Some(WasmKind::Module));
        assert_eq!(
            WasmKind::detect(b"\0asm\x0d\0\x01\0"),
            Some(WasmKind::Component)
        );
        assert_eq!(WasmKind::detect(b"#!/bin/sh"), None);
        assert_eq!(WasmKind::detect(b""), None);
    }
}
