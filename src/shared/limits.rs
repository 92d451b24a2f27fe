//! Admit (step 2) across replicas: the same layers as `admit::Limits` (penalty box,
//! in-flight cap per app+mailbox, tenant bucket, app+mailbox budget), kept in Redis so N
//! replicas enforce one quota.
//!
//! One atomic script per check (`ADMIT`, run with EVALSHA) reads Redis's own clock (`TIME`,
//! so replicas' clocks do not matter) and decides every layer at once: either all of them
//! admit and are charged, or none is. Token buckets are GCRA: one key per bucket holding its
//! theoretical arrival time (TAT, µs), expiring when the bucket would be full again, so an
//! idle key costs nothing. In queue mode the script books the request's place (the TAT moves
//! on by its cost) when the wait fits in what is left of `max_wait`, and the replica sleeps
//! that long; arrival at Redis decides the order, across replicas. In-flight slots are
//! leases: a sorted set per app+mailbox of lease ids scored by expiry, renewed while the
//! request lives (`spawn_renewal`), released when its permit drops, and simply expiring when
//! a replica dies. The penalty box is a key with `PX` = Graph's Retry-After.
//!
//! Must not: block a request on Redis for longer than `CALL_TIMEOUT` (any Redis failure
//! admits through the local `Limits` instead), take a lease it cannot give back (a permit
//! dropped anywhere releases its leases), or leave a key without a TTL.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::resp::{Command, Value};
use super::{jittered, Redis, RedisError, Script};
use crate::admit::{AdmitPermit, Demand, Limits, Rejected};
use crate::config::{OnLimit, RateLimit};
use crate::identity::{AppId, Mailbox, TenantId};
use crate::metrics::Metrics;

/// A lease outlives its replica by at most this long. Live requests renew theirs every
/// third of it, so only a replica that died (or lost Redis for this long) lets one lapse.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often a request queued behind a full in-flight cap asks again. Leases are released
/// by other replicas, so there is nothing to wait on but time; order among these waiters is
/// best effort.
const SLOT_POLL: Duration = Duration::from_millis(20);

/// Retry-After when no layer can name a time (the in-flight cap is full).
const UNKNOWN_WAIT: Duration = Duration::from_secs(1);

/// As in `admit`: a Retry-After beyond an hour is a bad header, not a throttle.
const MAX_PENALTY: Duration = Duration::from_secs(3600);

/// As in `admit`: keeps instant arithmetic far from overflow.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Leases renewed per script call, so one renewal never becomes a huge command.
const RENEW_CHUNK: usize = 500;

/// KEYS: penalty keys, lease keys, bucket keys. ARGV: max wait (µs) the request may be
/// booked for, lease TTL (ms), lease id, the three key counts, then per lease key its cap
/// and the leases wanted, then per bucket its emission interval (µs), tolerance (µs) and
/// cost. Returns {verdict, wait µs}: 0 admitted (after wait), 1 penalty, 2 in-flight cap
/// full, 3 tokens (the wait is longer than allowed).
pub const ADMIT: Script = Script {
    name: "admit",
    source: r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now / 1000)
local max_wait = tonumber(ARGV[1])
local lease_ttl = tonumber(ARGV[2])
local lease_id = ARGV[3]
local np, nl, nb = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local penalty = 0
for i = 1, np do
  local left = redis.call('PTTL', KEYS[i])
  if left > penalty then penalty = left end
end
if penalty > 0 then return {1, penalty * 1000} end
local a = 7
for i = 1, nl do
  local key = KEYS[np + i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if redis.call('ZCARD', key) + tonumber(ARGV[a + 1]) > tonumber(ARGV[a]) then return {2, 0} end
  a = a + 2
end
local wait = 0
local tats = {}
for i = 1, nb do
  local tat = tonumber(redis.call('GET', KEYS[np + nl + i])) or now
  if tat < now then tat = now end
  local new_tat = tat + tonumber(ARGV[a]) * tonumber(ARGV[a + 2])
  local w = new_tat - tonumber(ARGV[a + 1]) - now
  if w > wait then wait = w end
  tats[i] = new_tat
  a = a + 3
end
if wait > max_wait then return {3, math.ceil(wait)} end
for i = 1, nb do
  local ttl = math.ceil((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[np + nl + i], string.format('%.0f', tats[i]), 'PX', ttl)
end
a = 7
local expires = string.format('%.0f', now_ms + lease_ttl)
for i = 1, nl do
  local key = KEYS[np + i]
  for j = 1, tonumber(ARGV[a + 1]) do
    redis.call('ZADD', key, expires, lease_id .. ':' .. j)
  end
  redis.call('PEXPIRE', key, lease_ttl)
  a = a + 2
end
return {0, math.ceil(wait)}
",
};

/// KEYS: lease keys. ARGV: lease TTL (ms), then per key the member count and the members.
/// Only leases still present are renewed (XX): a released one stays released.
pub const RENEW: Script = Script {
    name: "renew",
    source: r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local expires = string.format('%.0f', now_ms + ttl)
local a = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    redis.call('ZADD', KEYS[i], 'XX', expires, ARGV[a])
    a = a + 1
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
",
};

/// KEYS: the penalty key. ARGV: its window (ms). Never shortens a longer window.
pub const PENALIZE: Script = Script {
    name: "penalize",
    source: r"
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
",
};

/// A GCRA bucket: one token every `emission_us`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    emission_us: f64,
    burst: u32,
}

impl Bucket {
    fn per_second(rate: NonZeroU32, burst: NonZeroU32) -> Bucket {
        Bucket {
            emission_us: 1e6 / f64::from(rate.get()),
            burst: burst.get(),
        }
    }

    /// The whole ten-minute budget at once, then one token every `600 s / budget`.
    fn per_10min(budget: NonZeroU32) -> Bucket {
        Bucket {
            emission_us: 600e6 / f64::from(budget.get()),
            burst: budget.get(),
        }
    }

    /// How far ahead of now the TAT may run: a full bucket admits `burst` at once.
    fn tolerance_us(&self) -> f64 {
        self.emission_us * f64::from(self.burst)
    }
}

/// `[rate_limit]` as the script needs it; swapped whole on reload.
struct Policy {
    enabled: bool,
    on_limit: OnLimit,
    max_wait: Duration,
    default_tenant: Bucket,
    /// Lower-cased tenant id -> its override.
    overrides: HashMap<String, Bucket>,
    mailbox: Bucket,
    slots: u32,
}

impl Policy {
    fn build(cfg: &RateLimit) -> Policy {
        Policy {
            enabled: cfg.enabled,
            on_limit: cfg.on_limit,
            max_wait: cfg.max_wait.min(MAX_QUEUE_WAIT),
            default_tenant: Bucket::per_second(cfg.requests_per_second, cfg.burst),
            overrides: cfg
                .tenants
                .iter()
                .map(|(tenant, l)| {
                    let bucket = Bucket::per_second(l.requests_per_second, l.burst);
                    (tenant.to_ascii_lowercase(), bucket)
                })
                .collect(),
            mailbox: Bucket::per_10min(cfg.mailbox_requests_per_10min),
            slots: cfg.mailbox_concurrency.get(),
        }
    }

    fn tenant_bucket(&self, tenant: &TenantId) -> Bucket {
        if self.overrides.is_empty() {
            return self.default_tenant;
        }
        self.overrides
            .get(&tenant.as_str().to_ascii_lowercase())
            .copied()
            .unwrap_or(self.default_tenant)
    }
}

/// Leases of live requests, renewed by `spawn_renewal`: serial -> lease id and
/// (lease key, count) per mailbox.
type LiveLeases = HashMap<u64, (String, Vec<(Bytes, u32)>)>;

#[derive(Default)]
struct LeaseBook {
    live: Mutex<LiveLeases>,
}

impl LeaseBook {
    fn lock(&self) -> MutexGuard<'_, LiveLeases> {
        // One insert or remove at a time; a panic elsewhere leaves the map usable.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// In-flight leases held by one admitted request; dropping it releases them.
pub struct Leases {
    redis: Redis,
    book: Arc<LeaseBook>,
    serial: u64,
    lease_id: String,
    keys: Vec<(Bytes, u32)>,
}

impl Leases {
    /// Leases held, summed over mailboxes.
    pub fn count(&self) -> u32 {
        self.keys.iter().map(|(_, n)| n).sum()
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.book.lock().remove(&self.serial);
        let releases: Vec<Command> = self
            .keys
            .iter()
            .map(|(key, n)| {
                Command::new("ZREM")
                    .arg(key.clone())
                    .args((1..=*n).map(|j| member(&self.lease_id, j)))
            })
            .collect();
        self.redis.send_and_forget(&releases);
    }
}

fn member(lease_id: &str, j: u32) -> String {
    format!("{lease_id}:{j}")
}

/// The shared limits of one replica, with its local `Limits` as the fallback.
pub struct SharedLimits {
    redis: Redis,
    local: Arc<Limits>,
    metrics: Arc<Metrics>,
    policy: RwLock<Arc<Policy>>,
    /// Makes lease ids unique across replicas.
    replica: String,
    next_lease: AtomicU64,
    book: Arc<LeaseBook>,
    lease_ttl: Duration,
}

/// What the script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admitted { wait: Duration },
    Penalty { wait: Duration },
    SlotsFull,
    Tokens { wait: Duration },
}

impl Verdict {
    fn from_reply(reply: &Value) -> Result<Verdict, RedisError> {
        let Value::Array(items) = reply else {
            return Err(RedisError::Unexpected("admit verdict is not an array"));
        };
        let (Some(Value::Int(code)), Some(Value::Int(wait_us))) = (items.first(), items.get(1))
        else {
            return Err(RedisError::Unexpected("admit verdict is not two integers"));
        };
        let wait = Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0));
        match code {
            0 => Ok(Verdict::Admitted { wait }),
            1 => Ok(Verdict::Penalty { wait }),
            2 => Ok(Verdict::SlotsFull),
            3 => Ok(Verdict::Tokens { wait }),
            _ => Err(RedisError::Unexpected("unknown admit verdict")),
        }
    }
}

/// The keys and fixed arguments of one demand's script call.
struct Plan {
    keys: Vec<Bytes>,
    /// Everything after ARGV[1] (the allowance, which shrinks while the request waits).
    tail: Vec<Bytes>,
    leases: Vec<(Bytes, u32)>,
    serial: u64,
    lease_id: String,
}

impl Plan {
    fn args(&self, allowance: Duration) -> Vec<Bytes> {
        let mut args = Vec::with_capacity(self.tail.len() + 1);
        args.push(Bytes::from(allowance.as_micros().to_string()));
        args.extend(self.tail.iter().cloned());
        args
    }
}

impl SharedLimits {
    pub fn new(redis: Redis, local: Arc<Limits>, cfg: &RateLimit, metrics: Arc<Metrics>) -> Self {
        SharedLimits::with_lease_ttl(redis, local, cfg, metrics, LEASE_TTL)
    }

    /// As `new`, with another lease TTL (tests make a dead replica's leases lapse sooner).
    pub fn with_lease_ttl(
        redis: Redis,
        local: Arc<Limits>,
        cfg: &RateLimit,
        metrics: Arc<Metrics>,
        lease_ttl: Duration,
    ) -> Self {
        SharedLimits {
            redis,
            local,
            metrics,
            policy: RwLock::new(Arc::new(Policy::build(cfg))),
            replica: uuid::Uuid::new_v4().simple().to_string(),
            next_lease: AtomicU64::new(0),
            book: Arc::default(),
            lease_ttl: lease_ttl.max(Duration::from_millis(10)),
        }
    }

    fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces `[rate_limit]` at run time (the local fallback is reloaded by its owner).
    /// Buckets in Redis keep their TATs, which stay meaningful under a new rate.
    pub fn reload(&self, cfg: &RateLimit) {
        let next = Arc::new(Policy::build(cfg));
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The local limits used while Redis is unavailable.
    pub fn local(&self) -> &Arc<Limits> {
        &self.local
    }

    /// As `Limits::admit`, against the shared state; on any Redis failure, against the local
    /// state instead.
    pub async fn admit(&self, demand: &Demand<'_>) -> Result<AdmitPermit, Rejected> {
        let policy = self.policy();
        if !policy.enabled {
            return self.local.admit(demand).await;
        }
        if !self.redis.is_up() {
            self.redis.fell_back();
            return self.local.admit(demand).await;
        }
        let start = Instant::now();
        let deadline = start.checked_add(policy.max_wait).unwrap_or(start);
        let plan = self.plan(&policy, demand);
        let mut queued = false;
        let result = loop {
            let allowance = match policy.on_limit {
                OnLimit::Reject => Duration::ZERO,
                OnLimit::Queue => deadline.saturating_duration_since(Instant::now()),
            };
            let reply = self
                .redis
                .eval(&ADMIT, &plan.keys, &plan.args(allowance))
                .await;
            let verdict = match reply.and_then(|r| Verdict::from_reply(&r)) {
                Ok(verdict) => verdict,
                Err(e) => {
                    tracing::debug!(error = %e, "shared admission failed; using local limits");
                    self.redis.fell_back();
                    return self.local.admit(demand).await;
                }
            };
            let refuse = |wait: Duration| {
                policy.on_limit == OnLimit::Reject
                    || Instant::now()
                        .checked_add(wait)
                        .is_none_or(|t| t > deadline)
            };
            match verdict {
                Verdict::Admitted { wait } => {
                    // Held from here, so a client that hangs up while booked still gives
                    // its leases back.
                    let leases = self.hold(&plan);
                    if !wait.is_zero() {
                        queued = true;
                        tokio::time::sleep(wait).await;
                    }
                    break Ok(AdmitPermit::with_leases(leases));
                }
                Verdict::Penalty { wait } | Verdict::Tokens { wait } => {
                    if refuse(wait) {
                        break Err(Rejected::after(wait));
                    }
                    queued = true;
                    tokio::time::sleep(wait).await;
                }
                Verdict::SlotsFull => {
                    if refuse(SLOT_POLL) {
                        break Err(Rejected::after(UNKNOWN_WAIT));
                    }
                    queued = true;
                    tokio::time::sleep(jittered(SLOT_POLL)).await;
                }
            }
        };
        if queued {
            self.metrics.rate_limited.inc("queued");
            self.metrics.queue_wait.observe(start.elapsed());
        }
        if result.is_err() {
            self.metrics.rate_limited.inc("rejected");
        }
        result
    }

    fn plan(&self, policy: &Policy, demand: &Demand<'_>) -> Plan {
        // Repeated mailboxes add up, as in the local limits.
        let mut mailboxes: BTreeMap<&Mailbox, u32> = BTreeMap::new();
        for (mailbox, cost) in &demand.mailboxes {
            let total = mailboxes.entry(mailbox).or_insert(0);
            *total = total.saturating_add(*cost);
        }
        let serial = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let lease_id = format!("{}:{serial}", self.replica);

        let penalties: Vec<Bytes> = if mailboxes.is_empty() {
            vec![tenant_key("pen", demand.tenant)]
        } else {
            mailboxes
                .keys()
                .map(|m| mailbox_key("pen", demand.app, m))
                .collect()
        };
        // `min(cost, cap)` leases, at least one: as `Limits::take_slots`.
        let leases: Vec<(Bytes, u32)> = mailboxes
            .iter()
            .map(|(m, cost)| {
                let wanted = (*cost).clamp(1, policy.slots.max(1));
                (mailbox_key("lease", demand.app, m), wanted)
            })
            .collect();
        let mut buckets: Vec<(Bytes, Bucket, u32)> = Vec::new();
        if demand.cost > 0 {
            let bucket = policy.tenant_bucket(demand.tenant);
            buckets.push((tenant_key("gcra", demand.tenant), bucket, demand.cost));
        }
        for (m, cost) in &mailboxes {
            if *cost > 0 {
                let key = mailbox_key("gcra", demand.app, m);
                buckets.push((key, policy.mailbox, *cost));
            }
        }

        let mut keys = penalties.clone();
        keys.extend(leases.iter().map(|(k, _)| k.clone()));
        keys.extend(buckets.iter().map(|(k, _, _)| k.clone()));
        let mut tail: Vec<Bytes> = vec![
            num(self.lease_ttl.as_millis()),
            Bytes::from(lease_id.clone()),
            num(penalties.len()),
            num(leases.len()),
            num(buckets.len()),
        ];
        for (_, wanted) in &leases {
            tail.push(num(policy.slots));
            tail.push(num(wanted));
        }
        for (_, bucket, cost) in &buckets {
            // More than the bucket can ever hold (a big $batch): it goes once the bucket is
            // full and empties it, as in the local limits.
            let cost = (*cost).min(bucket.burst);
            tail.push(num(bucket.emission_us));
            tail.push(num(bucket.tolerance_us()));
            tail.push(num(cost));
        }
        Plan {
            keys,
            tail,
            leases,
            serial,
            lease_id,
        }
    }

    fn hold(&self, plan: &Plan) -> Option<Leases> {
        if plan.leases.is_empty() {
            return None;
        }
        self.book
            .lock()
            .insert(plan.serial, (plan.lease_id.clone(), plan.leases.clone()));
        Some(Leases {
            redis: self.redis.clone(),
            book: Arc::clone(&self.book),
            serial: plan.serial,
            lease_id: plan.lease_id.clone(),
            keys: plan.leases.clone(),
        })
    }

    /// As `Limits::penalize`, in Redis too, so every replica holds the throttled key back.
    /// Does not wait for Redis (see `penalize_and_wait`).
    pub fn penalize(
        &self,
        tenant: &TenantId,
        app: &AppId,
        mailbox: Option<&Mailbox>,
        retry_after: Duration,
    ) {
        let Some((key, ms)) = self.penalize_locally(tenant, app, mailbox, retry_after) else {
            return;
        };
        let redis = self.redis.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { box_in_redis(&redis, key, ms).await });
        }
    }

    /// As `penalize`, returning once Redis has the penalty.
    pub async fn penalize_and_wait(
        &self,
        tenant: &TenantId,
        app: &AppId,
        mailbox: Option<&Mailbox>,
        retry_after: Duration,
    ) {
        if let Some((key, ms)) = self.penalize_locally(tenant, app, mailbox, retry_after) {
            box_in_redis(&self.redis, key, ms).await;
        }
    }

    /// The local box is kept as well: it is what holds requests while Redis is down. Returns
    /// the Redis key and window when there is one to set.
    fn penalize_locally(
        &self,
        tenant: &TenantId,
        app: &AppId,
        mailbox: Option<&Mailbox>,
        retry_after: Duration,
    ) -> Option<(Bytes, u128)> {
        self.local.penalize(tenant, app, mailbox, retry_after);
        if retry_after.is_zero() || !self.policy().enabled {
            return None;
        }
        let key = match mailbox {
            Some(mailbox) => mailbox_key("pen", app, mailbox),
            None => tenant_key("pen", tenant),
        };
        Some((key, retry_after.min(MAX_PENALTY).as_millis().max(1)))
    }

    /// Renews the leases of live requests every third of the lease TTL, until the limits
    /// are dropped.
    pub fn spawn_renewal(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let limits = Arc::downgrade(self);
        let every = self.lease_ttl / 3;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(limits) = limits.upgrade() else {
                    return;
                };
                limits.renew().await;
            }
        })
    }

    async fn renew(&self) {
        if !self.redis.is_up() {
            return;
        }
        let live: Vec<(String, Vec<(Bytes, u32)>)> = self.book.lock().values().cloned().collect();
        for chunk in live.chunks(RENEW_CHUNK) {
            let mut keys = Vec::new();
            let mut args = vec![num(self.lease_ttl.as_millis())];
            for (lease_id, leases) in chunk {
                for (key, n) in leases {
                    keys.push(key.clone());
                    args.push(num(n));
                    args.extend((1..=*n).map(|j| Bytes::from(member(lease_id, j))));
                }
            }
            if let Err(e) = self.redis.eval(&RENEW, &keys, &args).await {
                tracing::debug!(error = %e, "lease renewal failed; leases may lapse");
                return;
            }
        }
    }
}

async fn box_in_redis(redis: &Redis, key: Bytes, ms: u128) {
    if !redis.is_up() {
        redis.fell_back();
        return;
    }
    if let Err(e) = redis.eval(&PENALIZE, &[key], &[num(ms)]).await {
        tracing::debug!(error = %e, "shared penalty box not set; this replica's holds");
        redis.fell_back();
    }
}

fn num(n: impl std::fmt::Display) -> Bytes {
    let mut text = String::new();
    let _ = write!(text, "{n}");
    Bytes::from(text)
}

/// `idproxy:{kind}:t:{tenant}`.
fn tenant_key(kind: &str, tenant: &TenantId) -> Bytes {
    Bytes::from(format!("idproxy:{kind}:t:{}", tenant.as_str()))
}

/// `idproxy:{kind}:m:{app length}:{app}:{mailbox}`: the length keeps an app id that
/// contains `:` from meeting another app's mailbox.
fn mailbox_key(kind: &str, app: &AppId, mailbox: &Mailbox) -> Bytes {
    let app = app.as_str();
    Bytes::from(format!(
        "idproxy:{kind}:m:{}:{app}:{}",
        app.len(),
        mailbox.0
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn buckets_match_the_local_quotas() {
        let tenant = Bucket::per_second(nz(50), nz(100));
        assert_eq!(tenant.emission_us, 20_000.0);
        assert_eq!(tenant.tolerance_us(), 2_000_000.0);
        let mailbox = Bucket::per_10min(nz(10_000));
        assert_eq!(mailbox.emission_us, 60_000.0);
        assert_eq!(mailbox.burst, 10_000);
    }

    #[test]
    fn keys_separate_tenants_apps_and_mailboxes() {
        let app = |a: &str| AppId(a.into());
        let mbx = |m: &str| Mailbox(m.into());
        assert_eq!(
            &mailbox_key("gcra", &app("a:b"), &mbx("c"))[..],
            b"idproxy:gcra:m:3:a:b:c"
        );
        assert_ne!(
            mailbox_key("gcra", &app("a:b"), &mbx("c")),
            mailbox_key("gcra", &app("a"), &mbx("b:c"))
        );
        assert_eq!(
            &tenant_key("pen", &TenantId("t1".into()))[..],
            b"idproxy:pen:t:t1"
        );
    }

    #[test]
    fn verdicts_are_read_from_two_integers() {
        let reply = |code, wait| Value::Array(vec![Value::Int(code), Value::Int(wait)]);
        assert_eq!(
            Verdict::from_reply(&reply(0, 1500)).unwrap(),
            Verdict::Admitted {
                wait: Duration::from_micros(1500)
            }
        );
        assert_eq!(
            Verdict::from_reply(&reply(1, 2_000_000)).unwrap(),
            Verdict::Penalty {
                wait: Duration::from_secs(2)
            }
        );
        assert_eq!(
            Verdict::from_reply(&reply(2, 0)).unwrap(),
            Verdict::SlotsFull
        );
        assert!(Verdict::from_reply(&reply(9, 0)).is_err());
        assert!(Verdict::from_reply(&Value::Int(0)).is_err());
        assert_eq!(
            Verdict::from_reply(&reply(3, -5)).unwrap(),
            Verdict::Tokens {
                wait: Duration::ZERO
            }
        );
    }
}
