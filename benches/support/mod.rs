//! Fixtures shared by the benchmarks: real Graph-layout IDs from the simulator's encoder, the
//! 64 KiB message list of DESIGN.md's rewrite target, and a warm ID look-up that answers
//! every one of its IDs from the memory cache, as step 3 does on a busy proxy.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use immutable_id_proxy::config::{self, Overrides, SourceType};
use immutable_id_proxy::id_lookup::{Caller, IdLookup};
use immutable_id_proxy::id_rewrite::{self, Candidate};
use immutable_id_proxy::id_store::IdStore;
use immutable_id_proxy::metrics::Metrics;
use immutable_id_proxy::sim::ids::{self, MailboxKeys};
use immutable_id_proxy::upstream::Upstream;

/// One mailbox's GUIDs; any 16 bytes make a valid moniker.
const KEYS: MailboxKeys = MailboxKeys {
    mailbox_guid: *b"bench-mailbox-01",
    store_uid: *b"bench-store-uid1",
    db_guid: *b"bench-database-1",
};

/// The size of the rewrite benchmark's body, as in DESIGN.md's performance target.
pub const BODY_BYTES: usize = 64 * 1024;

/// IDs carried by that body.
pub const IDS_IN_BODY: usize = 100;

/// The source types of the shipped config.toml.
pub const SOURCES: [SourceType; 3] = [SourceType::RestId, SourceType::EwsId, SourceType::EntryId];

/// The request target of the load test's rewrite scenario (benches/load.sh).
pub const TARGET: &str = "/v1.0/users/adelev@contoso.onmicrosoft.com/bulk";

pub fn regular_message_id(n: u64) -> String {
    ids::to_rest(&ids::regular_item_id(&KEYS, 1, 1000 + n))
}

pub fn immutable_message_id(n: u64) -> String {
    ids::to_rest(&ids::immutable_item_id(&KEYS, 1000 + n))
}

/// (regular, immutable) for every ID of `message_list`.
pub fn mappings() -> Vec<(String, String)> {
    (0..IDS_IN_BODY as u64)
        .map(|n| (regular_message_id(n), immutable_message_id(n)))
        .collect()
}

/// A Graph-like list of messages padded to `bytes`, each message carrying its regular ID.
pub fn message_list(count: usize, bytes: usize) -> Vec<u8> {
    let pad = "Quarterly numbers attached; see the thread below for context. ".repeat(
        // Each message gets an equal share of the padding; 250 bytes cover the rest.
        (bytes / count).saturating_sub(250) / 63,
    );
    let value: Vec<serde_json::Value> = (0..count as u64)
        .map(|n| {
            serde_json::json!({
                "id": regular_message_id(n),
                "subject": format!("message {n}"),
                "isRead": n % 2 == 0,
                "bodyPreview": pad,
            })
        })
        .collect();
    let mut body = serde_json::to_vec(&serde_json::json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('adelev%40contoso.onmicrosoft.com')/messages",
        "value": value,
        "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/adelev@contoso.onmicrosoft.com/messages?$skip=100",
    }))
    .unwrap_or_default();
    body.resize(body.len().max(bytes), b' ');
    body
}

/// An `IdLookup` whose memory cache holds every mapping of `mappings()`, and the caller
/// whose tenant they belong to. The upstream is never contacted: every look-up hits.
pub fn warm_lookup() -> (IdLookup, Caller) {
    let text = "[upstream]\nurl = \"http://127.0.0.1:9\"\n\n[rewrite]\nenabled = true\n";
    let config = config::parse_str(text, Vec::new(), &Overrides::default())
        .unwrap_or_else(|e| panic!("bench config: {e}"))
        .config;
    let metrics = Arc::new(Metrics::new());
    let upstream = Arc::new(Upstream::new(&config.upstream).expect("upstream client"));
    let capacity = NonZeroUsize::new(1_000_000).expect("not zero");
    let store = Arc::new(IdStore::memory_only(
        capacity,
        Duration::from_secs(300),
        metrics.clone(),
    ));
    let caller = Caller {
        tenant: "6e6e7a6c-6f73-4f6e-9a6f-636f6e746f73".to_owned(),
        mailbox_path: "/v1.0/users/adelev@contoso.onmicrosoft.com".to_owned(),
        authorization: HeaderValue::from_static("Bearer bench.token.sig"),
        app_only: false,
    };
    store
        .insert_many(&caller.tenant, &mappings())
        .expect("a memory-only store cannot fail to write");
    let lookup = IdLookup::new(upstream, store, &config.rewrite, metrics);
    (lookup, caller)
}

/// What step 3 (`pipeline/ids.rs`, `rewrite_ids`) does to one request with a held JSON
/// body: find the IDs in the target and the body (one scan), look them up, splice the
/// answers in. Returns the rewritten body and the number of IDs replaced.
pub async fn rewrite_request(
    lookup: &IdLookup,
    caller: &Caller,
    target: &str,
    body: &[u8],
) -> (Option<Vec<u8>>, usize) {
    let in_target = id_rewrite::candidates_in_target(target, &SOURCES);
    let Ok(scan) = id_rewrite::scan_json(body, &SOURCES) else {
        return (None, 0);
    };
    let candidates: std::borrow::Cow<'_, [Candidate]> = if in_target.is_empty() {
        std::borrow::Cow::Borrowed(scan.candidates())
    } else {
        let mut all = in_target;
        all.extend_from_slice(scan.candidates());
        std::borrow::Cow::Owned(all)
    };
    if candidates.is_empty() {
        return (None, 0);
    }
    let Ok(map) = lookup.resolve(caller, &candidates).await else {
        return (None, 0);
    };
    let answer = |id: &str| map.get(id).cloned();
    let borrowed = |id: &str| map.get(id).map(String::as_str);
    let mut count = 0;
    if let Some(applied) = id_rewrite::apply_to_target(target, &SOURCES, &answer) {
        count += applied.applied.len();
    }
    match scan.apply_counted(body, &borrowed) {
        Some((output, n)) => (Some(output), count + n),
        None => (None, count),
    }
}
