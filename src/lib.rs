//! immutable-id-proxy: a Microsoft Graph proxy that gives legacy apps immutable Outlook IDs.

#![forbid(unsafe_code)]

pub mod config;
pub mod sim;
