//! The regular->immutable ID map shared by replicas: one Redis key per mapping,
//! `idproxy:id:{tenant}:{regular}` -> immutable ID, so a translation one replica paid for
//! serves all of them. Each replica keeps its memory cache and redb store in front
//! (`id_lookup` asks memory, then redb, then this, then Graph) and copies what it reads here
//! into its own store.
//!
//! Keys expire `ID_TTL` after they were last written or read: mappings in use stay, and
//! Redis memory stays bounded by what apps actually use.
//!
//! Must not: wait on Redis beyond `CALL_TIMEOUT` (a failure reads as "not found", and the
//! caller carries on with Graph), or mix tenants (the tenant is part of every key; regular
//! REST IDs never contain `:`, so the split is unambiguous).

use std::time::Duration;

use bytes::Bytes;

use super::resp::{Command, Value};
use super::{Redis, RedisError};

/// How long an unused mapping stays in Redis. Each replica also keeps every mapping it
/// used in its own redb store, which has no expiry.
pub const ID_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone)]
pub struct SharedIds {
    redis: Redis,
}

impl SharedIds {
    pub fn new(redis: Redis) -> SharedIds {
        SharedIds { redis }
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The immutable ID of each of `regulars` (in order), refreshing the TTL of those found.
    pub async fn get_many(
        &self,
        tenant: &str,
        regulars: &[String],
    ) -> Result<Vec<Option<String>>, RedisError> {
        let ttl = ID_TTL.as_millis().to_string();
        let commands: Vec<Command> = regulars
            .iter()
            .map(|regular| {
                Command::new("GETEX")
                    .arg(id_key(tenant, regular))
                    .arg("PX")
                    .arg(ttl.clone())
            })
            .collect();
        let replies = self.redis.query(&commands).await?;
        replies
            .into_iter()
            .map(|reply| match reply {
                Value::Nil => Ok(None),
                Value::Bulk(_) => Ok(reply.as_text().map(str::to_owned)),
                Value::Error(message) => Err(RedisError::Refused(message)),
                Value::Simple(_) | Value::Int(_) | Value::Array(_) => Err(RedisError::Unexpected(
                    "GETEX answered neither a value nor nil",
                )),
            })
            .collect()
    }

    /// Writes every mapping, and waits until Redis has them: another replica may ask for
    /// them as soon as this request is answered.
    pub async fn put_many(
        &self,
        tenant: &str,
        pairs: &[(String, String)],
    ) -> Result<(), RedisError> {
        let ttl = ID_TTL.as_millis().to_string();
        let commands: Vec<Command> = pairs
            .iter()
            .map(|(regular, immutable)| {
                Command::new("SET")
                    .arg(id_key(tenant, regular))
                    .arg(immutable.clone())
                    .arg("PX")
                    .arg(ttl.clone())
            })
            .collect();
        let replies = self.redis.query(&commands).await?;
        match replies.into_iter().find(|r| matches!(r, Value::Error(_))) {
            Some(Value::Error(message)) => Err(RedisError::Refused(message)),
            _ => Ok(()),
        }
    }

    /// Forgets a mapping (Graph answered 404 for the ID it produced).
    pub fn forget(&self, tenant: &str, regular: &str) {
        self.redis
            .send_and_forget(&[Command::new("DEL").arg(id_key(tenant, regular))]);
    }
}

fn id_key(tenant: &str, regular: &str) -> Bytes {
    Bytes::from(format!("idproxy:id:{tenant}:{regular}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_the_tenant_and_the_id_byte_for_byte() {
        assert_eq!(&id_key("t1", "AAMk=")[..], b"idproxy:id:t1:AAMk=");
        assert_ne!(id_key("t1", "AAMk"), id_key("t2", "AAMk"));
        assert_ne!(id_key("t1", "aamk"), id_key("t1", "AAMk"));
    }
}
