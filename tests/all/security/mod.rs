//! Each attack that issue #13 names, performed end to end: by a pod author on the shim, by a
//! registry on the fetcher, by a layout or a concurrent process on the cache.

mod attack;
mod cache;
mod registry;
mod shim;
