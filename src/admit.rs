//! Admit (step 2 of a request): decide whether a request identified by `identify` may go to
//! Graph now, later (queued, oldest first) or not at all (429 with Retry-After).
//!
//! Layers, each checked in this order so that a refusal wastes as little as possible:
//! 1. the penalty box: Graph itself said 429/503 with Retry-After for this app+mailbox (or
//!    for the tenant, on requests without a mailbox);
//! 2. the in-flight cap per app+mailbox (`mailbox_concurrency`), one FIFO semaphore each;
//! 3. the tenant's token bucket (`requests_per_second`/`burst`, or its override);
//! 4. the app+mailbox budget (`mailbox_requests_per_10min`, all of it available at once).
//!
//! Token buckets are governor keyed limiters, generic over governor's `Clock` so tests can
//! drive them with `FakeRelativeClock`; waiting uses tokio's timer. Governor has no fairness
//! of its own, so in queue mode each bucket key has a FIFO (tokio) mutex and only the oldest
//! waiter asks the bucket. Every map here is swept by `evict_idle`, so memory stays bounded
//! whatever tenants and mailboxes appear.
//!
//! Must not: hold a std lock across an `.await` (the admit future must stay `Send` and never
//! block a runtime thread), panic on any key or duration, or leak a queue place or slot when
//! the admit future is dropped (a client that hangs up while queued). Tokens a bucket has
//! already granted are not given back when a later layer refuses: governor cannot return
//! them, and the loss is at most one request's cost.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{InsufficientCapacity, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::config::{OnLimit, RateLimit};
use crate::identity::{AppId, Mailbox, TenantId};
use crate::metrics::Metrics;

/// Outlook's published mailbox budget is per ten minutes.
const MAILBOX_WINDOW: Duration = Duration::from_secs(600);

/// Retry-After when no limiter can name a time: the in-flight cap is full, or the queue
/// deadline passed while older requests were still ahead. One second is the smallest
/// Retry-After there is.
const UNKNOWN_WAIT: Duration = Duration::from_secs(1);

/// Graph has sent Retry-After values of a few minutes; anything beyond an hour is a bad
/// header (or HTTP-date), not a throttle worth honouring in full.
const MAX_PENALTY: Duration = Duration::from_secs(3600);

/// Caps `max_wait` so instant arithmetic can never overflow, whatever the config says.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A bucket that refuses with a zero wait (another check raced us) is asked again after
/// this, instead of spinning.
const MIN_RETRY_SLEEP: Duration = Duration::from_millis(1);

/// `tokio::time::interval` panics on a zero period.
const MIN_EVICTION_INTERVAL: Duration = Duration::from_millis(10);

/// Keeps the timer's instant arithmetic far from overflow.
const MAX_EVICTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Far above Outlook's 4, and far below tokio's semaphore maximum (which panics), on every
/// pointer width.
const MAX_SLOTS: u32 = 1 << 20;

type KeyedLimiter<K, C> =
    RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// What one request asks of the limits.
#[derive(Debug, Clone)]
pub struct Demand<'a> {
    pub tenant: &'a TenantId,
    pub app: &'a AppId,
    /// One entry per mailbox touched, with its cost (a `$batch` of 5 to one mailbox = 5);
    /// empty for non-mailbox routes. Repeated mailboxes are added up.
    pub mailboxes: Vec<(Mailbox, u32)>,
    /// Total tokens for the tenant layer (1, or the sub-request count). Zero charges nothing.
    pub cost: u32,
}

impl<'a> Demand<'a> {
    /// An ordinary (non-`$batch`) request: one token, against its mailbox if it has one.
    pub fn single(tenant: &'a TenantId, app: &'a AppId, mailbox: Option<&Mailbox>) -> Self {
        Demand {
            tenant,
            app,
            mailboxes: mailbox.map(|m| (m.clone(), 1)).into_iter().collect(),
            cost: 1,
        }
    }
}

/// The request is over a limit: the caller answers 429 `TooManyRequests` with this
/// `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over the proxy's rate limit, retry after {} s", .retry_after.as_secs())]
pub struct Rejected {
    /// Whole seconds, at least one: Retry-After has no smaller unit, and zero would invite
    /// an immediate retry that is certain to fail.
    pub retry_after: Duration,
}

impl Rejected {
    /// Rounds the limiter's own answer up to whole seconds, at least one.
    pub(crate) fn after(wait: Duration) -> Rejected {
        let secs = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        Rejected {
            retry_after: Duration::from_secs(secs.max(1)),
        }
    }

    /// The `Retry-After` header value.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs().max(1)
    }
}

/// Admission granted. Holds the request's in-flight slots until it is dropped, so keep it
/// alive until Graph's answer head has arrived.
pub struct AdmitPermit {
    slots: Vec<Slot>,
    /// In-flight leases in Redis, when admitted by `shared::SharedLimits`.
    leases: Option<crate::shared::limits::Leases>,
}

impl AdmitPermit {
    /// In-flight slots held, summed over mailboxes.
    pub fn slots_held(&self) -> usize {
        self.slots.iter().map(|s| s.permit.num_permits()).sum()
    }

    /// Admitted by the shared limits: the slots are leases in Redis.
    pub(crate) fn with_leases(leases: Option<crate::shared::limits::Leases>) -> AdmitPermit {
        AdmitPermit {
            slots: Vec::new(),
            leases,
        }
    }

    /// Shared in-flight leases held, summed over mailboxes.
    pub fn leases_held(&self) -> u32 {
        self.leases.as_ref().map_or(0, |l| l.count())
    }
}

impl fmt::Debug for AdmitPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmitPermit")
            .field("slots_held", &self.slots_held())
            .field("leases_held", &self.leases_held())
            .finish()
    }
}

/// The key of the mailbox layers: Outlook counts per app and mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct MailboxKey {
    app: AppId,
    mailbox: Mailbox,
}

/// Who a queue or a penalty belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Tenant(TenantId),
    Mailbox(MailboxKey),
}

/// A keyed limiter and the quota it was built with, so a reload can keep it (and its
/// buckets) when the quota did not change.
struct Layer<K: Hash + Eq + Clone, C: Clock> {
    quota: Quota,
    limiter: Arc<KeyedLimiter<K, C>>,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Layer<K, C> {
    fn new(quota: Quota, clock: &C, previous: Option<&Layer<K, C>>) -> Self {
        let limiter = previous
            .filter(|p| p.quota == quota)
            .map(|p| Arc::clone(&p.limiter))
            .unwrap_or_else(|| Arc::new(RateLimiter::dashmap_with_clock(quota, clock.clone())));
        Layer { quota, limiter }
    }
}

/// Everything `[rate_limit]` decides, swapped whole on reload. Requests already queued keep
/// the policy they started with.
struct Policy<C: Clock> {
    enabled: bool,
    on_limit: OnLimit,
    max_wait: Duration,
    default_tenant: Layer<TenantId, C>,
    /// One limiter per distinct override quota: tenants with equal quotas share a limiter
    /// (each still has its own key, so its own bucket). An override equal to the default
    /// quota is simply the default.
    override_layers: Vec<Layer<TenantId, C>>,
    /// Lower-cased tenant id -> index into `override_layers`.
    override_of: HashMap<String, usize>,
    mailbox_budget: Layer<MailboxKey, C>,
}

impl<C: Clock + Clone> Policy<C> {
    fn build(cfg: &RateLimit, clock: &C, previous: Option<&Policy<C>>) -> Self {
        let previous_tenant_layer = |quota: Quota| {
            previous.and_then(|p| {
                std::iter::once(&p.default_tenant)
                    .chain(&p.override_layers)
                    .find(|l| l.quota == quota)
            })
        };
        let default_quota = tenant_quota(cfg.requests_per_second, cfg.burst);
        let default_tenant = Layer::new(default_quota, clock, previous_tenant_layer(default_quota));
        let mut override_layers: Vec<Layer<TenantId, C>> = Vec::new();
        let mut override_of = HashMap::new();
        for (tenant, limit) in &cfg.tenants {
            let quota = tenant_quota(limit.requests_per_second, limit.burst);
            if quota == default_quota {
                continue;
            }
            let layer = match override_layers.iter().position(|l| l.quota == quota) {
                Some(layer) => layer,
                None => {
                    let layer = Layer::new(quota, clock, previous_tenant_layer(quota));
                    override_layers.push(layer);
                    override_layers.len() - 1
                }
            };
            override_of.insert(tenant.to_ascii_lowercase(), layer);
        }
        let mailbox_budget = Layer::new(
            mailbox_quota(cfg.mailbox_requests_per_10min),
            clock,
            previous.map(|p| &p.mailbox_budget),
        );
        Policy {
            enabled: cfg.enabled,
            on_limit: cfg.on_limit,
            max_wait: cfg.max_wait.min(MAX_QUEUE_WAIT),
            default_tenant,
            override_layers,
            override_of,
            mailbox_budget,
        }
    }
}

impl<C: Clock> Policy<C> {
    /// Tenant ids are GUIDs, written in either case in config files; tokens carry them in
    /// lower case.
    fn tenant_limiter(&self, tenant: &TenantId) -> &KeyedLimiter<TenantId, C> {
        let id = tenant.as_str();
        let layer = if self.override_of.is_empty() {
            None
        } else if id.bytes().any(|b| b.is_ascii_uppercase()) {
            self.override_of.get(&id.to_ascii_lowercase())
        } else {
            self.override_of.get(id)
        };
        layer
            .and_then(|&i| self.override_layers.get(i))
            .unwrap_or(&self.default_tenant)
            .limiter
            .as_ref()
    }

    fn tenant_layers(&self) -> impl Iterator<Item = &Layer<TenantId, C>> {
        std::iter::once(&self.default_tenant).chain(&self.override_layers)
    }

    fn key_count(&self) -> usize {
        let tenants: usize = self.tenant_layers().map(|l| l.limiter.len()).sum();
        tenants + self.mailbox_budget.limiter.len()
    }

    fn evict_idle(&self) {
        for layer in self.tenant_layers() {
            layer.limiter.retain_recent();
            layer.limiter.shrink_to_fit();
        }
        self.mailbox_budget.limiter.retain_recent();
        self.mailbox_budget.limiter.shrink_to_fit();
    }
}

fn slot_capacity(cfg: &RateLimit) -> u32 {
    cfg.mailbox_concurrency.get().min(MAX_SLOTS)
}

fn tenant_quota(requests_per_second: NonZeroU32, burst: NonZeroU32) -> Quota {
    Quota::per_second(requests_per_second).allow_burst(burst)
}

/// The whole ten-minute budget at once, then one token every `600 s / budget`.
fn mailbox_quota(per_10min: NonZeroU32) -> Quota {
    // 600 s / u32::MAX is still about 140 ns, so `with_period` never sees zero; the
    // fallback only keeps this total.
    Quota::with_period(MAILBOX_WINDOW / per_10min.get())
        .unwrap_or_else(|| Quota::per_second(per_10min))
        .allow_burst(per_10min)
}

/// One app+mailbox's in-flight slots.
struct MailboxSlots {
    semaphore: Arc<Semaphore>,
    /// `mailbox_concurrency` this semaphore currently stands for.
    capacity: AtomicU32,
    /// Slots still to be retired after a reload lowered the capacity while they were in
    /// use: the next permits returned are forgotten instead of released.
    debt: AtomicU32,
}

impl MailboxSlots {
    fn new(capacity: u32) -> Self {
        MailboxSlots {
            semaphore: Arc::new(Semaphore::new(capacity as usize)),
            capacity: AtomicU32::new(capacity),
            debt: AtomicU32::new(0),
        }
    }

    fn resize(&self, capacity: u32) {
        let old = self.capacity.swap(capacity, Ordering::SeqCst);
        if capacity > old {
            let grow = capacity - old;
            let forgiven = take_up_to(&self.debt, grow);
            self.semaphore.add_permits((grow - forgiven) as usize);
        } else if old > capacity {
            let shrink = old - capacity;
            let retired = u32::try_from(self.semaphore.forget_permits(shrink as usize))
                .unwrap_or(shrink)
                .min(shrink);
            self.debt.fetch_add(shrink - retired, Ordering::SeqCst);
        }
    }
}

/// Subtracts at most `max` from `counter` (never below zero); returns what it took.
fn take_up_to(counter: &AtomicU32, max: u32) -> u32 {
    let previous = counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n - n.min(max)))
        .unwrap_or_else(|n| n);
    previous.min(max)
}

/// Slots held on one mailbox by one admitted request.
struct Slot {
    permit: OwnedSemaphorePermit,
    /// Keeps the entry marked busy, so eviction leaves it alone.
    entry: Arc<MailboxSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let held = u32::try_from(self.permit.num_permits()).unwrap_or(u32::MAX);
        let owed = take_up_to(&self.entry.debt, held);
        if owed > 0 {
            if let Some(retired) = self.permit.split(owed as usize) {
                retired.forget();
            }
        }
    }
}

struct SlotTable {
    capacity: u32,
    by_key: HashMap<MailboxKey, Arc<MailboxSlots>>,
}

/// One request's progress through the layers.
struct Admission<'m> {
    on_limit: OnLimit,
    deadline: Instant,
    /// Set once the request had to wait for anything; counted once, as `queued`.
    queued: bool,
    /// `idproxy_queue_depth`: raised when this request starts waiting, lowered when the
    /// admission ends, however it ends (a client that goes away drops it mid-wait).
    metrics: &'m Metrics,
}

impl Admission<'_> {
    fn wait(&mut self) {
        if !self.queued {
            self.queued = true;
            self.metrics.queue_depth.add(1);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.metrics.queue_depth.add(-1);
        }
    }
}

/// The proxy's own rate limits. Built once from `[rate_limit]`, shared in an `Arc`.
pub struct Limits<C: Clock = DefaultClock> {
    clock: C,
    metrics: Arc<Metrics>,
    policy: RwLock<Arc<Policy<C>>>,
    slots: Mutex<SlotTable>,
    /// Queue-mode turn-taking per bucket key: whoever holds the lock is the oldest waiter,
    /// and only it asks the bucket.
    queues: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Keys Graph throttled, and until when.
    penalties: Mutex<HashMap<Key, Instant>>,
}

impl Limits {
    pub fn new(cfg: &RateLimit, metrics: Arc<Metrics>) -> Limits {
        Limits::with_clock(cfg, metrics, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// As `new`, with the clock the token buckets read (tests pass `FakeRelativeClock`).
    pub fn with_clock(cfg: &RateLimit, metrics: Arc<Metrics>, clock: C) -> Limits<C> {
        let policy = Policy::build(cfg, &clock, None);
        Limits {
            clock,
            metrics,
            policy: RwLock::new(Arc::new(policy)),
            slots: Mutex::new(SlotTable {
                capacity: slot_capacity(cfg),
                by_key: HashMap::new(),
            }),
            queues: Mutex::new(HashMap::new()),
            penalties: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces `[rate_limit]` at run time. Admitted requests keep their slots; queued ones
    /// finish under the policy they started with; buckets whose quota did not change keep
    /// their state.
    pub fn reload(&self, cfg: &RateLimit) {
        {
            let mut current = self.policy.write().unwrap_or_else(PoisonError::into_inner);
            let next = Policy::build(cfg, &self.clock, Some(&current));
            *current = Arc::new(next);
        }
        let capacity = slot_capacity(cfg);
        let mut table = lock(&self.slots);
        if table.capacity != capacity {
            table.capacity = capacity;
            for entry in table.by_key.values() {
                entry.resize(capacity);
            }
        }
    }
}

impl<C: Clock> Limits<C> {
    fn policy(&self) -> Arc<Policy<C>> {
        Arc::clone(&self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits (queue mode) or refuses (reject mode, or past `max_wait`) until every layer
    /// admits the demand. Dropping the future gives back its queue place and any slot it
    /// already held.
    pub async fn admit(&self, demand: &Demand<'_>) -> Result<AdmitPermit, Rejected> {
        let policy = self.policy();
        if !policy.enabled {
            return Ok(AdmitPermit::with_leases(None));
        }
        let start = Instant::now();
        let mut admission = Admission {
            on_limit: policy.on_limit,
            deadline: start.checked_add(policy.max_wait).unwrap_or(start),
            queued: false,
            metrics: &self.metrics,
        };
        let result = self.admit_in_layers(&policy, demand, &mut admission).await;
        if admission.queued {
            self.metrics.rate_limited.inc("queued");
            self.metrics.queue_wait.observe(start.elapsed());
        }
        if result.is_err() {
            self.metrics.rate_limited.inc("rejected");
        }
        result
    }

    async fn admit_in_layers(
        &self,
        policy: &Policy<C>,
        demand: &Demand<'_>,
        admission: &mut Admission<'_>,
    ) -> Result<AdmitPermit, Rejected> {
        // Sorted, so two demands on the same mailboxes take their slots in the same order
        // and cannot deadlock each other.
        let mut mailboxes: BTreeMap<MailboxKey, u32> = BTreeMap::new();
        for (mailbox, cost) in &demand.mailboxes {
            let key = MailboxKey {
                app: demand.app.clone(),
                mailbox: mailbox.clone(),
            };
            let total = mailboxes.entry(key).or_insert(0);
            *total = total.saturating_add(*cost);
        }
        let penalty_keys: Vec<Key> = if mailboxes.is_empty() {
            vec![Key::Tenant(demand.tenant.clone())]
        } else {
            mailboxes.keys().cloned().map(Key::Mailbox).collect()
        };

        self.sit_out_penalties(&penalty_keys, admission).await?;
        let mut slots = Vec::with_capacity(mailboxes.len());
        for (key, cost) in &mailboxes {
            slots.push(self.take_slots(key, *cost, admission).await?);
        }
        // Graph may have throttled the mailbox while this request waited for a slot: the
        // request that freed it is often the one that got the 429.
        if admission.queued {
            self.sit_out_penalties(&penalty_keys, admission).await?;
        }

        if let Some(cost) = NonZeroU32::new(demand.cost) {
            let limiter = policy.tenant_limiter(demand.tenant);
            let queue = Key::Tenant(demand.tenant.clone());
            self.take_tokens(limiter, demand.tenant, queue, cost, admission)
                .await?;
        }
        for (key, cost) in &mailboxes {
            if let Some(cost) = NonZeroU32::new(*cost) {
                let queue = Key::Mailbox(key.clone());
                let limiter = &policy.mailbox_budget.limiter;
                self.take_tokens(limiter, key, queue, cost, admission)
                    .await?;
            }
        }
        Ok(AdmitPermit {
            slots,
            leases: None,
        })
    }

    async fn sit_out_penalties(
        &self,
        keys: &[Key],
        admission: &mut Admission<'_>,
    ) -> Result<(), Rejected> {
        loop {
            let now = Instant::now();
            let until = {
                let penalties = lock(&self.penalties);
                keys.iter()
                    .filter_map(|k| penalties.get(k).copied())
                    .filter(|until| *until > now)
                    .max()
            };
            let Some(until) = until else {
                return Ok(());
            };
            if admission.on_limit == OnLimit::Reject || until > admission.deadline {
                return Err(Rejected::after(until - now));
            }
            admission.wait();
            tokio::time::sleep_until(until).await;
        }
    }

    /// `min(cost, mailbox_concurrency)` slots: Graph runs a `$batch`'s sub-requests to one
    /// mailbox side by side, so a batch of four occupies all four of Outlook's slots, while
    /// one larger than the cap must still be able to go once the mailbox is quiet.
    async fn take_slots(
        &self,
        key: &MailboxKey,
        cost: u32,
        admission: &mut Admission<'_>,
    ) -> Result<Slot, Rejected> {
        let entry = {
            let mut table = lock(&self.slots);
            let capacity = table.capacity;
            Arc::clone(
                table
                    .by_key
                    .entry(key.clone())
                    .or_insert_with(|| Arc::new(MailboxSlots::new(capacity))),
            )
        };
        let wanted = cost.clamp(1, entry.capacity.load(Ordering::SeqCst).max(1));
        let semaphore = Arc::clone(&entry.semaphore);
        let permit = match Arc::clone(&semaphore).try_acquire_many_owned(wanted) {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) if admission.on_limit == OnLimit::Queue => {
                admission.wait();
                let acquire = semaphore.acquire_many_owned(wanted);
                match tokio::time::timeout_at(admission.deadline, acquire).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) | Err(_) => return Err(Rejected::after(UNKNOWN_WAIT)),
                }
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                return Err(Rejected::after(UNKNOWN_WAIT));
            }
        };
        Ok(Slot { permit, entry })
    }

    async fn take_tokens<K: Hash + Eq + Clone>(
        &self,
        limiter: &KeyedLimiter<K, C>,
        key: &K,
        queue: Key,
        cost: NonZeroU32,
        admission: &mut Admission<'_>,
    ) -> Result<(), Rejected> {
        if admission.on_limit == OnLimit::Reject {
            return check_tokens(limiter, key, cost).map_err(Rejected::after);
        }
        let turn = {
            let mut queues = lock(&self.queues);
            Arc::clone(queues.entry(queue).or_default())
        };
        let _turn = match Arc::clone(&turn).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                admission.wait();
                tokio::time::timeout_at(admission.deadline, turn.lock_owned())
                    .await
                    .map_err(|_| Rejected::after(UNKNOWN_WAIT))?
            }
        };
        loop {
            let wait = match check_tokens(limiter, key, cost) {
                Ok(()) => return Ok(()),
                Err(wait) => wait,
            };
            let now = Instant::now();
            // Sleeping is useless when the bucket already says it will be too late.
            if now.checked_add(wait).is_none_or(|t| t > admission.deadline) {
                return Err(Rejected::after(wait));
            }
            admission.wait();
            tokio::time::sleep(wait.max(MIN_RETRY_SLEEP)).await;
        }
    }

    /// Graph said 429/503 with Retry-After for this app+mailbox (or the tenant when mailbox
    /// is None): later requests for that key wait (or are refused) until the window ends,
    /// because Graph counts requests sent while it throttles. A tenant penalty holds only
    /// the tenant's requests without a mailbox; Outlook throttles each mailbox on its own.
    pub fn penalize(
        &self,
        tenant: &TenantId,
        app: &AppId,
        mailbox: Option<&Mailbox>,
        retry_after: Duration,
    ) {
        if retry_after.is_zero() || !self.policy().enabled {
            return;
        }
        let key = match mailbox {
            Some(mailbox) => Key::Mailbox(MailboxKey {
                app: app.clone(),
                mailbox: mailbox.clone(),
            }),
            None => Key::Tenant(tenant.clone()),
        };
        let now = Instant::now();
        let until = now.checked_add(retry_after.min(MAX_PENALTY)).unwrap_or(now);
        let mut penalties = lock(&self.penalties);
        let current = penalties.entry(key).or_insert(until);
        *current = (*current).max(until);
        drop(penalties);
        self.metrics.penalty_box.inc();
    }

    /// Drops idle keys: full buckets, mailboxes with no request in flight or waiting,
    /// queues nobody stands in, penalties that ended. Call on an interval.
    pub fn evict_idle(&self) {
        self.policy().evict_idle();
        {
            let mut table = lock(&self.slots);
            // The map holds the only reference once no permit or waiter does.
            table.by_key.retain(|_, entry| Arc::strong_count(entry) > 1);
            table.by_key.shrink_to_fit();
        }
        {
            let mut queues = lock(&self.queues);
            queues.retain(|_, turn| Arc::strong_count(turn) > 1);
            queues.shrink_to_fit();
        }
        {
            let now = Instant::now();
            let mut penalties = lock(&self.penalties);
            penalties.retain(|_, until| *until > now);
            penalties.shrink_to_fit();
        }
        let keys = i64::try_from(self.key_count()).unwrap_or(i64::MAX);
        self.metrics.limiter_keys.set(keys);
    }

    /// Keys held across every layer and map (the `idproxy_limiter_keys` gauge).
    pub fn key_count(&self) -> usize {
        let policy = self.policy();
        policy.key_count()
            + lock(&self.slots).by_key.len()
            + lock(&self.queues).len()
            + lock(&self.penalties).len()
    }
}

impl<C> Limits<C>
where
    C: Clock + Send + Sync + 'static,
{
    /// Runs `evict_idle` every `every` until the `Limits` is dropped.
    pub fn spawn_eviction(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let limits = Arc::downgrade(self);
        let every = every.clamp(MIN_EVICTION_INTERVAL, MAX_EVICTION_INTERVAL);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(limits) = limits.upgrade() else {
                    return;
                };
                limits.evict_idle();
            }
        })
    }
}

/// Takes `cost` tokens, or says how long until the bucket could grant them.
fn check_tokens<K: Hash + Eq + Clone, C: Clock>(
    limiter: &KeyedLimiter<K, C>,
    key: &K,
    cost: NonZeroU32,
) -> Result<(), Duration> {
    let decision = match limiter.check_key_n(key, cost) {
        Ok(decision) => decision,
        // More than the bucket can ever hold (a 20-request $batch against burst 10).
        // Refusing would refuse it forever, so it goes once the bucket is full and empties
        // it; the overdraft is at most one batch.
        Err(InsufficientCapacity(burst)) => {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            limiter
                .check_key_n(key, burst)
                .unwrap_or_else(|_| limiter.check_key(key))
        }
    };
    decision.map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
}

/// The maps behind these locks stay consistent at every step, so a panic elsewhere while
/// one was held leaves nothing to repair: take the data and carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantLimit;
    use governor::clock::FakeRelativeClock;
    use governor::nanos::Nanos;

    /// Governor clock that reads tokio's (paused) time, for tests where the queue sleeps
    /// until a bucket refills.
    #[derive(Clone, Debug)]
    struct TokioClock(Instant);

    impl Clock for TokioClock {
        type Instant = Nanos;
        fn now(&self) -> Nanos {
            Nanos::from(self.0.elapsed())
        }
    }

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// Generous limits everywhere, so each test tightens only the layer it is about.
    fn config(on_limit: OnLimit) -> RateLimit {
        RateLimit {
            enabled: true,
            on_limit,
            max_wait: Duration::from_secs(30),
            requests_per_second: nz(1000),
            burst: nz(1000),
            mailbox_concurrency: nz(100),
            mailbox_requests_per_10min: nz(100_000),
            tenants: BTreeMap::new(),
        }
    }

    fn fake(cfg: &RateLimit) -> (Limits<FakeRelativeClock>, FakeRelativeClock, Arc<Metrics>) {
        let clock = FakeRelativeClock::default();
        let metrics = Arc::new(Metrics::new());
        let limits = Limits::with_clock(cfg, Arc::clone(&metrics), clock.clone());
        (limits, clock, metrics)
    }

    fn tokio_clocked(cfg: &RateLimit) -> (Arc<Limits<TokioClock>>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let limits = Limits::with_clock(cfg, Arc::clone(&metrics), TokioClock(Instant::now()));
        (Arc::new(limits), metrics)
    }

    fn tenant(id: &str) -> TenantId {
        TenantId(id.into())
    }

    fn app() -> AppId {
        AppId("app-1".into())
    }

    fn mbx(m: &str) -> Mailbox {
        Mailbox(m.to_owned())
    }

    async fn admit_tenant<C: Clock>(limits: &Limits<C>, t: &str) -> Result<AdmitPermit, Rejected> {
        let (t, a) = (tenant(t), app());
        limits.admit(&Demand::single(&t, &a, None)).await
    }

    async fn admit_mailbox<C: Clock>(limits: &Limits<C>, m: &str) -> Result<AdmitPermit, Rejected> {
        let (t, a, m) = (tenant("t1"), app(), mbx(m));
        limits.admit(&Demand::single(&t, &a, Some(&m))).await
    }

    /// Spawns an admission for mailbox `m` that reports its label and outcome, then lets
    /// its permit go at once.
    fn spawn_mailbox_waiter(
        limits: &Arc<Limits<TokioClock>>,
        m: &'static str,
        label: usize,
        done: tokio::sync::mpsc::UnboundedSender<(usize, Result<(), Rejected>)>,
    ) -> tokio::task::JoinHandle<()> {
        let limits = Arc::clone(limits);
        tokio::spawn(async move {
            let outcome = admit_mailbox(&limits, m).await;
            let _ = done.send((label, outcome.map(drop)));
        })
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_at_least_one() {
        let secs = |d: Duration| Rejected::after(d).retry_after;
        assert_eq!(secs(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(secs(Duration::from_millis(500)), Duration::from_secs(1));
        assert_eq!(secs(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(secs(Duration::from_millis(1200)), Duration::from_secs(2));
        assert_eq!(secs(Duration::from_secs(59)), Duration::from_secs(59));
        assert_eq!(
            Rejected::after(Duration::from_nanos(1)).retry_after_secs(),
            1
        );
    }

    #[tokio::test]
    async fn third_request_in_a_second_over_burst_two_is_rejected_with_retry_after() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(2);
        cfg.burst = nz(2);
        let (limits, clock, _) = fake(&cfg);
        assert!(admit_tenant(&limits, "t1").await.is_ok());
        assert!(admit_tenant(&limits, "t1").await.is_ok());
        let rejected = admit_tenant(&limits, "t1").await.unwrap_err();
        assert!(rejected.retry_after >= Duration::from_secs(1));
        assert_eq!(rejected.retry_after_secs(), 1);
        clock.advance(Duration::from_millis(500));
        assert!(admit_tenant(&limits, "t1").await.is_ok());
        assert!(admit_tenant(&limits, "t1").await.is_err());
    }

    #[tokio::test]
    async fn one_exhausted_tenant_leaves_another_untouched() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(3);
        let (limits, _, _) = fake(&cfg);
        for _ in 0..3 {
            assert!(admit_tenant(&limits, "busy").await.is_ok());
        }
        assert!(admit_tenant(&limits, "busy").await.is_err());
        for _ in 0..3 {
            assert!(admit_tenant(&limits, "quiet").await.is_ok());
        }
    }

    #[tokio::test]
    async fn requests_without_a_readable_token_share_the_unknown_bucket() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(2);
        let (limits, _, _) = fake(&cfg);
        let (unknown, a) = (TenantId::unknown(), AppId::unknown());
        let first = Demand::single(&unknown, &a, Some(&Mailbox("x@y".into())));
        let second = Demand::single(&unknown, &a, None);
        assert!(limits.admit(&first).await.is_ok());
        assert!(limits.admit(&second).await.is_ok());
        assert!(limits.admit(&first).await.is_err());
        assert!(admit_tenant(&limits, "known").await.is_ok());
    }

    #[tokio::test]
    async fn tenant_override_has_its_own_quota() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(5);
        let limit = TenantLimit {
            requests_per_second: nz(1),
            burst: nz(1),
        };
        cfg.tenants.insert("AAAA-Override".into(), limit);
        cfg.tenants.insert(
            "bbbb-same-as-default".into(),
            TenantLimit {
                burst: nz(5),
                ..limit
            },
        );
        let (limits, _, _) = fake(&cfg);

        assert!(admit_tenant(&limits, "aaaa-override").await.is_ok());
        let rejected = admit_tenant(&limits, "aaaa-override").await.unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
        for _ in 0..5 {
            assert!(admit_tenant(&limits, "other").await.is_ok());
            assert!(admit_tenant(&limits, "bbbb-same-as-default").await.is_ok());
        }
        assert!(admit_tenant(&limits, "other").await.is_err());
        assert!(admit_tenant(&limits, "bbbb-same-as-default").await.is_err());
    }

    #[tokio::test]
    async fn batch_cost_five_consumes_five_tokens() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(10);
        let (limits, _, _) = fake(&cfg);
        let (t, a) = (tenant("t1"), app());
        let batch = Demand {
            tenant: &t,
            app: &a,
            mailboxes: vec![],
            cost: 5,
        };
        assert!(limits.admit(&batch).await.is_ok());
        assert!(limits.admit(&batch).await.is_ok());
        let rejected = limits
            .admit(&Demand::single(&t, &a, None))
            .await
            .unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
    }

    #[tokio::test]
    async fn batch_charges_each_sub_request_to_its_own_mailbox() {
        let mut cfg = config(OnLimit::Reject);
        cfg.mailbox_requests_per_10min = nz(10);
        let (limits, clock, _) = fake(&cfg);
        let (t, a) = (tenant("t1"), app());
        let batch = Demand {
            tenant: &t,
            app: &a,
            // Repeated entries for one mailbox add up: 3 + 4 to alice.
            mailboxes: vec![(mbx("alice"), 3), (mbx("bob"), 1), (mbx("alice"), 4)],
            cost: 8,
        };
        let permit = limits.admit(&batch).await.unwrap();
        assert_eq!(permit.slots_held(), 7 + 1);
        drop(permit);
        for _ in 0..3 {
            assert!(admit_mailbox(&limits, "alice").await.is_ok());
        }
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        // 10 per ten minutes: one token back every minute.
        assert_eq!(rejected.retry_after, Duration::from_secs(60));
        for _ in 0..9 {
            assert!(admit_mailbox(&limits, "bob").await.is_ok());
        }
        assert!(admit_mailbox(&limits, "bob").await.is_err());
        clock.advance(Duration::from_secs(60));
        assert!(admit_mailbox(&limits, "alice").await.is_ok());
    }

    #[tokio::test]
    async fn mailbox_budget_is_all_available_at_once_then_refills_evenly() {
        let mut cfg = config(OnLimit::Reject);
        cfg.mailbox_requests_per_10min = nz(600);
        let (limits, clock, _) = fake(&cfg);
        for _ in 0..600 {
            assert!(admit_mailbox(&limits, "alice").await.is_ok());
        }
        assert!(admit_mailbox(&limits, "alice").await.is_err());
        clock.advance(Duration::from_secs(5));
        for _ in 0..5 {
            assert!(admit_mailbox(&limits, "alice").await.is_ok());
        }
        assert!(admit_mailbox(&limits, "alice").await.is_err());
    }

    #[tokio::test]
    async fn batch_above_burst_goes_once_the_bucket_is_full_and_empties_it() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(10);
        cfg.burst = nz(10);
        let (limits, clock, _) = fake(&cfg);
        let (t, a) = (tenant("t1"), app());
        let big = Demand {
            tenant: &t,
            app: &a,
            mailboxes: vec![],
            cost: 20,
        };
        assert!(limits.admit(&big).await.is_ok());
        assert!(admit_tenant(&limits, "t1").await.is_err());
        let rejected = limits.admit(&big).await.unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert!(limits.admit(&big).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn queued_batch_above_burst_waits_for_the_refill_instead_of_hanging() {
        let mut cfg = config(OnLimit::Queue);
        cfg.requests_per_second = nz(10);
        cfg.burst = nz(10);
        let (limits, _) = tokio_clocked(&cfg);
        let (t, a) = (tenant("t1"), app());
        let big = Demand {
            tenant: &t,
            app: &a,
            mailboxes: vec![],
            cost: 20,
        };
        limits.admit(&big).await.unwrap();
        let start = Instant::now();
        limits.admit(&big).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn mailbox_concurrency_n_plus_one_waits_in_queue_mode_until_a_permit_drops() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(2);
        let (limits, metrics) = tokio_clocked(&cfg);
        let first = admit_mailbox(&limits, "alice").await.unwrap();
        let _second = admit_mailbox(&limits, "alice").await.unwrap();
        let (done, mut admitted) = tokio::sync::mpsc::unbounded_channel();
        spawn_mailbox_waiter(&limits, "alice", 3, done);
        tokio::task::yield_now().await;
        assert!(admitted.try_recv().is_err(), "third must wait");
        // Another mailbox is not held up by alice's cap.
        assert!(admit_mailbox(&limits, "bob").await.is_ok());

        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(first);
        let (label, outcome) = admitted.recv().await.unwrap();
        assert_eq!((label, outcome), (3, Ok(())));
        assert_eq!(metrics.rate_limited.get("queued"), 1);
        assert_eq!(metrics.rate_limited.get("rejected"), 0);
        assert_eq!(metrics.queue_wait.count(), 1);
    }

    #[tokio::test]
    async fn mailbox_concurrency_n_plus_one_is_rejected_in_reject_mode() {
        let mut cfg = config(OnLimit::Reject);
        cfg.mailbox_concurrency = nz(2);
        let (limits, _, metrics) = fake(&cfg);
        let first = admit_mailbox(&limits, "alice").await.unwrap();
        let _second = admit_mailbox(&limits, "alice").await.unwrap();
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
        assert!(admit_mailbox(&limits, "bob").await.is_ok());
        drop(first);
        assert!(admit_mailbox(&limits, "alice").await.is_ok());
        assert_eq!(metrics.rate_limited.get("rejected"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_waiters_for_a_mailbox_slot_are_served_in_arrival_order() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        let holder = admit_mailbox(&limits, "alice").await.unwrap();
        let (done, mut admitted) = tokio::sync::mpsc::unbounded_channel();
        for label in 0..20 {
            spawn_mailbox_waiter(&limits, "alice", label, done.clone());
            tokio::task::yield_now().await;
        }
        drop(holder);
        let mut order = Vec::new();
        for _ in 0..20 {
            let (label, outcome) = admitted.recv().await.unwrap();
            assert_eq!(outcome, Ok(()));
            order.push(label);
        }
        assert_eq!(order, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_waiters_for_tenant_tokens_are_served_in_arrival_order_one_per_refill() {
        let mut cfg = config(OnLimit::Queue);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        let start = Instant::now();
        admit_tenant(&limits, "t1").await.unwrap();
        let (done, mut admitted) = tokio::sync::mpsc::unbounded_channel();
        for label in 0..20usize {
            let limits = Arc::clone(&limits);
            let done = done.clone();
            tokio::spawn(async move {
                let outcome = admit_tenant(&limits, "t1").await.map(drop);
                let _ = done.send((label, outcome, start.elapsed()));
            });
            tokio::task::yield_now().await;
        }
        for expected in 0..20usize {
            let (label, outcome, at) = admitted.recv().await.unwrap();
            assert_eq!((label, outcome), (expected, Ok(())));
            assert_eq!(at, Duration::from_secs(expected as u64 + 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn queued_request_past_max_wait_is_rejected() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(1);
        cfg.max_wait = Duration::from_millis(250);
        let (limits, metrics) = tokio_clocked(&cfg);
        let _holder = admit_mailbox(&limits, "alice").await.unwrap();
        let start = Instant::now();
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(rejected.retry_after, Duration::from_secs(1));
        assert_eq!(metrics.rate_limited.get("queued"), 1);
        assert_eq!(metrics.rate_limited.get("rejected"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_rejects_at_once_when_the_bucket_wait_exceeds_max_wait() {
        let mut cfg = config(OnLimit::Queue);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(1);
        cfg.mailbox_requests_per_10min = nz(1);
        cfg.max_wait = Duration::from_secs(5);
        let (limits, _) = tokio_clocked(&cfg);
        admit_mailbox(&limits, "alice").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The mailbox bucket's own answer: one token per ten minutes, 599 s to go.
        assert_eq!(rejected.retry_after, Duration::from_secs(599));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_queued_future_frees_its_place_for_the_next_waiter() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        let holder = admit_mailbox(&limits, "alice").await.unwrap();
        let (done, mut admitted) = tokio::sync::mpsc::unbounded_channel();
        let gone = spawn_mailbox_waiter(&limits, "alice", 1, done.clone());
        tokio::task::yield_now().await;
        spawn_mailbox_waiter(&limits, "alice", 2, done);
        tokio::task::yield_now().await;
        gone.abort();
        tokio::task::yield_now().await;
        drop(holder);
        let (label, outcome) = admitted.recv().await.unwrap();
        assert_eq!((label, outcome), (2, Ok(())));
        limits.evict_idle();
        assert_eq!(lock(&limits.slots).by_key.len(), 0, "no slot leaked");
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_head_of_the_token_queue_lets_the_next_waiter_take_its_turn() {
        let mut cfg = config(OnLimit::Queue);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        admit_tenant(&limits, "t1").await.unwrap();
        let head = {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { admit_tenant(&limits, "t1").await.map(drop) })
        };
        tokio::task::yield_now().await;
        let next = {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { admit_tenant(&limits, "t1").await.map(drop) })
        };
        tokio::task::yield_now().await;
        head.abort();
        let start = Instant::now();
        assert_eq!(next.await.unwrap(), Ok(()));
        // The head had not taken the refilled token, so the next one gets it on time.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn penalize_rejects_that_mailbox_but_not_others_in_reject_mode() {
        let (limits, _, metrics) = fake(&config(OnLimit::Reject));
        let (t, a) = (tenant("t1"), app());
        limits.penalize(&t, &a, Some(&mbx("alice")), Duration::from_millis(4500));
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(5));
        assert!(admit_mailbox(&limits, "bob").await.is_ok());
        assert!(admit_tenant(&limits, "t1").await.is_ok());
        let other_app = AppId("app-2".into());
        let m = mbx("alice");
        assert!(limits
            .admit(&Demand::single(&t, &other_app, Some(&m)))
            .await
            .is_ok());
        assert_eq!(metrics.penalty_box.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn penalize_holds_that_mailbox_until_the_window_ends_in_queue_mode() {
        let (limits, _) = tokio_clocked(&config(OnLimit::Queue));
        let (t, a) = (tenant("t1"), app());
        limits.penalize(&t, &a, Some(&mbx("alice")), Duration::from_secs(3));
        let start = Instant::now();
        admit_mailbox(&limits, "bob").await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        admit_mailbox(&limits, "alice").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn penalty_longer_than_max_wait_is_rejected_at_once_with_its_remaining_time() {
        let mut cfg = config(OnLimit::Queue);
        cfg.max_wait = Duration::from_secs(2);
        let (limits, _) = tokio_clocked(&cfg);
        let (t, a) = (tenant("t1"), app());
        limits.penalize(&t, &a, Some(&mbx("alice")), Duration::from_secs(30));
        let start = Instant::now();
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(rejected.retry_after, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn penalty_that_arrives_while_queued_for_a_slot_still_holds_the_request() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        let holder = admit_mailbox(&limits, "alice").await.unwrap();
        let start = Instant::now();
        let waiter = {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { admit_mailbox(&limits, "alice").await.map(drop) })
        };
        tokio::task::yield_now().await;
        let (t, a) = (tenant("t1"), app());
        limits.penalize(&t, &a, Some(&mbx("alice")), Duration::from_secs(4));
        drop(holder);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test]
    async fn tenant_penalty_holds_only_requests_without_a_mailbox() {
        let (limits, _, _) = fake(&config(OnLimit::Reject));
        let (t, a) = (tenant("t1"), app());
        limits.penalize(&t, &a, None, Duration::from_secs(2));
        let rejected = admit_tenant(&limits, "t1").await.unwrap_err();
        assert_eq!(rejected.retry_after, Duration::from_secs(2));
        assert!(admit_tenant(&limits, "t2").await.is_ok());
        assert!(admit_mailbox(&limits, "alice").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_brings_key_count_back_to_zero_after_idle() {
        let (limits, clock, metrics) = fake(&config(OnLimit::Reject));
        let (t2, a) = (tenant("t2"), app());
        admit_mailbox(&limits, "alice").await.unwrap();
        admit_mailbox(&limits, "bob").await.unwrap();
        let held = admit_mailbox(&limits, "carol").await.unwrap();
        admit_tenant(&limits, "t2").await.unwrap();
        limits.penalize(&t2, &a, None, Duration::from_secs(10));
        // Tenants t1, t2; budgets alice, bob, carol; slots alice, bob, carol; one penalty.
        assert_eq!(limits.key_count(), 2 + 3 + 3 + 1);

        limits.evict_idle();
        assert_eq!(
            limits.key_count(),
            2 + 3 + 1 + 1,
            "busy carol keeps her slots"
        );
        assert_eq!(metrics.limiter_keys.get(), 7);

        drop(held);
        clock.advance(Duration::from_secs(601));
        tokio::time::advance(Duration::from_secs(11)).await;
        limits.evict_idle();
        assert_eq!(limits.key_count(), 0);
        assert_eq!(metrics.limiter_keys.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_clears_queue_turns_once_nobody_waits() {
        let (limits, _) = tokio_clocked(&config(OnLimit::Queue));
        admit_mailbox(&limits, "alice").await.unwrap();
        assert_eq!(lock(&limits.queues).len(), 2, "tenant and mailbox turns");
        limits.evict_idle();
        assert_eq!(lock(&limits.queues).len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn spawned_eviction_runs_on_its_interval_and_stops_with_the_limits() {
        let (limits, _) = tokio_clocked(&config(OnLimit::Reject));
        admit_mailbox(&limits, "alice").await.unwrap();
        assert_eq!(lock(&limits.slots).by_key.len(), 1);
        let task = limits.spawn_eviction(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(lock(&limits.slots).by_key.len(), 0);
        drop(limits);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(task.is_finished());
    }

    #[tokio::test]
    async fn reload_changes_the_quota_and_keeps_unchanged_buckets() {
        let mut cfg = config(OnLimit::Reject);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(1);
        let (limits, _, _) = fake(&cfg);
        assert!(admit_tenant(&limits, "t1").await.is_ok());
        assert!(admit_tenant(&limits, "t1").await.is_err());

        // Same quota: the bucket keeps its state, so the tenant is still empty.
        cfg.max_wait = Duration::from_secs(1);
        limits.reload(&cfg);
        assert!(admit_tenant(&limits, "t1").await.is_err());

        cfg.burst = nz(3);
        limits.reload(&cfg);
        for _ in 0..3 {
            assert!(admit_tenant(&limits, "t1").await.is_ok());
        }
        assert!(admit_tenant(&limits, "t1").await.is_err());

        cfg.on_limit = OnLimit::Queue;
        cfg.enabled = false;
        limits.reload(&cfg);
        assert!(admit_tenant(&limits, "t1").await.is_ok());
    }

    #[tokio::test]
    async fn reload_resizes_mailbox_slots_without_dropping_held_permits() {
        let mut cfg = config(OnLimit::Reject);
        cfg.mailbox_concurrency = nz(2);
        let (limits, _, _) = fake(&cfg);
        let first = admit_mailbox(&limits, "alice").await.unwrap();
        let second = admit_mailbox(&limits, "alice").await.unwrap();

        cfg.mailbox_concurrency = nz(1);
        limits.reload(&cfg);
        drop(first);
        assert!(
            admit_mailbox(&limits, "alice").await.is_err(),
            "one still in flight fills the new cap of one"
        );
        drop(second);
        let only = admit_mailbox(&limits, "alice").await.unwrap();
        assert!(admit_mailbox(&limits, "alice").await.is_err());

        cfg.mailbox_concurrency = nz(3);
        limits.reload(&cfg);
        let _a = admit_mailbox(&limits, "alice").await.unwrap();
        let _b = admit_mailbox(&limits, "alice").await.unwrap();
        assert!(admit_mailbox(&limits, "alice").await.is_err());
        drop(only);
        assert!(admit_mailbox(&limits, "alice").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn reload_that_raises_the_cap_lets_a_queued_request_through() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        let _holder = admit_mailbox(&limits, "alice").await.unwrap();
        let waiter = {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { admit_mailbox(&limits, "alice").await.map(drop) })
        };
        tokio::task::yield_now().await;
        cfg.mailbox_concurrency = nz(2);
        limits.reload(&cfg);
        let start = Instant::now();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn disabled_limits_admit_everything_at_once_and_hold_nothing() {
        let mut cfg = config(OnLimit::Reject);
        cfg.enabled = false;
        cfg.burst = nz(1);
        cfg.mailbox_concurrency = nz(1);
        let (limits, _, metrics) = fake(&cfg);
        let mut permits = Vec::new();
        for _ in 0..50 {
            permits.push(admit_mailbox(&limits, "alice").await.unwrap());
        }
        limits.penalize(
            &tenant("t1"),
            &app(),
            Some(&mbx("alice")),
            Duration::from_secs(9),
        );
        assert!(admit_mailbox(&limits, "alice").await.is_ok());
        assert_eq!(permits[0].slots_held(), 0);
        assert_eq!(limits.key_count(), 0);
        assert_eq!(metrics.rate_limited.get("rejected"), 0);
        assert_eq!(metrics.penalty_box.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn demands_on_the_same_mailboxes_in_opposite_order_do_not_deadlock() {
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(1);
        let (limits, _) = tokio_clocked(&cfg);
        let mut tasks = Vec::new();
        for order in [
            ["alice", "bob"],
            ["bob", "alice"],
            ["alice", "bob"],
            ["bob", "alice"],
        ] {
            let limits = Arc::clone(&limits);
            tasks.push(tokio::spawn(async move {
                let (t, a) = (tenant("t1"), app());
                let demand = Demand {
                    tenant: &t,
                    app: &a,
                    mailboxes: order.iter().map(|m| (mbx(m), 1)).collect(),
                    cost: 2,
                };
                let permit = limits.admit(&demand).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<usize, Rejected>(permit.slots_held())
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(2));
        }
    }

    #[tokio::test]
    async fn zero_cost_demand_takes_no_tokens() {
        let mut cfg = config(OnLimit::Reject);
        cfg.burst = nz(1);
        cfg.requests_per_second = nz(1);
        let (limits, _, _) = fake(&cfg);
        let (t, a) = (tenant("t1"), app());
        let free = Demand {
            tenant: &t,
            app: &a,
            mailboxes: vec![],
            cost: 0,
        };
        for _ in 0..3 {
            assert!(limits.admit(&free).await.is_ok());
        }
        assert!(admit_tenant(&limits, "t1").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_retry_after_and_max_wait_are_capped_without_panicking() {
        let mut cfg = config(OnLimit::Reject);
        cfg.max_wait = Duration::MAX;
        let (limits, _) = tokio_clocked(&cfg);
        let (t, a) = (tenant("t1"), app());
        limits.penalize(&t, &a, Some(&mbx("alice")), Duration::MAX);
        let rejected = admit_mailbox(&limits, "alice").await.unwrap_err();
        assert_eq!(rejected.retry_after, MAX_PENALTY);

        // Queue mode: max_wait is capped at a day, so the hour's penalty is sat out.
        cfg.on_limit = OnLimit::Queue;
        limits.reload(&cfg);
        let start = Instant::now();
        admit_mailbox(&limits, "alice").await.unwrap();
        assert_eq!(start.elapsed(), MAX_PENALTY);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_count_queued_rejected_waits_penalties_and_keys() {
        let mut cfg = config(OnLimit::Queue);
        cfg.requests_per_second = nz(1);
        cfg.burst = nz(1);
        cfg.max_wait = Duration::from_secs(2);
        let (limits, metrics) = tokio_clocked(&cfg);
        admit_tenant(&limits, "t1").await.unwrap();
        admit_tenant(&limits, "t1").await.unwrap();
        assert_eq!(metrics.rate_limited.get("queued"), 1);
        assert_eq!(metrics.queue_wait.count(), 1);
        assert!(metrics
            .render()
            .contains("idproxy_queue_wait_seconds_bucket{le=\"1\"} 1"));

        cfg.on_limit = OnLimit::Reject;
        limits.reload(&cfg);
        assert!(admit_tenant(&limits, "t1").await.is_err());
        assert_eq!(metrics.rate_limited.get("rejected"), 1);
        assert_eq!(metrics.rate_limited.get("queued"), 1);

        limits.penalize(
            &tenant("t1"),
            &app(),
            Some(&mbx("alice")),
            Duration::from_secs(1),
        );
        limits.penalize(&tenant("t1"), &app(), None, Duration::ZERO);
        assert_eq!(metrics.penalty_box.get(), 1);

        limits.evict_idle();
        assert_eq!(
            metrics.limiter_keys.get(),
            2,
            "t1's bucket and alice's penalty"
        );
    }

    #[tokio::test]
    async fn reload_keeps_the_state_of_an_unchanged_override() {
        let mut cfg = config(OnLimit::Reject);
        let limit = TenantLimit {
            requests_per_second: nz(1),
            burst: nz(1),
        };
        cfg.tenants.insert("vip".into(), limit);
        let (limits, _, _) = fake(&cfg);
        assert!(admit_tenant(&limits, "vip").await.is_ok());
        cfg.burst = nz(7);
        cfg.tenants.insert(
            "other".into(),
            TenantLimit {
                burst: nz(2),
                ..limit
            },
        );
        limits.reload(&cfg);
        assert!(admit_tenant(&limits, "vip").await.is_err());
        assert!(admit_tenant(&limits, "other").await.is_ok());
        assert!(admit_tenant(&limits, "other").await.is_ok());
        assert!(admit_tenant(&limits, "other").await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_never_exceeds_the_mailbox_cap_under_contention() {
        use std::sync::atomic::AtomicUsize;
        let mut cfg = config(OnLimit::Queue);
        cfg.mailbox_concurrency = nz(3);
        let limits = Arc::new(Limits::new(&cfg, Arc::new(Metrics::new())));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (limits, in_flight, peak) = (
                    Arc::clone(&limits),
                    Arc::clone(&in_flight),
                    Arc::clone(&peak),
                );
                tokio::spawn(async move {
                    let permit = admit_mailbox(&limits, "alice").await?;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                    Ok::<(), Rejected>(())
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Ok(()));
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(peak.load(Ordering::SeqCst) >= 1);
        limits.evict_idle();
        assert_eq!(lock(&limits.slots).by_key.len(), 0);
        assert_eq!(lock(&limits.queues).len(), 0);
    }

    #[test]
    fn limits_is_send_and_sync_and_admit_is_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let limits = Limits::new(&config(OnLimit::Queue), Arc::new(Metrics::new()));
        send_sync(&limits);
        let (t, a) = (tenant("t1"), app());
        let demand = Demand::single(&t, &a, None);
        let admit = limits.admit(&demand);
        send(&admit);
    }
}
