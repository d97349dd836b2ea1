-- gatehouse quota: settle (or release) reservations of finished requests.
-- KEYS: one per entry (see reserve.lua)
-- ARGV: "rid actual expires_ms rid actual expires_ms ..." (one entry per key)
local s = {}
for v in string.gmatch(ARGV[1], "%S+") do s[#s + 1] = v end
for j = 1, #KEYS do
  local h = KEYS[j]
  local rid, actual = s[3*j-2], tonumber(s[3*j-1])
  local amount = redis.call('HGET', h, rid)
  if amount then
    redis.call('HDEL', h, rid)
    redis.call('HINCRBY', h, 'r', -tonumber(amount))
    redis.call('ZREM', h .. ':e', rid)
  end
  if actual > 0 then
    redis.call('HINCRBY', h, 'c', actual)
    redis.call('PEXPIREAT', h, tonumber(s[3*j]) + 60000)
  end
end
return #KEYS
