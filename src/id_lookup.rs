//! Rewrite IDs (step 3), the I/O part: turns the regular IDs that `id_rewrite` found into
//! immutable ones, through the memory cache, then the redb store, then Graph.
//!
//! Misses are coalesced: every miss joins an open batch keyed by tenant, mailbox path
//! (lower-cased), a hash of the caller's Authorization value and the source type; a batch
//! is sent once no miss has joined it for `batch_window`, or at once when it holds 1000 IDs,
//! or at the latest `MAX_OPEN` after its first miss, as one
//! `POST {mailbox_path}/translateExchangeIds`. A lone miss therefore waits `batch_window`;
//! a stream of misses (a migration burst) fills calls of up to 1000 instead of sending one
//! small call per window. Two rules keep a burst from splitting into many small calls:
//! - one call in flight per key: a batch that is ready while a call for its key is still
//!   out stays open (taking every miss that arrives meanwhile) and is looked at again when
//!   that call ends; only a full batch (1000 IDs) goes at once regardless;
//! - burst memory: once a key's batch closed full, at `MAX_OPEN`, or had to wait behind a
//!   call (misses arriving without pause), for `BURST_MEMORY` its batches wait for
//!   `BURST_QUIET` of quiet instead of `batch_window`, so a short stall in the arrivals (the
//!   proxy busy forwarding the previous thousand answers) does not cut a call short. A lone
//!   miss outside a burst still waits only `batch_window`.
//!
//! An ID already in a call is never asked for
//! twice: a later request waits for the answer of the call that carries it (keyed by tenant
//! and ID, like the cache, so it gets what it would read from the cache a moment later). The
//! batch runs in its own task, so a client that goes away does not cancel the answer others
//! wait for. A batch first reads the redb store for all its IDs in one transaction, so the
//! store is read once per batch rather than once per request. With `shared.backend =
//! "redis"`, IDs the redb store does not have are then read from the map shared by replicas
//! (copied into this replica's store when found), and new translations are written there
//! before the waiting requests get them, so another replica never pays for them again.
//!
//! What it must not do:
//! - send one caller's Authorization for another caller's IDs (the credential is part of the
//!   batch key), or log it;
//! - trust an answer's order (results are matched by `sourceId`) or store a target that is
//!   not an immutable ID (a damaged answer must not poison the persistent map);
//! - remember a whole call's failure as a per-ID failure: only Graph's per-ID
//!   `errorDetails` (and a 404 from the fallback read) are remembered for `negative_ttl`;
//! - grow per ID: the pending maps only hold IDs whose call is open or in flight, and are
//!   drained when it ends, even when the task is dropped.
//!
//! App-only tokens: Graph documents translateExchangeIds as unsupported for them. When it
//! answers 401/403 to an app-only caller, that tenant is remembered (for `REFUSAL_MEMORY`)
//! and its app-only IDs are resolved by reading the item instead:
//! `GET {mailbox_path}/messages/{id}?$select=id` with the Prefer header, at most
//! `FALLBACK_CONCURRENCY` at a time per batch (Outlook allows 4 concurrent requests per app
//! and mailbox, and these count against the app's budget). Only `messages` is tried: the
//! classifier cannot tell an event or a contact from a message (all are MAPI messages), and
//! guessing three collections would triple the reads for every ID; such IDs stay unmapped
//! and are forwarded as they are. `entryId` sources have no fallback (Graph paths take REST
//! IDs only).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use http::header::HeaderValue;
use tokio::sync::watch;

use crate::config;
use crate::errors::ProxyError;
use crate::exchange_id::{self, IdFormat};
use crate::hashing;
use crate::id_rewrite::Candidate;
use crate::id_store::{IdStore, Lookup};
use crate::metrics::Metrics;
use crate::shared::SharedIds;
use crate::upstream::Upstream;

mod calls;

pub use calls::{
    parse_answer, read_immutable_id, translate_exchange_ids, IdError, TranslateCall, Translated,
};

/// Graph's documented limit of `inputIds` per call.
pub const MAX_IDS_PER_CALL: usize = 1000;

/// The preference that makes Graph answer with immutable IDs.
pub const PREFER_IMMUTABLE: &str = "IdType=\"ImmutableId\"";

/// Outlook's own in-flight limit per app and mailbox.
const FALLBACK_CONCURRENCY: usize = 4;

/// How long a tenant's refusal of translateExchangeIds for app-only tokens is trusted before
/// it is asked again (an admin may grant the permission meanwhile).
const REFUSAL_MEMORY: Duration = Duration::from_secs(3600);

/// Tenants remembered as refusing; beyond this the oldest knowledge is dropped, which only
/// costs one refused call per tenant.
const MAX_REFUSED_TENANTS: usize = 10_000;

/// Who asks: the translate call goes to the same mailbox, with the same credential, as the
/// app's own request.
#[derive(Clone)]
pub struct Caller {
    pub tenant: String,
    /// `/v1.0/users/{id}` or `/v1.0/me`: the mailbox path prefix, version included, that
    /// the app's request used.
    pub mailbox_path: String,
    /// The app's own; never logged (`Debug` redacts it).
    pub authorization: HeaderValue,
    pub app_only: bool,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("tenant", &self.tenant)
            .field("mailbox_path", &self.mailbox_path)
            .field("authorization", &"<redacted>")
            .field("app_only", &self.app_only)
            .finish()
    }
}

/// Why a look-up call gave no answer. Cloneable: every request waiting on one call gets it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("Graph did not answer the ID look-up in {0:?}")]
    Timeout(Duration),
    #[error("Graph could not be reached for the ID look-up")]
    Unreachable(#[source] Arc<ProxyError>),
    #[error("Graph answered {status} ({code}) to the ID look-up")]
    Refused {
        status: u16,
        /// Graph's `error.code`, or empty when the body had none.
        code: String,
        /// On 429/503/504, when Graph said how long to wait.
        retry_after: Option<Duration>,
    },
    #[error("the ID look-up answer broke off")]
    AnswerBroke(#[source] Arc<dyn std::error::Error + Send + Sync>),
    #[error("the ID look-up answer is not usable: {0}")]
    BadAnswer(&'static str),
    #[error("the mailbox path cannot be used in a URL")]
    BadMailboxPath,
    #[error("the ID look-up this request waited for was abandoned")]
    Abandoned,
}

/// What one look-up came to, as every waiter sees it.
#[derive(Debug, Clone)]
enum Outcome {
    Mapped(String),
    /// Graph could not translate it (per-ID error, gone, no fallback): forward as is.
    Unmapped,
    Failed(LookupError),
}

type Slot = watch::Sender<Option<Outcome>>;
type Waiter = watch::Receiver<Option<Outcome>>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct BatchKey {
    tenant: String,
    mailbox: String,
    /// A keyed hash of the Authorization value: two credentials never share a call (a
    /// collision of the per-process SipHash key cannot be chosen by an attacker).
    credential: u64,
    source: IdFormat,
}

struct OpenBatch {
    serial: u64,
    caller: Caller,
    ids: Vec<(String, Slot)>,
    opened: Instant,
    /// When the last miss joined: the batch closes after `batch_window` of quiet.
    last_joined: Instant,
    /// Ready, but a call for the same key is in flight: the call's end sends it.
    parked: bool,
}

/// The longest a batch stays open while misses keep joining it (a call in flight for the
/// same key can hold it longer); bounds what a miss waits during a burst.
const MAX_OPEN: Duration = Duration::from_millis(1000);

/// How long a key counts as bursting after a batch of it closed full or at `MAX_OPEN`.
const BURST_MEMORY: Duration = Duration::from_secs(1);

/// The quiet that closes a batch of a bursting key.
const BURST_QUIET: Duration = Duration::from_millis(200);

/// What coalescing remembers per batch key between batches.
#[derive(Default)]
struct KeyState {
    /// Calls of this key now running (more than one only when full batches overlap).
    running: usize,
    /// Until when the key counts as bursting.
    burst_until: Option<Instant>,
}

impl KeyState {
    fn bursting(&self, now: Instant) -> bool {
        self.burst_until.is_some_and(|until| now < until)
    }
}

#[derive(Default)]
struct Pending {
    /// Batches still collecting IDs.
    open: HashMap<BatchKey, OpenBatch>,
    /// Keys with a call running or a burst remembered; pruned as they go idle.
    keys: HashMap<BatchKey, KeyState>,
    /// `keys` is pruned of idle entries when it grows past this.
    keys_prune_at: usize,
    /// (tenant, lookup) of every ID in an open or running call, for later requests to wait on.
    in_flight: HashMap<(String, String), Waiter>,
    next_serial: u64,
}

struct Inner {
    upstream: Arc<Upstream>,
    store: Arc<IdStore>,
    metrics: Arc<Metrics>,
    batch_window: Duration,
    hasher: RandomState,
    pending: Mutex<Pending>,
    /// Tenant -> when Graph last refused translateExchangeIds to an app-only token.
    refused: Mutex<HashMap<String, Instant>>,
    /// The map shared by replicas, with `shared.backend = "redis"`.
    shared: Option<SharedIds>,
}

/// The look-up step 3 calls: cache, store, then coalesced Graph calls.
pub struct IdLookup {
    inner: Arc<Inner>,
}

impl IdLookup {
    pub fn new(
        upstream: Arc<Upstream>,
        store: Arc<IdStore>,
        cfg: &config::Rewrite,
        metrics: Arc<Metrics>,
    ) -> Self {
        IdLookup {
            inner: Arc::new(Inner {
                upstream,
                store,
                metrics,
                batch_window: cfg.batch_window,
                hasher: RandomState::new(),
                pending: Mutex::new(Pending::default()),
                refused: Mutex::new(HashMap::new()),
                shared: None,
            }),
        }
    }

    /// Puts the replicas' shared map between the redb store and Graph. Call right after
    /// `new`, before the first look-up.
    pub fn share(mut self, shared: SharedIds) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.shared = Some(shared);
        }
        self
    }

    /// Lookup form -> immutable ID, for every candidate that resolved. Candidates that Graph
    /// could not translate are simply absent; an error means a call failed as a whole (the
    /// IDs that did resolve are in the cache for the next request).
    pub async fn resolve(
        &self,
        caller: &Caller,
        candidates: &[Candidate],
    ) -> Result<hashing::Map<String, String>, LookupError> {
        let metrics = &self.inner.metrics;
        let mut found =
            hashing::Map::with_capacity_and_hasher(candidates.len(), Default::default());
        let mut misses = Vec::new();
        let mut seen = hashing::Set::with_capacity_and_hasher(candidates.len(), Default::default());
        for candidate in candidates {
            if !seen.insert(candidate.lookup.as_str()) || !is_source_type(candidate) {
                continue;
            }
            let cached = self.inner.store.lookup_cached_compact(
                &caller.tenant,
                &candidate.lookup,
                candidate.cache_key(),
            );
            match cached {
                Lookup::Hit(immutable) => {
                    metrics.translate_ids.inc("cached");
                    found.insert(candidate.lookup.clone(), immutable);
                }
                Lookup::Failed => {}
                Lookup::Miss => misses.push(candidate),
            }
        }
        if misses.is_empty() {
            return Ok(found);
        }
        let mut failure = None;
        for (lookup, mut waiter) in self.inner.join(caller, &misses) {
            let outcome = match waiter.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone(),
                Err(_) => None,
            };
            match outcome.unwrap_or(Outcome::Failed(LookupError::Abandoned)) {
                Outcome::Mapped(immutable) => {
                    found.insert(lookup, immutable);
                }
                Outcome::Unmapped => {}
                Outcome::Failed(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// A 404 for a rewritten ID: forget that mapping (cache and store).
    pub async fn evict(&self, tenant: &str, regular: &str) {
        if let Some(shared) = &self.inner.shared {
            shared.forget(tenant, regular);
        }
        let store = Arc::clone(&self.inner.store);
        let (tenant, regular) = (tenant.to_owned(), regular.to_owned());
        match tokio::task::spawn_blocking(move || store.evict(&tenant, &regular)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not evict an ID mapping"),
            Err(e) => tracing::warn!(error = %e, "ID eviction task failed"),
        }
    }

    pub fn store(&self) -> &Arc<IdStore> {
        &self.inner.store
    }
}

fn is_source_type(candidate: &Candidate) -> bool {
    matches!(
        candidate.source_id_type(),
        IdFormat::RestId | IdFormat::EwsId | IdFormat::EntryId
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent between statements, so a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Puts every miss into an open batch (or onto the call already carrying it) and returns
    /// what to wait on. Never awaits: the lock is held for the whole loop, once.
    fn join(self: &Arc<Self>, caller: &Caller, misses: &[&Candidate]) -> Vec<(String, Waiter)> {
        let credential = self.hasher.hash_one(caller.authorization.as_bytes());
        let mailbox = caller.mailbox_path.to_ascii_lowercase();
        let mut waits = Vec::with_capacity(misses.len());
        let mut new_batches = Vec::new();
        let mut full_batches = Vec::new();
        {
            let mut pending = lock(&self.pending);
            for candidate in misses {
                let flight = (caller.tenant.clone(), candidate.lookup.clone());
                if let Some(waiter) = pending.in_flight.get(&flight) {
                    waits.push((candidate.lookup.clone(), waiter.clone()));
                    continue;
                }
                let (slot, waiter) = watch::channel(None);
                pending.in_flight.insert(flight, waiter.clone());
                waits.push((candidate.lookup.clone(), waiter));
                let key = BatchKey {
                    tenant: caller.tenant.clone(),
                    mailbox: mailbox.clone(),
                    credential,
                    source: candidate.source_id_type(),
                };
                let serial = pending.next_serial;
                let now = Instant::now();
                let batch = match pending.open.entry(key.clone()) {
                    Entry::Occupied(open) => open.into_mut(),
                    Entry::Vacant(vacant) => {
                        new_batches.push((key.clone(), serial));
                        vacant.insert(OpenBatch {
                            serial,
                            caller: caller.clone(),
                            ids: Vec::new(),
                            opened: now,
                            last_joined: now,
                            parked: false,
                        })
                    }
                };
                batch.ids.push((candidate.lookup.clone(), slot));
                batch.last_joined = now;
                let full = batch.ids.len() >= MAX_IDS_PER_CALL;
                pending.next_serial = pending.next_serial.wrapping_add(1);
                if full {
                    if let Some(batch) = pending.take(&key, true) {
                        full_batches.push((key, batch));
                    }
                }
            }
        }
        for (key, serial) in new_batches {
            let inner = Arc::clone(self);
            let window = inner.batch_window;
            tokio::spawn(async move { inner.close_when_ready(key, serial, window).await });
        }
        for (key, batch) in full_batches {
            let inner = Arc::clone(self);
            tokio::spawn(async move { inner.run(key, batch).await });
        }
        waits
    }

    /// The timer of one open batch: sends it after the quiet its key needs or at
    /// `MAX_OPEN`, or parks it behind the call its key has in flight.
    async fn close_when_ready(self: Arc<Self>, key: BatchKey, serial: u64, first_wait: Duration) {
        let mut wait = first_wait;
        let batch = loop {
            tokio::time::sleep(wait).await;
            let mut pending = lock(&self.pending);
            let now = Instant::now();
            let bursting = pending.keys.get(&key).is_some_and(|k| k.bursting(now));
            let running = pending.keys.get(&key).map_or(0, |k| k.running);
            let Some(open) = pending.open.get_mut(&key) else {
                // Sent early because it filled up.
                return;
            };
            if open.serial != serial || open.parked {
                // Replaced by a newer batch with its own timer, or already parked.
                return;
            }
            let by_age = match due(open, self.batch_window, bursting, now) {
                Ok(by_age) => by_age,
                Err(left) => {
                    // Misses are still arriving: wait for quiet, never past max_open.
                    wait = left;
                    continue;
                }
            };
            if running > 0 {
                // The end of the call in flight decides, with whatever joined meanwhile;
                // misses arriving while a call is out mean the key is bursting.
                open.parked = true;
                pending.mark_burst(&key, now);
                return;
            }
            break pending.take(&key, by_age);
        };
        if let Some(batch) = batch {
            self.run(key, batch).await;
        }
    }

    /// Resolves one closed batch: the store first (one read transaction), then Graph.
    async fn run(self: Arc<Self>, key: BatchKey, batch: OpenBatch) {
        // Counted as running since `take`; the guard hands the key on however this ends.
        let _running = Running {
            inner: Arc::clone(&self),
            key: key.clone(),
        };
        let OpenBatch { caller, ids, .. } = batch;
        let flight = Flight {
            inner: Arc::clone(&self),
            tenant: key.tenant.clone(),
            slots: ids,
        };
        let lookups: Vec<String> = flight.slots.iter().map(|(id, _)| id.clone()).collect();
        let mut outcomes = self.read_store(&key.tenant, &lookups).await;
        let mut remaining: Vec<String> = lookups
            .into_iter()
            .filter(|id| !outcomes.contains_key(id))
            .collect();
        if !remaining.is_empty() {
            let shared = self.read_shared(&key.tenant, &remaining).await;
            if !shared.is_empty() {
                remaining.retain(|id| !shared.iter().any(|(found, _)| found == id));
                outcomes.extend(
                    shared
                        .iter()
                        .map(|(id, immutable)| (id.clone(), Outcome::Mapped(immutable.clone()))),
                );
                self.persist(&key.tenant, shared).await;
            }
        }
        if !remaining.is_empty() {
            let (graph, pairs) = self.ask_graph(&caller, key.source, &remaining).await;
            self.write_shared(&key.tenant, &pairs).await;
            self.persist(&key.tenant, pairs).await;
            outcomes.extend(graph);
        }
        flight.finish(outcomes);
    }

    async fn read_store(&self, tenant: &str, lookups: &[String]) -> HashMap<String, Outcome> {
        let store = Arc::clone(&self.store);
        let (tenant, ids) = (tenant.to_owned(), lookups.to_vec());
        let read = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            store
                .lookup_persistent(&tenant, &refs)
                .map(|found| ids.into_iter().zip(found).collect::<Vec<_>>())
        })
        .await;
        let found = match read {
            Ok(Ok(found)) => found,
            // Graph can still answer; the store being unreadable must not stop rewriting.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ID store read failed; asking Graph");
                return HashMap::new();
            }
            Err(e) => {
                tracing::warn!(error = %e, "ID store read task failed; asking Graph");
                return HashMap::new();
            }
        };
        found
            .into_iter()
            .filter_map(|(id, immutable)| {
                let immutable = immutable?;
                self.metrics.translate_ids.inc("cached");
                Some((id, Outcome::Mapped(immutable)))
            })
            .collect()
    }

    /// Mappings another replica put in the shared map. Redis failing reads as "none": Graph
    /// can still answer.
    async fn read_shared(&self, tenant: &str, ids: &[String]) -> Vec<(String, String)> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        if !shared.redis().is_up() {
            shared.redis().fell_back();
            return Vec::new();
        }
        match shared.get_many(tenant, ids).await {
            Ok(found) => ids
                .iter()
                .zip(found)
                // Whatever is in Redis goes into requests: only real immutable IDs count.
                .filter_map(|(id, immutable)| Some((id.clone(), immutable?)))
                .filter(|(_, immutable)| is_immutable(immutable))
                .inspect(|_| self.metrics.translate_ids.inc("cached"))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "shared ID map read failed; using Graph");
                shared.redis().fell_back();
                Vec::new()
            }
        }
    }

    async fn write_shared(&self, tenant: &str, pairs: &[(String, String)]) {
        let Some(shared) = &self.shared else {
            return;
        };
        if pairs.is_empty() {
            return;
        }
        if !shared.redis().is_up() {
            shared.redis().fell_back();
            return;
        }
        if let Err(e) = shared.put_many(tenant, pairs).await {
            tracing::debug!(error = %e, "shared ID map write failed; mappings stay local");
            shared.redis().fell_back();
        }
    }

    /// Outcomes for `ids`, and the mappings to store.
    async fn ask_graph(
        &self,
        caller: &Caller,
        source: IdFormat,
        ids: &[String],
    ) -> (HashMap<String, Outcome>, Vec<(String, String)>) {
        if caller.app_only && self.translate_refused(&caller.tenant) {
            return self.fallback(caller, source, ids).await;
        }
        let call = TranslateCall {
            mailbox_path: &caller.mailbox_path,
            authorization: &caller.authorization,
            source,
            target: IdFormat::RestImmutableEntryId,
            ids,
        };
        let answer = translate_exchange_ids(&self.upstream, &self.metrics, &call).await;
        let mut results = match answer {
            Ok(results) => results,
            Err(LookupError::Refused {
                status: 401 | 403, ..
            }) if caller.app_only => {
                tracing::info!(
                    tenant = %caller.tenant,
                    "Graph refuses translateExchangeIds to app-only tokens; reading items instead"
                );
                self.remember_refusal(&caller.tenant);
                return self.fallback(caller, source, ids).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, ids = ids.len(), "translateExchangeIds failed");
                self.count_errors(ids.len());
                let outcomes = ids
                    .iter()
                    .map(|id| (id.clone(), Outcome::Failed(e.clone())))
                    .collect();
                return (outcomes, Vec::new());
            }
        };
        let mut outcomes = HashMap::with_capacity(ids.len());
        let mut pairs = Vec::new();
        for id in ids {
            let outcome = match results.remove(id) {
                Some(Ok(target)) if is_immutable(&target) => {
                    self.metrics.translate_ids.inc("ok");
                    pairs.push((id.clone(), target.clone()));
                    Outcome::Mapped(target)
                }
                Some(Ok(_)) => {
                    tracing::warn!("translateExchangeIds returned a target that is not an immutable ID; ignored");
                    self.count_errors(1);
                    Outcome::Unmapped
                }
                Some(Err(error)) => {
                    tracing::debug!(code = %error.code, "translateExchangeIds could not translate an ID");
                    self.store.remember_failure(&caller.tenant, id);
                    self.count_errors(1);
                    Outcome::Unmapped
                }
                None => {
                    self.count_errors(1);
                    Outcome::Unmapped
                }
            };
            outcomes.insert(id.clone(), outcome);
        }
        (outcomes, pairs)
    }

    async fn fallback(
        &self,
        caller: &Caller,
        source: IdFormat,
        ids: &[String],
    ) -> (HashMap<String, Outcome>, Vec<(String, String)>) {
        if source != IdFormat::RestId {
            self.count_errors(ids.len());
            let outcomes = ids
                .iter()
                .map(|id| (id.clone(), Outcome::Unmapped))
                .collect();
            return (outcomes, Vec::new());
        }
        let upstream = &self.upstream;
        let metrics = &self.metrics;
        let reads = stream::iter(ids.to_vec())
            .map(|id| async move {
                let read = read_immutable_id(upstream, metrics, caller, &id).await;
                (id, read)
            })
            .buffer_unordered(FALLBACK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut outcomes = HashMap::with_capacity(ids.len());
        let mut pairs = Vec::new();
        for (id, read) in reads {
            let outcome = match read {
                Ok(Some(target)) if is_immutable(&target) => {
                    self.metrics.translate_ids.inc("ok");
                    pairs.push((id.clone(), target.clone()));
                    Outcome::Mapped(target)
                }
                Ok(Some(_)) => {
                    self.count_errors(1);
                    Outcome::Unmapped
                }
                Ok(None) => {
                    self.store.remember_failure(&caller.tenant, &id);
                    self.count_errors(1);
                    Outcome::Unmapped
                }
                Err(e) => {
                    self.count_errors(1);
                    Outcome::Failed(e)
                }
            };
            outcomes.insert(id, outcome);
        }
        (outcomes, pairs)
    }

    async fn persist(&self, tenant: &str, pairs: Vec<(String, String)>) {
        if pairs.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let tenant = tenant.to_owned();
        // insert_many caches before it writes, so even a failed write serves from memory.
        match tokio::task::spawn_blocking(move || store.insert_many(&tenant, &pairs)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not store ID mappings"),
            Err(e) => tracing::warn!(error = %e, "ID store write task failed"),
        }
    }

    fn count_errors(&self, n: usize) {
        for _ in 0..n {
            self.metrics.translate_ids.inc("error");
        }
    }

    fn translate_refused(&self, tenant: &str) -> bool {
        lock(&self.refused)
            .get(tenant)
            .is_some_and(|at| at.elapsed() < REFUSAL_MEMORY)
    }

    fn remember_refusal(&self, tenant: &str) {
        let mut refused = lock(&self.refused);
        if refused.len() >= MAX_REFUSED_TENANTS && !refused.contains_key(tenant) {
            refused.retain(|_, at| at.elapsed() < REFUSAL_MEMORY);
            if refused.len() >= MAX_REFUSED_TENANTS {
                refused.clear();
            }
        }
        refused.insert(tenant.to_owned(), Instant::now());
    }
}

fn is_immutable(id: &str) -> bool {
    exchange_id::classify(id).is_some_and(|id| id.format == IdFormat::RestImmutableEntryId)
}

/// The IDs of one running batch. Dropping it (normally through `finish`, or when the task is
/// dropped) takes its IDs out of `in_flight`, so the map never keeps an ID nobody resolves.
impl Pending {
    /// Closes the key's open batch and counts a call of the key as running; `burst` marks
    /// the key as bursting (the batch filled up or stayed open to `MAX_OPEN`).
    fn take(&mut self, key: &BatchKey, burst: bool) -> Option<OpenBatch> {
        let batch = self.open.remove(key)?;
        if self.keys.len() >= self.keys_prune_at {
            let now = Instant::now();
            self.keys.retain(|_, k| k.running > 0 || k.bursting(now));
            self.keys_prune_at = (self.keys.len() * 2).max(1024);
        }
        let state = self.keys.entry(key.clone()).or_default();
        state.running += 1;
        if burst {
            state.burst_until = Some(Instant::now() + BURST_MEMORY);
        }
        Some(batch)
    }

    fn mark_burst(&mut self, key: &BatchKey, now: Instant) {
        if let Some(state) = self.keys.get_mut(key) {
            state.burst_until = Some(now + BURST_MEMORY);
        }
    }

    /// A call of the key ended: the batch parked behind it, if any, is due now or gets a
    /// timer again (with the quiet of a bursting key: misses kept arriving meanwhile).
    fn call_ended(&mut self, key: &BatchKey, window: Duration) -> Next {
        let now = Instant::now();
        let parked = self.open.get(key).is_some_and(|open| open.parked);
        if parked {
            self.mark_burst(key, now);
        }
        if let Some(state) = self.keys.get_mut(key) {
            state.running = state.running.saturating_sub(1);
            if state.running == 0 && !state.bursting(now) {
                self.keys.remove(key);
            }
        }
        let Some(open) = self.open.get_mut(key).filter(|_| parked) else {
            return Next::Nothing;
        };
        open.parked = false;
        match due(open, window, true, now) {
            Ok(by_age) => self.take(key, by_age).map_or(Next::Nothing, Next::Run),
            Err(left) => Next::Timer(open.serial, left),
        }
    }
}

/// What follows the end of a call for the batch parked behind it.
enum Next {
    Nothing,
    Run(OpenBatch),
    /// Not yet quiet: the batch with this serial gets a timer again.
    Timer(u64, Duration),
}

/// Whether an open batch is due at `now`: `Ok(by_age)` when it is (`by_age`: it reached
/// `MAX_OPEN` rather than quiet), else how long until it may be.
fn due(open: &OpenBatch, window: Duration, bursting: bool, now: Instant) -> Result<bool, Duration> {
    let max_open = MAX_OPEN.max(window);
    let quiet_needed = if bursting {
        BURST_QUIET.max(window)
    } else {
        window
    };
    let quiet = now.saturating_duration_since(open.last_joined);
    let age = now.saturating_duration_since(open.opened);
    if quiet >= quiet_needed || age >= max_open {
        Ok(age >= max_open)
    } else {
        Err((quiet_needed - quiet).min(max_open - age))
    }
}

/// Held by a running call; when the call ends (or its task is dropped), hands the batch of
/// the same key that was parked behind it on.
struct Running {
    inner: Arc<Inner>,
    key: BatchKey,
}

impl Drop for Running {
    fn drop(&mut self) {
        let next = lock(&self.inner.pending).call_ended(&self.key, self.inner.batch_window);
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(_) => {
                // The runtime is shutting down: dropping the batch wakes its waiters with
                // `Abandoned`.
                if let Next::Run(batch) = next {
                    // Dropping a Flight forgets its IDs, as for a call that ended abnormally.
                    drop(Flight {
                        inner: Arc::clone(&self.inner),
                        tenant: self.key.tenant.clone(),
                        slots: batch.ids,
                    });
                }
                return;
            }
        };
        let inner = Arc::clone(&self.inner);
        let key = self.key.clone();
        match next {
            Next::Nothing => {}
            Next::Run(batch) => {
                runtime.spawn(async move { inner.run(key, batch).await });
            }
            Next::Timer(serial, wait) => {
                runtime.spawn(async move { inner.close_when_ready(key, serial, wait).await });
            }
        }
    }
}

struct Flight {
    inner: Arc<Inner>,
    tenant: String,
    slots: Vec<(String, Slot)>,
}

impl Flight {
    fn finish(mut self, mut outcomes: HashMap<String, Outcome>) {
        let slots = std::mem::take(&mut self.slots);
        self.forget(slots.iter().map(|(id, _)| id));
        for (id, slot) in slots {
            let outcome = outcomes
                .remove(&id)
                .unwrap_or(Outcome::Failed(LookupError::Abandoned));
            // No receiver left (every waiter went away) is fine.
            let _ = slot.send(Some(outcome));
        }
    }

    fn forget<'a>(&self, ids: impl Iterator<Item = &'a String>) {
        let mut pending = lock(&self.inner.pending);
        for id in ids {
            pending.in_flight.remove(&(self.tenant.clone(), id.clone()));
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            let slots = std::mem::take(&mut self.slots);
            self.forget(slots.iter().map(|(id, _)| id));
            // Dropping the senders wakes every waiter with `Abandoned`.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_debug_never_shows_the_token() {
        let caller = Caller {
            tenant: "t".into(),
            mailbox_path: "/v1.0/me".into(),
            authorization: HeaderValue::from_static("Bearer secret-token"),
            app_only: false,
        };
        let text = format!("{caller:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn only_immutable_rest_ids_are_accepted_as_targets() {
        let immutable = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0AZhrLQvVZxkGMlArtZCMCdgAATNyWjwAA";
        assert_eq!(immutable.len(), 68);
        assert!(is_immutable(immutable));
        let regular = "AAMkADgwNzM0ZDllLTVhYmItNDU2ZC1iMGI4LTFiOTAyOWQ2NDNlOQBGAAAAAADhDq91SSK4QIw9CuwFXFc0BwBmGstC9VnGQYyUCu1kIwJ2AAAAAAEMAABmGstC9VnGQYyUCu1kIwJ2AABM3JaPAAA=";
        assert!(!is_immutable(regular));
        assert!(!is_immutable("\"/../x"));
    }
}
