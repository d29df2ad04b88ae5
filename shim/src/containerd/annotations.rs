//! The annotations the shim reads from a container's spec: the wasm-oci ones a pod may set
//! (when the operator's containerd config lets them through), and the CRI plugin's own.

/// The module's reference, pulled into the shared cache.
pub(crate) const ANNOTATION_REFERENCE: &str = "io.wasm-oci.reference";
/// The pull policy of that reference (`missing` by default).
pub(crate) const ANNOTATION_PULL: &str = "io.wasm-oci.pull";
/// The operator's preopen profiles a container asks for, by name.
pub(crate) const ANNOTATION_PREOPENS: &str = "io.wasm-oci.preopens";
/// The shim group a container asks for, heeded only with `[groups] by = "annotation"`.
pub(crate) const ANNOTATION_GROUP: &str = "io.wasm-oci.group";
/// The pod sandbox a container belongs to, as the CRI plugin sets it.
pub(crate) const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// `sandbox` for a pod's sandbox ("pause") container, as the CRI plugin sets it.
pub(crate) const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
