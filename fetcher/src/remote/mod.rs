//! The transport room: how the fetcher speaks to registries. Options and hosts.toml name the
//! hosts ([`options`], [`hosts`]); [`transport`] makes each host's client ([`client`], [`tls`])
//! and endpoint ([`endpoint`]) once, after [`probe`] asked a loopback registry what it
//! speaks; [`registry`] sends requests with credentials ([`auth`], [`token`]) and follows
//! redirects by one rule ([`redirect`]); a request that fails is a [`failure`], classified by
//! one rule ([`answer`]) and retried by another ([`retry`]).
//!
//! Nothing here knows of the cache, of layouts, or of signatures.

pub(crate) mod answer;
pub mod auth;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod endpoint;
pub(crate) mod failure;
pub mod hosts;
pub(crate) mod options;
pub(crate) mod probe;
pub(crate) mod redirect;
pub(crate) mod registry;
pub(crate) mod retry;
pub(crate) mod tls;
pub(crate) mod token;
pub(crate) mod transport;
