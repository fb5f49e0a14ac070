//! The Lua scripts behind every multi-key step. Each touches keys of a single
//! hash tag only, so it also runs on Redis Cluster. Change payloads are JSON
//! built by serde in Rust and passed in, so Lua never encodes a domain type;
//! it decodes one only to read the gender of a user who leaves or whose
//! entry is replaced, for the counters.

use redis::Script;

/// KEYS: entries, order, changes, seq, counts.
/// ARGV: user, entry JSON, joined_at_ms, gender, log cap, `Joined` change
/// JSON, mode: `join` writes only a user not queued yet, `replace` only one
/// who is (their old gender's count goes down; the follower takes a
/// `Joined` of a queued user as the replacement of their entry).
/// Returns 1 if it wrote, 0 if not (nothing changed).
const QUEUE_PUT: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if (ARGV[7] == 'join') == (old ~= false) then
  return 0
end
if old then
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' and type(decoded.gender) == 'string' then
    redis.call('HINCRBY', KEYS[5], decoded.gender, -1)
  end
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
    pub queue_put: Script,
    pub queue_leave: Script,
    pub queue_snapshot: Script,
    pub lease_acquire: Script,
    pub lease_renew: Script,
    pub lease_release: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            queue_put: Script::new(QUEUE_PUT),
            queue_leave: Script::new(QUEUE_LEAVE),
            queue_snapshot: Script::new(QUEUE_SNAPSHOT),
            lease_acquire: Script::new(LEASE_ACQUIRE),
            lease_renew: Script::new(LEASE_RENEW),
            lease_release: Script::new(LEASE_RELEASE),
        }
    }
}
