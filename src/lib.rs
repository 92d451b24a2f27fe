//! immutable-id-proxy: a Microsoft Graph proxy that gives legacy apps immutable Outlook IDs.

#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod errors;
pub mod forward;
pub mod metrics;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod admin;
pub mod certs;
pub mod telemetry;
pub mod app;
pub mod batch;
pub mod content_coding;
pub mod identity;
pub mod json_scan;
pub mod links;
pub mod pipeline;
pub mod prefer;
pub mod exchange_id;
