-- gatehouse quota: atomic check-and-reserve over N counters (one round trip).
-- Each counter has 3 keys in KEYS, in order: committed (string), reservations (hash
-- rid -> amount), reservation expiries (zset rid -> until).
-- ARGV: now, rid, until, then per counter: limit, amount, expires_ms
-- Returns: {allowed (1/0), refused index (1-based, 0 if none), used_1, ..., used_N}
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local until_ = tonumber(ARGV[3])
local n = #KEYS / 3
local used = {}
local refused = 0
for i = 1, n do
  local committed, held, expiry = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  -- reservations of requests whose replica died (or that ran past the ttl) lapse here
  local stale = redis.call('ZRANGEBYSCORE', expiry, '-inf', now)
  for _, old in ipairs(stale) do
    redis.call('HDEL', held, old)
    redis.call('ZREM', expiry, old)
  end
  local total = tonumber(redis.call('GET', committed) or '0')
  local amounts = redis.call('HVALS', held)
  for _, a in ipairs(amounts) do total = total + tonumber(a) end
  used[i] = total
  local limit, amount = tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2])
  if refused == 0 and amount > 0 and total + amount > limit then refused = i end
end
if refused == 0 then
  for i = 1, n do
    local amount = tonumber(ARGV[3*i+2])
    if amount > 0 then
      local committed, held, expiry = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
      local expires = tonumber(ARGV[3*i+3])
      redis.call('HSET', held, rid, amount)
      redis.call('ZADD', expiry, until_, rid)
      redis.call('PEXPIREAT', held, expires + 60000)
      redis.call('PEXPIREAT', expiry, expires + 60000)
    end
  end
end
local out = {refused == 0 and 1 or 0, refused}
for i = 1, n do out[#out+1] = used[i] end
return out
