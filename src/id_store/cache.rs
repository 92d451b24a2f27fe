//! The in-memory half of the ID store: shards of CLOCK-evicted entries, each shard behind
//! its own lock, each entry one compact heap block.
//!
//! Nothing here does I/O or takes a lock of its own: `IdStore` picks the shard and holds its
//! lock around one call. Nothing here may panic, since a shard lock is held throughout.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use super::compact::{compact_into, compact_to, expand};
use super::{Lookup, MAX_ID_BYTES};
use crate::hashing;

/// Marks a negative entry in the value-form byte; far from the compact forms (0, 1, 2) so a
/// new form can never be taken for it.
const NEGATIVE: u8 = u8::MAX;

/// What a cache entry says about its ID.
pub(super) enum Value<'a> {
    Mapped(&'a str),
    Failed { until_ms: u64 },
}

/// A looked-up ID in its compact form, hashed once outside the shard lock. The form is
/// borrowed: from a stack buffer the ID was compacted into (IDs are at most
/// `MAX_ID_BYTES`, and the compact form is never longer), or from a `CompactKey` made
/// while classifying, so a look-up allocates nothing for its key.
pub(super) struct ProbeKey<'k> {
    pub(super) form: u8,
    bytes: &'k [u8],
    pub(super) hash: u64,
}

impl<'k> ProbeKey<'k> {
    /// `id` compacted into `buffer` and hashed with `tenant`; `None` when it is longer
    /// than an ID can be.
    pub(super) fn new(
        state: &hashing::State,
        tenant: &str,
        id: &str,
        buffer: &'k mut [u8; MAX_ID_BYTES],
    ) -> Option<ProbeKey<'k>> {
        let (form, len) = compact_to(id, buffer)?;
        let buffer: &'k [u8] = buffer;
        Some(ProbeKey::compacted(state, tenant, form, buffer.get(..len)?))
    }

    /// A key already in compact form, hashed with `tenant`.
    pub(super) fn compacted(
        state: &hashing::State,
        tenant: &str,
        form: u8,
        bytes: &'k [u8],
    ) -> ProbeKey<'k> {
        ProbeKey {
            form,
            bytes,
            hash: entry_hash(state, tenant, form, bytes),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

/// The 64-bit entry hash, split so the index bucket is 12 bytes rather than 16 (a `u64` key
/// would pad `(key, u32)` to 16).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Prehashed(u32, u32);

impl From<u64> for Prehashed {
    fn from(hash: u64) -> Prehashed {
        Prehashed((hash >> 32) as u32, hash as u32)
    }
}

impl Hash for Prehashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64((u64::from(self.0) << 32) | u64::from(self.1));
    }
}

/// Hands the already keyed hash through instead of hashing it a second time.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called; fold anything else in rather than drop it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) fn entry_hash(state: &hashing::State, tenant: &str, form: u8, key: &[u8]) -> u64 {
    let mut h = state.build_hasher();
    h.write(tenant.as_bytes());
    // 0xff never occurs in UTF-8, so tenant and ID cannot shift into each other.
    h.write_u8(0xff);
    h.write_u8(form);
    h.write(key);
    h.finish()
}

/// One entry. `data` is a single heap block:
/// `[key form][value form or NEGATIVE][key length u16 LE][key][value]`, where a negative
/// entry's value is its deadline (u64 LE milliseconds since the store's epoch).
/// An empty `data` marks a vacant slot.
struct Slot {
    data: Box<[u8]>,
    tenant: u32,
    /// CLOCK's second-chance bit: set on every hit, cleared as the hand passes.
    referenced: bool,
}

const NO_TENANT: u32 = u32::MAX;

impl Slot {
    fn vacant() -> Slot {
        Slot {
            data: Box::default(),
            tenant: NO_TENANT,
            referenced: false,
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        matches!(split_entry(&self.data), Some(e) if e.value_form == NEGATIVE && deadline(e.value) <= now_ms)
    }
}

struct EntryParts<'a> {
    key_form: u8,
    key: &'a [u8],
    value_form: u8,
    value: &'a [u8],
}

fn split_entry(data: &[u8]) -> Option<EntryParts<'_>> {
    let (&key_form, rest) = data.split_first()?;
    let (&value_form, rest) = rest.split_first()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let (key, value) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
    Some(EntryParts {
        key_form,
        key,
        value_form,
        value,
    })
}

fn deadline(value: &[u8]) -> u64 {
    value
        .first_chunk::<8>()
        .map_or(0, |b| u64::from_le_bytes(*b))
}

fn build_entry(key: &ProbeKey<'_>, value: &Value<'_>) -> Option<Box<[u8]>> {
    let key_bytes = key.bytes();
    let key_len = u16::try_from(key_bytes.len()).ok()?;
    let mut value_bytes = Vec::new();
    let value_form = match value {
        Value::Mapped(immutable) => compact_into(immutable, &mut value_bytes),
        Value::Failed { until_ms } => {
            value_bytes.extend_from_slice(&until_ms.to_le_bytes());
            NEGATIVE
        }
    };
    let mut data = Vec::with_capacity(4 + key_bytes.len() + value_bytes.len());
    data.push(key.form);
    data.push(value_form);
    data.extend_from_slice(&key_len.to_le_bytes());
    data.extend_from_slice(key_bytes);
    data.extend_from_slice(&value_bytes);
    Some(data.into_boxed_slice())
}

/// The bytes glibc malloc reserves for a block of `len` bytes: 8 bytes of header, rounded up
/// to 16, at least 32.
fn heap_block(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        (len.saturating_add(8 + 15) & !15).max(32)
    }
}

/// Bytes of a std `HashMap` with room for `capacity` items of `bucket` bytes: hashbrown keeps
/// at most 7/8 of a power-of-two bucket count full, plus one control byte per bucket.
fn hash_map_bytes(capacity: usize, bucket: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity.saturating_mul(8) / 7).next_power_of_two();
    buckets.saturating_mul(bucket + 1)
}

/// Which tenants a shard's entries belong to, as small numbers, each counted by its entries:
/// a tenant whose last entry leaves is forgotten, so the table never outgrows the shard.
/// Kept per shard so the hot path takes no lock but its shard's.
#[derive(Default)]
struct ShardTenants {
    /// Every look-up asks it for its tenant, so it hashes like the ID maps (`hashing`).
    ids: hashing::Map<Box<str>, u32>,
    names: Vec<TenantRefs>,
    free: Vec<u32>,
}

struct TenantRefs {
    name: Box<str>,
    refs: u32,
}

impl ShardTenants {
    fn id(&self, tenant: &str) -> Option<u32> {
        self.ids.get(tenant).copied()
    }

    fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(|t| &*t.name)
    }

    fn acquire(&mut self, tenant: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(tenant) {
            let refs = &mut self.names.get_mut(id as usize)?.refs;
            *refs = refs.saturating_add(1);
            return Some(id);
        }
        let entry = TenantRefs {
            name: tenant.into(),
            refs: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                *self.names.get_mut(id as usize)? = entry;
                id
            }
            None => {
                let id = u32::try_from(self.names.len())
                    .ok()
                    .filter(|&id| id != NO_TENANT)?;
                self.names.push(entry);
                id
            }
        };
        self.ids.insert(tenant.into(), id);
        Some(id)
    }

    fn release(&mut self, id: u32) {
        let Some(t) = self.names.get_mut(id as usize) else {
            return;
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs == 0 {
            self.ids.remove(&t.name);
            t.name = Box::default();
            self.free.push(id);
        }
    }

    fn approx_bytes(&self) -> usize {
        let names: usize = self
            .names
            .iter()
            .map(|t| 2 * heap_block(t.name.len()))
            .sum();
        hash_map_bytes(self.ids.capacity(), std::mem::size_of::<(Box<str>, u32)>())
            + self.names.capacity() * std::mem::size_of::<TenantRefs>()
            + self.free.capacity() * 4
            + names
    }
}

pub(super) struct Shard {
    capacity: usize,
    index: HashMap<Prehashed, u32, BuildHasherDefault<PrehashedHasher>>,
    /// The CLOCK ring; grows up to `capacity`, vacant slots are reused first.
    slots: Vec<Slot>,
    vacant: Vec<u32>,
    hand: usize,
    tenants: ShardTenants,
    /// Sum of `heap_block` over live entries.
    heap_bytes: usize,
}

impl Shard {
    pub(super) fn new(capacity: usize) -> Shard {
        Shard {
            capacity,
            index: HashMap::default(),
            slots: Vec::new(),
            vacant: Vec::new(),
            hand: 0,
            tenants: ShardTenants::default(),
            heap_bytes: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn tenant_count(&self) -> usize {
        self.tenants.ids.len()
    }

    pub(super) fn live(&self) -> usize {
        self.slots.len().saturating_sub(self.vacant.len())
    }

    /// The slot holding exactly this tenant's key, if any.
    fn find(&self, tenant: &str, key: &ProbeKey<'_>) -> Option<usize> {
        let ix = *self.index.get(&Prehashed::from(key.hash))? as usize;
        let tenant_id = self.tenants.id(tenant)?;
        let slot = self.slots.get(ix)?;
        let parts = split_entry(&slot.data)?;
        let same =
            slot.tenant == tenant_id && parts.key_form == key.form && parts.key == key.bytes();
        same.then_some(ix)
    }

    /// The answer, and the change in live entries (an expired negative entry is dropped).
    /// `now_ms` is asked only for a negative entry: reading the clock for every hit was a
    /// measurable part of a warm look-up.
    pub(super) fn get(
        &mut self,
        tenant: &str,
        key: &ProbeKey<'_>,
        now_ms: impl FnOnce() -> u64,
    ) -> (Lookup, i64) {
        let Some(ix) = self.find(tenant, key) else {
            return (Lookup::Miss, 0);
        };
        let Some(slot) = self.slots.get_mut(ix) else {
            return (Lookup::Miss, 0);
        };
        let answer = match split_entry(&slot.data) {
            Some(e) if e.value_form == NEGATIVE => {
                if now_ms() < deadline(e.value) {
                    Some(Lookup::Failed)
                } else {
                    None
                }
            }
            Some(e) => expand(e.value_form, e.value).map(Lookup::Hit),
            None => Some(Lookup::Miss),
        };
        match answer {
            Some(answer) => {
                slot.referenced = true;
                (answer, 0)
            }
            None => {
                self.remove_at(ix, key.hash);
                (Lookup::Miss, -1)
            }
        }
    }

    /// Stores `value` for the key, evicting by CLOCK when the shard is full. Returns the
    /// change in live entries.
    pub(super) fn put(
        &mut self,
        state: &hashing::State,
        tenant: &str,
        key: &ProbeKey<'_>,
        value: &Value<'_>,
        now_ms: u64,
    ) -> i64 {
        let Some(data) = build_entry(key, value) else {
            return 0;
        };
        if let Some(&ix) = self.index.get(&Prehashed::from(key.hash)) {
            let ix = ix as usize;
            if matches!(value, Value::Failed { .. }) && self.find(tenant, key) == Some(ix) {
                let mapped = self
                    .slots
                    .get(ix)
                    .and_then(|s| split_entry(&s.data))
                    .is_some_and(|e| e.value_form != NEGATIVE);
                if mapped {
                    return 0;
                }
            }
            // This key, or one whose 64-bit hash collides with it: either way the slot now
            // holds the new entry.
            let Some(tenant_id) = self.tenants.acquire(tenant) else {
                return 0;
            };
            let Some(slot) = self.slots.get_mut(ix) else {
                return 0;
            };
            self.heap_bytes = self
                .heap_bytes
                .saturating_sub(heap_block(slot.data.len()))
                .saturating_add(heap_block(data.len()));
            slot.data = data;
            let old_tenant = std::mem::replace(&mut slot.tenant, tenant_id);
            self.tenants.release(old_tenant);
            return 0;
        }
        let Some(tenant_id) = self.tenants.acquire(tenant) else {
            return 0;
        };
        let (ix, delta) = if let Some(ix) = self.vacant.pop() {
            (ix as usize, 1)
        } else if self.slots.len() < self.capacity {
            if self.slots.len() == self.slots.capacity() {
                // Grow by doubling, but never past the capacity: at a million entries the
                // slack of a plain doubling would be megabytes.
                let target = (self.slots.capacity() * 2).max(16).min(self.capacity);
                self.slots.reserve_exact(target - self.slots.len());
            }
            self.slots.push(Slot::vacant());
            (self.slots.len() - 1, 1)
        } else {
            let victim = self.clock_victim(now_ms);
            self.unlink(state, victim);
            (victim, 0)
        };
        // `ix` is below `slots.len()` <= `capacity` <= u32::MAX, so both always succeed;
        // were they not to, the entry is simply not cached.
        let (Ok(ix32), Some(slot)) = (u32::try_from(ix), self.slots.get_mut(ix)) else {
            self.tenants.release(tenant_id);
            return 0;
        };
        self.heap_bytes = self.heap_bytes.saturating_add(heap_block(data.len()));
        *slot = Slot {
            data,
            tenant: tenant_id,
            referenced: false,
        };
        self.index.insert(Prehashed::from(key.hash), ix32);
        delta
    }

    pub(super) fn remove(&mut self, tenant: &str, key: &ProbeKey<'_>) -> i64 {
        match self.find(tenant, key) {
            Some(ix) => {
                self.remove_at(ix, key.hash);
                -1
            }
            None => 0,
        }
    }

    /// Picks the slot to reuse in a full shard: the first one the hand finds that was not
    /// used since the hand last passed, or that is an expired negative entry.
    fn clock_victim(&mut self, now_ms: u64) -> usize {
        let len = self.slots.len().max(1);
        // Two sweeps: the first clears every bit it passes, so the second must stop.
        for _ in 0..2 * len {
            let i = self.hand % len;
            self.hand = (i + 1) % len;
            if let Some(slot) = self.slots.get_mut(i) {
                if !slot.referenced || slot.expired(now_ms) {
                    return i;
                }
                slot.referenced = false;
            }
        }
        self.hand % len
    }

    /// Takes a live slot out of the index and tenant table, leaving it vacant but not listed
    /// as such (its caller reuses it at once).
    fn unlink(&mut self, state: &hashing::State, ix: usize) {
        let Some(slot) = self.slots.get_mut(ix) else {
            return;
        };
        let data = std::mem::take(&mut slot.data);
        let tenant = std::mem::replace(&mut slot.tenant, NO_TENANT);
        slot.referenced = false;
        self.heap_bytes = self.heap_bytes.saturating_sub(heap_block(data.len()));
        if let (Some(name), Some(parts)) = (self.tenants.name(tenant), split_entry(&data)) {
            let hash = Prehashed::from(entry_hash(state, name, parts.key_form, parts.key));
            if self.index.get(&hash).is_some_and(|&i| i as usize == ix) {
                self.index.remove(&hash);
            }
        }
        self.tenants.release(tenant);
    }

    fn remove_at(&mut self, ix: usize, hash: u64) {
        let Some(slot) = self.slots.get_mut(ix) else {
            return;
        };
        let data = std::mem::take(&mut slot.data);
        let tenant = std::mem::replace(&mut slot.tenant, NO_TENANT);
        slot.referenced = false;
        self.heap_bytes = self.heap_bytes.saturating_sub(heap_block(data.len()));
        self.index.remove(&Prehashed::from(hash));
        self.tenants.release(tenant);
        if let Ok(ix) = u32::try_from(ix) {
            self.vacant.push(ix);
        }
    }

    pub(super) fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Shard>()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.vacant.capacity() * 4
            + hash_map_bytes(
                self.index.capacity(),
                std::mem::size_of::<(Prehashed, u32)>(),
            )
            + self.heap_bytes
            + self.tenants.approx_bytes()
    }
}
