-- Take one attempt back off a counter (State.refund). KEYS[1]: the counter; ARGV[1]: its
-- free attempts. Back within them, its lock goes too; otherwise the lock stands.
local n = redis.call('HINCRBY', KEYS[1], 'n', -1)
if n < 0 then
  redis.call('DEL', KEYS[1])
elseif n <= tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'u')
end
return 0
