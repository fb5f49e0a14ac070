//! The Lua scripts behind every multi-key step. Each touches keys of a single
//! hash tag only, so it also runs on Redis Cluster. Change payloads are JSON
//! built by serde in Rust and passed in, so Lua never encodes a domain type;
//! it decodes one only to read a leaving user's gender for the counters.

use redis::Script;

/// KEYS: entries, order, changes, seq, counts.
/// ARGV: user, entry JSON, joined_at_ms, gender, log cap, `Joined` change JSON.
/// Returns 1 if the user was added, 0 if they were already queued.
const QUEUE_JOIN: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '0-' .. seq, 'c', ARGV[6])
return 1
"#;

/// KEYS: entries, order, changes, seq, counts.
/// ARGV: user, entry JSON, joined_at_ms, gender, log cap, `Joined` change JSON.
/// Returns 1 if the queued user's entry was replaced, 0 if they are not
/// queued (nothing written). The follower takes a `Joined` of a queued user
/// as the replacement of their entry.
const QUEUE_REPLACE: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return 0
end
local ok, decoded = pcall(cjson.decode, old)
if ok and type(decoded) == 'table' and type(decoded.gender) == 'string' then
  redis.call('HINCRBY', KEYS[5], decoded.gender, -1)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
local seq = redis.call('INCR', KEYS[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '0-' .. seq, 'c', ARGV[6])
return 1
"#;

/// KEYS: entries, order, changes, seq, counts.
/// ARGV: log cap, then pairs of (user, `Left` change JSON).
/// Returns how many of the users were queued (and are now removed).
const QUEUE_LEAVE: &str = r#"
local removed = 0
for i = 2, #ARGV, 2 do
  local user = ARGV[i]
  local entry = redis.call('HGET', KEYS[1], user)
  if entry then
    redis.call('HDEL', KEYS[1], user)
    redis.call('ZREM', KEYS[2], user)
    local ok, decoded = pcall(cjson.decode, entry)
    if ok and type(decoded) == 'table' and type(decoded.gender) == 'string' then
      redis.call('HINCRBY', KEYS[5], decoded.gender, -1)
    end
    local seq = redis.call('INCR', KEYS[4])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '0-' .. seq, 'c', ARGV[i + 1])
    removed = removed + 1
  end
end
return removed
"#;

/// KEYS: entries, order, seq.
/// Returns { last change seq, entry JSON oldest first... }. HMGET is chunked
/// because Lua's `unpack` is limited to a few thousand values.
const QUEUE_SNAPSHOT: &str = r#"
local users = redis.call('ZRANGE', KEYS[2], 0, -1)
local out = { redis.call('GET', KEYS[3]) or '0' }
for i = 1, #users, 1000 do
  local chunk = {}
  for j = i, math.min(i + 999, #users) do
    chunk[#chunk + 1] = users[j]
  end
  local values = redis.call('HMGET', KEYS[1], unpack(chunk))
  for _, v in ipairs(values) do
    if v then
      out[#out + 1] = v
    end
  end
end
return out
"#;

/// KEYS: holder, fence. ARGV: holder name, ttl ms.
/// Returns the new fencing token, or 0 if the lease is held.
const LEASE_ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'PX', ARGV[2])
return token
"#;

/// KEYS: holder. ARGV: `<holder>#<token>`, ttl ms. Returns 1 if extended.
const LEASE_RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: holder. ARGV: `<holder>#<token>`. Returns 1 if released.
const LEASE_RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// The scripts, hashed once; `invoke_async` runs them by SHA and loads them
/// on `NOSCRIPT` (after a Redis restart or failover).
pub(crate) struct Scripts {
    pub queue_join: Script,
    pub queue_replace: Script,
    pub queue_leave: Script,
    pub queue_snapshot: Script,
    pub lease_acquire: Script,
    pub lease_renew: Script,
    pub lease_release: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            queue_join: Script::new(QUEUE_JOIN),
            queue_replace: Script::new(QUEUE_REPLACE),
            queue_leave: Script::new(QUEUE_LEAVE),
            queue_snapshot: Script::new(QUEUE_SNAPSHOT),
            lease_acquire: Script::new(LEASE_ACQUIRE),
            lease_renew: Script::new(LEASE_RENEW),
            lease_release: Script::new(LEASE_RELEASE),
        }
    }
}
