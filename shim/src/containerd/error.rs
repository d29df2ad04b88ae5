//! What goes wrong setting up a container, typed by room: the operator's config
//! ([`ConfigError`]), the process's shared store ([`StoreError`]), a cgroup
//! ([`CgroupError`]), a mount ([`MountError`]), the rootfs module ([`RootfsError`]), and the
//! container's creation that meets them all ([`CreateError`]). The task service turns them
//! into containerd's error once, with their text.

use std::path::PathBuf;
use std::sync::Arc;

use super::annotations::{ANNOTATION_PULL, ANNOTATION_REFERENCE};

/// An error and its causes on one line, as `{:#}` prints an `anyhow` chain: for causes
/// that are kept in a field of their own rather than as the error's source.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The operator's shim config cannot be used: every container of the node is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the shim config {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The file says something that is not allowed.
    #[error("invalid shim config {}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        problem: Box<ConfigProblem>,
    },
}

/// What is wrong in a shim config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// Not TOML, or a key that is not known.
    #[error("{0}")]
    Toml(String),
    /// A profile's directory that does not parse.
    #[error("profile {profile}: {cause}")]
    Profile {
        /// The profile's name.
        profile: String,
        /// Why the directory does not parse.
        cause: crate::runner::OptionError,
    },
    /// A profile's directory that is not absolute on both sides.
    #[error("profile {profile}: {dir:?} must name absolute host and guest paths")]
    ProfilePath {
        /// The profile's name.
        profile: String,
        /// The directory, as written.
        dir: String,
    },
    /// `limits.max_module_size` that is not a size.
    #[error("limits.max_module_size {text:?} is not a size such as 256MiB")]
    MaxModuleSize {
        /// As written.
        text: String,
    },
    /// A `references.allow` entry that is not a registry's name.
    #[error("references.allow: {entry:?} is not host[:port]: {reason}")]
    AllowEntry {
        /// The entry, as written.
        entry: String,
        /// Why not.
        reason: &'static str,
    },
    /// A `references.allow` list the egress rule refuses.
    #[error("references.allow: {0}")]
    Allow(wasm_oci_fetcher::egress::BadEntry),
    /// An `http.*` duration that is not one (or is zero).
    #[error("http.{key} {text:?} is not a duration such as 30s or 500ms")]
    Duration {
        /// The key under `[http]`.
        key: String,
        /// As written.
        text: String,
    },
    /// `http.max_connections = 0`.
    #[error("http.max_connections must be at least 1")]
    NoConnections,
    /// `compile.timeout` that is not a duration (or is zero).
    #[error("compile.timeout {text:?} is not a duration such as 5m or 90s")]
    CompileTimeout {
        /// As written.
        text: String,
    },
    /// `compile.max_memory` that is not a size (or is zero).
    #[error("compile.max_memory {text:?} is not a size such as 2GiB")]
    CompileMemory {
        /// As written.
        text: String,
    },
}

/// The process's shared cache and fetcher cannot be opened: no module is pulled by reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The cache cannot be opened.
    #[error("opening the cache at {}: {}", dir.display(), chain(cause))]
    Cache {
        /// The cache's directory.
        dir: PathBuf,
        /// The cache's error (printed with its causes).
        cause: wasm_oci_cache::Error,
    },
    /// The node's signature policy cannot be used.
    #[error(transparent)]
    Policy(#[from] Arc<wasm_oci_trust::PolicyError>),
}

/// A container's cgroup that is refused or cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// `linux.cgroupsPath` that is not one this shim makes.
    #[error("cgroupsPath {path:?} refused: {why}")]
    Refused {
        /// The path, as the spec has it.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// A directory of the cgroup cannot be made.
    #[error("cannot create the container's cgroup {}: {cause}", dir.display())]
    Create {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// A limit cannot be written: the container would run unlimited.
    #[error("cannot apply the container's limit {file}={value} in {}: {cause}", dir.display())]
    Limit {
        /// The control file.
        file: &'static str,
        /// The value written.
        value: String,
        /// The cgroup's directory.
        dir: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
}

/// A mount for the guest that cannot be made `nodev,nosuid`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The remount failed.
    #[error("remounting {} nodev,nosuid: {cause}", target.display())]
    Remount {
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        cause: rustix::io::Errno,
    },
    /// The mount point cannot be made.
    #[error("creating {}: {cause}", target.display())]
    CreateDir {
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The bind mount failed.
    #[error("binding {} for the guest: {cause}", dir.display())]
    Bind {
        /// The directory bound.
        dir: PathBuf,
        /// The OS error.
        cause: rustix::io::Errno,
    },
}

/// The module named by `process.args[0]` cannot be read from the rootfs.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the module {module:?} from the rootfs: {problem}")]
pub struct RootfsError {
    /// The path, as the spec names it.
    pub(crate) module: String,
    /// What went wrong.
    pub(crate) problem: RootfsProblem,
}

/// Why a rootfs module was not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootfsProblem {
    /// The rootfs itself cannot be opened.
    #[error("opening the rootfs {}: {cause}", rootfs.display())]
    OpenRootfs {
        /// The rootfs.
        rootfs: PathBuf,
        /// Why.
        cause: wasm_oci_artifact::file::ReadError,
    },
    /// The path names the rootfs, not a file in it.
    #[error("it names the rootfs itself")]
    NamesRootfs,
    /// The module cannot be read.
    #[error("{}", read_problem(.0))]
    Read(wasm_oci_artifact::file::ReadError),
}

/// What a reader's error means for a module of an image, in the node's terms.
fn read_problem(e: &wasm_oci_artifact::file::ReadError) -> String {
    use wasm_oci_artifact::file::ReadError;
    match e {
        ReadError::NotFound => "no such file in the image".into(),
        ReadError::TooLarge { size, max } => format!(
            "it is {size} bytes, over the node's limit of {max} bytes \
             (limits.max_module_size in the shim config)"
        ),
        ReadError::Grew { max } => {
            format!("it grew over the node's limit of {max} bytes while being read")
        }
        ReadError::NoOpenat2 => "this kernel has no openat2 (Linux 5.6 or later is needed \
                                 to read a module from a rootfs safely)"
            .into(),
        e => e.to_string(),
    }
}

/// Why the signature policy does not let a rootfs module run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootfsRefusal {
    /// The scope of the image's name refuses unsigned content.
    #[error(transparent)]
    Policy(wasm_oci_trust::Refusal),
    /// The image's name is not known, and the policy is not accept-anything.
    #[error(
        "the signature policy {policy} is not accept-anything and the image's name is not known (no {annotation} annotation), so it needs a signed reference"
    )]
    Unnamed {
        /// The policy file, or `(none)`.
        policy: String,
        /// The annotation that would have named the image.
        annotation: &'static str,
    },
}

/// Why a rootfs module whose image's name needs a signature is not the signed wasm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotSigned {
    /// The name's artifact holds another wasm.
    #[error(
        "the module ({found}) is not the wasm the name resolves to now ({named}): the tag moved after the node pulled the image and before the shim verified it (pull it again, imagePullPolicy: Always, or name the image by digest), or the image is not one `wasm-oci push` wrote"
    )]
    Other {
        /// The rootfs module's digest.
        found: String,
        /// The wasm layer the name's manifest names.
        named: String,
    },
    /// The name's artifact is refused by the policy or cannot be read (printed with its
    /// causes).
    #[error("{}", chain(cause))]
    Unverified {
        /// The fetcher's error.
        cause: Box<wasm_oci_fetcher::Error>,
    },
}

/// A container that cannot be created from its bundle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The operator's shim config cannot be used.
    #[error(transparent)]
    Config(#[from] Arc<ConfigError>),
    /// The shared cache and fetcher cannot be opened.
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
    /// The bundle's `config.json` cannot be read.
    #[error("reading the bundle's config.json: {cause}")]
    ReadSpec {
        /// containerd's error.
        cause: Box<containerd_shim::Error>,
    },
    /// The spec has no `process`.
    #[error("the spec has no process")]
    NoProcess,
    /// Neither a reference nor `process.args[0]` names the wasm.
    #[error("process.args is empty: name the .wasm to run")]
    NoArgs,
    /// `io.wasm-oci.reference` is not a reference.
    #[error(transparent)]
    Reference(Box<wasm_oci_fetcher::Error>),
    /// The reference's registry has no canonical name.
    #[error("{ANNOTATION_REFERENCE} names registry {registry}, which is not host[:port]: {reason}")]
    Registry {
        /// The registry (printable).
        registry: String,
        /// Why.
        reason: &'static str,
    },
    /// The operator's rule does not allow pulls from the reference's registry.
    #[error("{ANNOTATION_REFERENCE}: {0}")]
    RegistryRefused(wasm_oci_fetcher::egress::Refusal),
    /// `io.wasm-oci.pull` is not a pull policy.
    #[error("{ANNOTATION_PULL}: {0}")]
    PullPolicy(wasm_oci_fetcher::UnknownPullPolicy),
    /// `io.wasm-oci.preopens` names a profile the operator did not define.
    #[error(
        "io.wasm-oci.preopens names {name:?}, which is not a preopen profile of the node's shim config ({config}; profiles: {}): a pod may only pick a profile the operator defined, never a host path",
        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
    )]
    UnknownProfile {
        /// The name the pod gave.
        name: String,
        /// The shim config, for the message.
        config: String,
        /// The profiles it defines.
        known: Vec<String>,
    },
    /// The module cannot be pulled or resolved (printed with its causes).
    #[error("{}", chain(cause))]
    Pull {
        /// The fetcher's error.
        cause: Box<wasm_oci_fetcher::Error>,
    },
    /// A rootfs module the signature policy does not let run.
    #[error(
        "the module {module} would run from the image's rootfs, which no signature covers, and {why}: annotate {ANNOTATION_REFERENCE} with the module's signed reference, or let the operator allow rootfs modules ([trust] rootfs_modules = \"allow\" in {config})"
    )]
    RootfsRefused {
        /// The module's path (printable).
        module: String,
        /// Why the policy refuses it.
        why: RootfsRefusal,
        /// The shim config, for the message.
        config: String,
    },
    /// A rootfs module whose image's name needs a signature, and which is not the wasm of
    /// that name's signed artifact.
    #[error(
        "the module {module} of the image {image} does not run: the signature policy needs a signature for {image}, and {why}"
    )]
    RootfsNotSigned {
        /// The module's path (printable).
        module: String,
        /// The image's name (printable).
        image: String,
        /// What is not signed.
        why: NotSigned,
    },
    /// The rootfs module cannot be read.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The cgroup is refused or cannot be made.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The network the spec asks for cannot be made (printed with its causes).
    #[error("{}", chain(cause))]
    Network {
        /// The runner's error.
        cause: Box<crate::Error>,
    },
    /// A mount for the guest cannot be made.
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// A module's compile that was stopped before it ended: the container does not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// The compile helper ran past `[compile] timeout`.
    #[error(
        "compiling the module took longer than {limit}, the compile helper's time limit, and \
         was stopped; an operator who trusts the module can raise [compile] timeout in {config}"
    )]
    Timeout {
        /// The limit, as the config spells durations.
        limit: String,
        /// Where the limit is set.
        config: String,
    },
    /// The compile helper needed more than `[compile] max_memory`.
    #[error(
        "compiling the module needed more memory than {limit}, the compile helper's memory \
         limit, and was stopped; an operator who trusts the module can raise \
         [compile] max_memory in {config}"
    )]
    Memory {
        /// The limit, as the config spells sizes.
        limit: String,
        /// Where the limit is set.
        config: String,
    },
    /// The compile helper was killed by a signal no limit of the shim's sent (the node's
    /// OOM killer, an operator): the module is not compiled in the shim instead, which would
    /// escape what killed it.
    #[error("the compile helper was killed by signal {signal} while it compiled the module")]
    Killed {
        /// The signal.
        signal: i32,
    },
    /// The compile helper ended without the module's code and without saying why: killed
    /// from outside the shim (the node's OOM killer, an operator) or crashed, its exit
    /// status taken by the shim's reaper. The module is not compiled in the shim instead,
    /// which would escape whatever ended it.
    #[error(
        "the compile helper ended without compiling the module or saying why (killed from \
         outside the shim, or crashed); it is not compiled again in the shim{}",
        if said.is_empty() { String::new() } else { format!(": {said}") }
    )]
    Vanished {
        /// What the helper wrote on its stderr, if anything.
        said: String,
    },
    /// The module does not compile (the helper's error).
    #[error("the module does not compile: {why}")]
    Invalid {
        /// The compile's error.
        why: String,
    },
    /// The container was killed or deleted while its module compiled.
    #[error("the container was stopped while its module compiled")]
    Stopped,
}
