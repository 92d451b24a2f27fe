//! Hash maps keyed by Exchange IDs. A rewritten body puts each of its IDs through several
//! maps (deduplication, the cache, the answers); std's SipHash over a ~150-byte ID was a
//! tenth of the rewrite path's time. foldhash is several times faster on such keys and,
//! like std's, seeded at random per map, so keys chosen to collide cannot be precomputed.

/// The hasher of every ID-keyed map and of the ID cache.
pub type State = foldhash::quality::RandomState;
pub type Map<K, V> = std::collections::HashMap<K, V, State>;
pub type Set<K> = std::collections::HashSet<K, State>;
