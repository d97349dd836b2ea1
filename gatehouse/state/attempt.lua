-- One attempt against every counter (State.attempt), atomically.
-- KEYS: the counters (hashes: n = attempts, u = locked until, l = last attempt).
-- ARGV[1]: now (the caller's clock); then per key: free, first, longest, memory (seconds).
-- Returns {1, locked_for} when the attempt may go on, {0, wait} when a counter is locked;
-- numbers as strings (Lua numbers come back from Redis as truncated integers).
local now = tonumber(ARGV[1])
local wait = 0
for _, key in ipairs(KEYS) do
  local untl = tonumber(redis.call('HGET', key, 'u') or '0')
  if untl - now > wait then wait = untl - now end
end
if wait > 0 then return {0, tostring(wait)} end
local locked = 0
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local free, first = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local longest, memory = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local last = tonumber(redis.call('HGET', key, 'l') or '0')
  if now - last >= memory then redis.call('DEL', key) end
  local n = redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, 'l', tostring(now))
  if n > free then
    local lock = math.min(longest, first * 2 ^ math.min(n - free - 1, 64))
    redis.call('HSET', key, 'u', tostring(now + lock))
    if lock > locked then locked = lock end
  end
  redis.call('PEXPIRE', key, math.ceil(memory * 1000))
end
return {1, tostring(locked)}
