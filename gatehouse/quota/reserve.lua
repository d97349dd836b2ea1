-- gatehouse quota: atomic check-and-reserve over N counters (one round trip). The same rules
-- as memory.py (one conformance suite runs both).
-- Each counter is a hash at its key (field "c": committed usage, "r": total reserved, "d": the
-- debt taken over from the window before, one field per live reservation: rid -> amount) and
-- a sorted set key..":e" of reservation expiries (rid -> until).
-- KEYS: for each of the N counters, its key and the key of the window before (the same key
-- when nothing carries over); then for each settle, the reservation's key and the key to
-- commit to (the window current when the request ended).
-- ARGV: now, rid, until, "limit amount expires_ms carry ..." (one string, so the client
-- encodes a handful of arguments, not four per counter), and optionally
-- "rid actual commit_expires_ms ..." settling earlier requests (settles ride along with the
-- next reservation, so a request costs one round trip; with no counters, the call only
-- settles).
-- Returns: {allowed (1/0), refused index (1-based, 0 if none), used_1, ..., used_N}
local now, rid, until_ = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local spec = {}
for v in string.gmatch(ARGV[4], "%S+") do spec[#spec + 1] = tonumber(v) end
local n = #spec / 4
if ARGV[5] then
  local s = {}
  for v in string.gmatch(ARGV[5], "%S+") do s[#s + 1] = v end
  for j = 1, #s / 3 do
    local h, target = KEYS[2 * n + 2 * j - 1], KEYS[2 * n + 2 * j]
    local old, actual = s[3*j-2], tonumber(s[3*j-1])
    local amount = redis.call('HGET', h, old)
    if amount then
      redis.call('HDEL', h, old)
      redis.call('HINCRBY', h, 'r', -tonumber(amount))
      redis.call('ZREM', h .. ':e', old)
    end
    if actual > 0 then
      redis.call('HINCRBY', target, 'c', actual)
      redis.call('PEXPIREAT', target, tonumber(s[3*j]) + 60000)
    end
  end
end
local used = {}
local refused = 0
for i = 1, n do
  local h, e, before = KEYS[2*i-1], KEYS[2*i-1] .. ":e", KEYS[2*i]
  local limit, amount, expires, carry = spec[4*i-3], spec[4*i-2], spec[4*i-1], spec[4*i]
  -- reservations of requests whose replica died (or that ran past the ttl) lapse here
  local stale = redis.call('ZRANGEBYSCORE', e, '-inf', now)
  for _, old in ipairs(stale) do
    local amount_ = redis.call('HGET', h, old)
    if amount_ then
      redis.call('HDEL', h, old)
      redis.call('HINCRBY', h, 'r', -tonumber(amount_))
    end
    redis.call('ZREM', e, old)
  end
  local cdr = redis.call('HMGET', h, 'c', 'd', 'r')
  local debt = cdr[2]
  if not debt then  -- first use of this window: take over what the one before overshot
    debt = 0
    if carry == 1 then
      local p = redis.call('HMGET', before, 'c', 'd')
      debt = math.max(0, tonumber(p[1] or '0') + tonumber(p[2] or '0') - limit)
    end
    redis.call('HSET', h, 'd', debt)
    redis.call('PEXPIREAT', h, expires + 60000)
  end
  local total = tonumber(cdr[1] or '0') + tonumber(debt) + tonumber(cdr[3] or '0')
  used[i] = total
  if refused == 0 and amount > 0 and total + amount > limit then refused = i end
end
if refused == 0 then
  for i = 1, n do
    local amount = spec[4*i-2]
    if amount > 0 then
      local h, e = KEYS[2*i-1], KEYS[2*i-1] .. ":e"
      local expires = spec[4*i-1] + 60000
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
