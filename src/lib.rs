//! immutable-id-proxy: a Microsoft Graph proxy that gives legacy apps immutable Outlook IDs.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod batch;
pub mod body;
pub mod certs;
pub mod config;
pub mod content_coding;
pub mod errors;
pub mod exchange_id;
pub mod forward;
pub mod identity;
pub mod json_scan;
pub mod links;
pub mod metrics;
pub mod pipeline;
pub mod prefer;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
