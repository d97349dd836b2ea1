-- gatehouse quota: settle (or release) one request's reservations.
-- KEYS: per counter committed, reservations, expiries (as in reserve.lua)
-- ARGV: rid, then per counter: actual, expires_ms
local rid = ARGV[1]
local n = #KEYS / 3
for i = 1, n do
  local committed, held, expiry = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  redis.call('HDEL', held, rid)
  redis.call('ZREM', expiry, rid)
  local actual = tonumber(ARGV[2*i])
  if actual > 0 then
    redis.call('INCRBY', committed, actual)
    redis.call('PEXPIREAT', committed, tonumber(ARGV[2*i+1]) + 60000)
  end
end
return n
