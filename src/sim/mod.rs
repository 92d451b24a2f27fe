//! An in-memory Microsoft Graph for tests and demos: the upstream of the project's
//! integration tests and of `immutable-id-proxy sim` / `demo`.
//!
//! Product code never reaches into this module; it is spoken to over HTTP only, exactly as
//! Graph would be. It must never panic on any input.
//!
//! ```text
//! serve ─ control routes (/sim/*, no token)
//!       └ Graph routes: token ─ fault injection ─ route ─ mailbox ─ throttle ─ handler
//!                                                   └ $batch: the same, per sub-request
//! ```
//!
//! Seed data (rebuilt by `POST /sim/reset`):
//! - tenant contoso `6e6e7a6c-6f73-4f6e-9a6f-636f6e746f73`: `adelev@contoso.onmicrosoft.com`
//!   (`5c7bb4a6-2a8e-4d3a-9a7f-1f0c6a3b8e01`) and `alexw@contoso.onmicrosoft.com`
//!   (`c2d9e8f1-3b4a-4e5c-8d6f-7a8b9c0d1e02`);
//! - tenant fabrikam `f4b1c2d3-e5f6-4a7b-8c9d-0e1f2a3b4c5d`: `meganb@fabrikam.onmicrosoft.com`
//!   (`9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a503`).
//!
//! Every mailbox has the folders msgfolderroot, inbox, drafts, sentitems, archive,
//! deleteditems, calendar and contacts; 25 inbox messages (hourly from
//! 2024-05-01T09:00:00Z, every fourth with one text attachment), 2 drafts, 3 calendar events
//! and 3 contacts. Mailbox, store and database GUIDs are FNV hashes of the user ID, so every
//! ID is the same on every run. Tokens: `token::mint`, or `GET /sim/token?user=UPN`.
//!
//! Control routes (no token needed, not counted):
//! - `GET /sim/stats`: `{"requests", "translate_calls", "translate_ids_per_call": [n..],
//!   "prefer_seen": {value: count}, "max_concurrency": {lower-case UPN: n},
//!   "batch_subrequests"}`;
//! - `POST /sim/reset`; `GET|POST /sim/config` (see `switches.rs` for the keys; `fail_next`
//!   entries may also carry `path_contains` to hit one request or `$batch` sub-request);
//! - `GET /sim/token?user=UPN|ID[&app_only=true][&appid=GUID]`: the token as text;
//! - `GET /sim/requests`: the last 200 requests (method, uri, headers, body_len).
//!
//! Data routes (no token needed, counted and logged like Graph requests): `PUT /sim/upload`,
//! `GET /sim/download?bytes=N`, `GET /sim/echo-links`.

pub mod batch;
pub mod delta;
pub mod ids;
pub mod prefer;
pub mod query;
pub mod reply;
pub mod resources;
pub mod routes;
pub mod server;
pub mod stats;
pub mod store;
pub mod switches;
pub mod throttle;
pub mod token;
pub mod translate;

use std::sync::{Arc, Mutex, MutexGuard};

pub use server::serve;

/// A seeded user, so tests and the demo can mint tokens for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedUser {
    pub tenant_id: &'static str,
    pub user_id: &'static str,
    pub upn: &'static str,
}

pub const CONTOSO_TENANT_ID: &str = "6e6e7a6c-6f73-4f6e-9a6f-636f6e746f73";
pub const FABRIKAM_TENANT_ID: &str = "f4b1c2d3-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
/// The `appid` of tokens minted by `/sim/token` when no `appid` is asked for.
pub const DEFAULT_APP_ID: &str = "0e3f6b2a-6c3d-4b8e-9f1a-5a1d2c3b4e5f";
/// The `oid` of app-only tokens: the test app's service principal.
pub const APP_SERVICE_PRINCIPAL_ID: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

pub const SEED_USERS: &[SeedUser] = &[
    SeedUser {
        tenant_id: CONTOSO_TENANT_ID,
        user_id: "5c7bb4a6-2a8e-4d3a-9a7f-1f0c6a3b8e01",
        upn: "adelev@contoso.onmicrosoft.com",
    },
    SeedUser {
        tenant_id: CONTOSO_TENANT_ID,
        user_id: "c2d9e8f1-3b4a-4e5c-8d6f-7a8b9c0d1e02",
        upn: "alexw@contoso.onmicrosoft.com",
    },
    SeedUser {
        tenant_id: FABRIKAM_TENANT_ID,
        user_id: "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a503",
        upn: "meganb@fabrikam.onmicrosoft.com",
    },
];

/// All simulator state. Each part has its own lock, never held across an await; when two
/// are needed the order is store, then switches, then stats.
pub struct Simulator {
    pub(crate) store: Mutex<store::Store>,
    pub(crate) switches: Mutex<switches::Switches>,
    pub(crate) throttle: throttle::Throttle,
    pub(crate) stats: Mutex<stats::Stats>,
}

impl Simulator {
    /// A simulator holding the seed data, every switch off.
    pub fn new() -> Arc<Simulator> {
        Arc::new(Simulator {
            store: Mutex::new(store::Store::seeded()),
            switches: Mutex::new(switches::Switches::default()),
            throttle: throttle::Throttle::default(),
            stats: Mutex::new(stats::Stats::default()),
        })
    }

    /// Back to the seed: data, statistics, switches and throttle windows.
    pub fn reset(&self) {
        *lock(&self.store) = store::Store::seeded();
        *lock(&self.switches) = switches::Switches::default();
        *lock(&self.stats) = stats::Stats::default();
        self.throttle.reset();
    }
}

/// A panic elsewhere must not wedge the simulator: a poisoned lock still holds usable data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
