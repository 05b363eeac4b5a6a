//! `pullpass-client`: the Rust SDK for pullpass.
//!
//! A launcher asks pullpass, for one image, for short-lived registry auth:
//! a registry-issued token scoped to exactly that repository (or, where the
//! registry offers nothing else, a short-lived username and password).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use pullpass_client::Client;
//!
//! // PULLPASS_ENDPOINT and PULLPASS_TOKEN (or PULLPASS_TOKEN_FILE), or a
//! // workload-identity JWT in PULLPASS_IDENTITY_TOKEN (or _FILE).
//! let client = Client::from_env().connect().await?;
//! let lease = client.registry_auth("ghcr.io/acme/aligner:2.1").workspace("acme").project("rnaseq").pull().send().await?;
//! // Hand it to what pulls the image:
//! let args = lease.skopeo_args(); // ["--registry-token", "<token>"]
//! # let _ = args;
//! # Ok(()) }
//! ```
//!
//! * [`Client`]: one connection (plain or TLS), the bearer token on every
//!   call (a `pp_` access token, or a workload-identity JWT: see
//!   [`ClientBuilder::identity_token_file`] and its siblings), retries on UNAVAILABLE, and a lease cache: a lease is served
//!   locally until shortly before it expires, and concurrent requests for the
//!   same lease share one RPC.
//! * [`Lease`] and the renderers in [`lease`]: HTTP header, skopeo arguments,
//!   docker `config.json`, Kubernetes Secret, Apptainer variables — each
//!   refusing what its consumer cannot take.
//! * [`Error`]: typed errors carrying the server's stable reason.
//! * Admin wrappers on [`Client`] for workspaces, credentials, tokens and
//!   the audit trail (see [`admin`]).
//!
//! The binaries of this crate: `pullpass` (the CLI), `docker-credential-pullpass`
//! (docker credential helper protocol) and `pullpass-kubelet-credential-provider`
//! (kubelet image credential provider plugin).

#![warn(missing_docs)]

pub mod admin;
mod client;
mod error;
mod identity;
pub mod lease;

pub use client::{
    AuthRequest, AuthedChannel, BearerToken, Client, ClientBuilder, ClientStats, DEFAULT_ENDPOINT, ENDPOINT_ENV,
    TOKEN_ENV, TOKEN_FILE_ENV,
};
pub use error::Error;
pub use identity::{ACTIONS_TOKEN_ENV, ACTIONS_URL_ENV, IDENTITY_TOKEN_ENV, IDENTITY_TOKEN_FILE_ENV};
pub use lease::{Grant, Lease, RenderError, Source};
pub use pullpass::v1;
