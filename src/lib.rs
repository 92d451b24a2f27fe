//! immutable-id-proxy: a Microsoft Graph proxy that gives legacy apps immutable Outlook IDs.
//!
//! Outlook items get a new Graph ID whenever they move between folders. Graph returns IDs
//! that never change only when a request carries `Prefer: IdType="ImmutableId"`. This proxy
//! sits between an app that cannot be changed and Graph, and adds that header to every
//! request and every `$batch` sub-request, on the way keeping the app inside Graph's limits.
//!
//! ```text
//!   app ──HTTP/1.1, h2, TLS──▶ server ──▶ pipeline::Proxy::handle (one error boundary)
//!                                           │
//!     1 identify      identity.rs      tenant/app/mailbox from the JWT and the path
//!     2 admit         admit.rs         per-tenant rate, per app+mailbox budget and
//!                                      in-flight cap, penalty box, FIFO queueing
//!     3 rewrite_ids   id_rewrite.rs,   legacy IDs in path/$filter/JSON/$batch ->
//!                     id_lookup.rs,    immutable: cache -> id_store.rs (redb) ->
//!                     exchange_id.rs   coalesced translateExchangeIds
//!     4 apply_prefer  prefer.rs,       one Prefer line with IdType="ImmutableId",
//!                     batch.rs         also inside every $batch sub-request
//!     5 forward       forward.rs,      hop-by-hop out, Host/target = upstream,
//!                     upstream.rs      pooled HTTP/1.1 + h2 client, timeouts
//!     6 retries       retry.rs         Retry-After, backoff, Retry-Attempt, $batch
//!     7 rewrite_links links.rs,        nextLink/deltaLink/Location -> public_base_url
//!                     json_scan.rs,    byte-preserving JSON edits,
//!                     content_coding   gzip/deflate/br
//!                                           │
//!   app ◀──────────────────────────── answer (Graph's, or errors.rs in Graph's shape)
//! ```
//!
//! `pipeline/` writes the path out once (`mod.rs`; step 3 in `ids.rs`, step 6 in
//! `retries.rs`). `config.rs` validates everything before `app.rs` binds a port; `admin.rs`
//! serves /healthz, /readyz, /metrics, /ca.pem, /idmap and /shutdown, which `probe.rs`
//! checks from inside a shell-less image; `certs.rs` makes the local CA, from which
//! `forward_proxy/` mints certificates for drop-in mode (apps that set `HTTPS_PROXY`);
//! `bulk_translate.rs` is the `translate` command. With `shared.backend = "redis"`,
//! `shared/` keeps the limits and the ID map in Redis so replicas share them, with each
//! replica's local state as the fallback. The Graph simulator used by `sim`, `demo` and the
//! tests lives apart in `sim/`, and product code never reaches into it.

#![forbid(unsafe_code)]
// Bad input gets an answer, never a panic: outside tests, no unwrap() or expect().
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod admit;
pub mod app;
pub mod batch;
pub mod body;
pub mod bulk_translate;
pub mod certs;
pub mod config;
pub mod content_coding;
pub mod demo;
pub mod errors;
pub mod exchange_id;
pub mod forward;
pub mod forward_proxy;
pub mod hashing;
pub mod id_lookup;
pub mod id_rewrite;
#[cfg(test)]
mod id_samples;
pub mod id_store;
pub mod identity;
pub mod json_scan;
pub mod links;
pub mod metrics;
pub mod pipeline;
pub mod prefer;
pub mod probe;
pub mod retry;
pub mod server;
pub mod shared;
pub mod sim;
pub mod telemetry;
pub mod tls;
pub mod upstream;
