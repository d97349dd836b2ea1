-- gatehouse quota: atomic check-and-reserve over N counters (one round trip).
-- KEYS: one per counter. Each counter is a hash at KEYS[i] (field "c": committed usage,
-- "r": total reserved, and one field per live reservation: rid -> amount) and a sorted set
-- KEYS[i]..":e" of reservation expiries (rid -> until).
-- ARGV: now, rid, until, "limit amount expires_ms limit amount expires_ms ..." (one string,
-- so the client encodes a handful of arguments, not three per counter), and optionally
-- "rid actual expires_ms ..." settling earlier requests on the KEYS after the first N
-- (settles ride along with the next reservation, so a request costs one round trip; with
-- no counters to reserve, the call only settles)
-- Returns: {allowed (1/0), refused index (1-based, 0 if none), used_1, ..., used_N}
local now, rid, until_ = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local spec = {}
for v in string.gmatch(ARGV[4], "%S+") do spec[#spec + 1] = tonumber(v) end
local n = #spec / 3
if ARGV[5] then
  local s = {}
  for v in string.gmatch(ARGV[5], "%S+") do s[#s + 1] = v end
  for j = 1, #s / 3 do
    local h = KEYS[n + j]
    local old, actual = s[3*j-2], tonumber(s[3*j-1])
    local amount = redis.call('HGET', h, old)
    if amount then
      redis.call('HDEL', h, old)
      redis.call('HINCRBY', h, 'r', -tonumber(amount))
      redis.call('ZREM', h .. ':e', old)
    end
    if actual > 0 then
      redis.call('HINCRBY', h, 'c', actual)
      redis.call('PEXPIREAT', h, tonumber(s[3*j]) + 60000)
    end
  end
end
local used = {}
local refused = 0
for i = 1, n do
  local h, e = KEYS[i], KEYS[i] .. ":e"
  -- reservations of requests whose replica died (or that ran past the ttl) lapse here
  local stale = redis.call('ZRANGEBYSCORE', e, '-inf', now)
  for _, old in ipairs(stale) do
    local amount = redis.call('HGET', h, old)
    if amount then
      redis.call('HDEL', h, old)
      redis.call('HINCRBY', h, 'r', -tonumber(amount))
    end
    redis.call('ZREM', e, old)
  end
  local cr = redis.call('HMGET', h, 'c', 'r')
  local total = tonumber(cr[1] or '0') + tonumber(cr[2] or '0')
  used[i] = total
  local limit, amount = spec[3*i-2], spec[3*i-1]
  if refused == 0 and amount > 0 and total + amount > limit then refused = i end
end
if refused == 0 then
  for i = 1, n do
    local amount = spec[3*i-1]
    if amount > 0 then
      local h, e = KEYS[i], KEYS[i] .. ":e"
      local expires = spec[3*i] + 60000
      redis.call('HSET', h, rid, amount)
      redis.call('HINCRBY', h, 'r', amount)
      redis.call('ZADD', e, until_, rid)
      redis.call('PEXPIREAT', h, expires)
      redis.call('PEXPIREAT', e, expires)
    end
  end
end
local out = {refused == 0 and 1 or 0, refused}
for i = 1, n do out[#out + 1] = used[i] end
return out
