-- gatehouse quota: settle (or release) one request's reservations.
-- KEYS: one per counter (see reserve.lua)
-- ARGV: rid, "actual expires_ms actual expires_ms ..."
local rid = ARGV[1]
local spec = {}
for v in string.gmatch(ARGV[2], "%S+") do spec[#spec + 1] = tonumber(v) end
for i = 1, #KEYS do
  local h, e = KEYS[i], KEYS[i] .. ":e"
  local amount = redis.call('HGET', h, rid)
  if amount then
    redis.call('HDEL', h, rid)
    redis.call('HINCRBY', h, 'r', -tonumber(amount))
    redis.call('ZREM', e, rid)
  end
  local actual = spec[2*i-1]
  if actual > 0 then
    redis.call('HINCRBY', h, 'c', actual)
    redis.call('PEXPIREAT', h, spec[2*i] + 60000)
  end
end
return #KEYS
