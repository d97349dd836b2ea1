-- gatehouse quota: atomic check-and-reserve over N counters, for one request or for several
-- (the reservations a process asked for in one turn of its event loop: one round trip for
-- all). The same rules as memory.py (one conformance suite runs both); the reservations of
-- one call are decided one after the other, exactly as separate calls would be.
-- Each counter is a hash at its key (field "c": committed usage, "r": total reserved, "d": the
-- debt taken over from the window before, one field per live reservation: rid -> amount) and
-- a sorted set key..":e" of reservation expiries (rid -> until).
-- ARGV: "rid actual commit_expires_ms ..." settling earlier requests first ("" for none:
-- settles ride along with the next reservation, so a request costs at most one round trip;
-- with no reservation, the call only settles), then for each reservation: now, rid, until,
-- "limit amount expires_ms carry ..." (one string per reservation, so the client encodes a
-- handful of arguments, not four per counter).
-- KEYS: for each settle, the reservation's key and the key to commit to (the window current
-- when the request ended); then for each reservation, for each of its counters, its key and
-- the key of the window before (the same key when nothing carries over).
-- Returns the number of settles that could not be applied (a key that is not one of ours:
-- dropped, not retried for ever), then for each reservation in turn: allowed (1/0), refused
-- index (1-based, 0 if none), used_1, ..., used_N — or, for one that failed the same way,
-- -1, the error, and N zeros. One bad key fails its own settle or reservation, not the
-- others sharing the call (their effects are kept: a script does not roll back). Any other
-- error (READONLY after a failover, OOM, ...) fails the whole call, as before: nothing was
-- written, and the client sends the settles again.
local function why(err)
  return type(err) == "table" and (err.err or "error") or tostring(err)
end
-- true for an error of one key's contents: another type (WRONGTYPE), a field that is not a
-- number (ERR ..., or a Lua error on the value read: "user_script:N: attempt to ...");
-- any other error is the server's (READONLY, OOM, ...): raised again, failing the call
local function of_key(err)
  local msg = why(err)
  if msg:sub(1, 9) == "WRONGTYPE" or msg:sub(1, 4) == "ERR " or
      msg:find("^user_script:%d+: ") then
    return true
  end
  error(err)
end
local k = 0  -- KEYS read so far
local s = {}
for v in string.gmatch(ARGV[1], "%S+") do s[#s + 1] = v end
local out = {0}
for j = 1, #s / 3 do
  local h, target = KEYS[k + 1], KEYS[k + 2]
  k = k + 2
  local ok, err = pcall(function()
    local old, actual = s[3*j-2], tonumber(s[3*j-1])
    local amount = redis.call('HGET', h, old)
    if amount then
      redis.call('HDEL', h, old)
      redis.call('HINCRBY', h, 'r', -tonumber(amount))
      redis.call('ZREM', h .. ':e', old)
    end
    if actual > 0 then
      redis.call('HINCRBY', target, 'c', actual)
      -- the window the reservation was made in already has its expiry (a reservation sets
      -- it where the counter may be new); a later window may be new here
      if target ~= h or not amount then
        redis.call('PEXPIREAT', target, tonumber(s[3*j]) + 60000)
      end
    end
  end)
  if not ok and of_key(err) then out[1] = out[1] + 1 end
end
for a = 2, #ARGV, 4 do  -- each reservation
  local spec = {}
  for v in string.gmatch(ARGV[a + 3], "%S+") do spec[#spec + 1] = tonumber(v) end
  local n = #spec / 4
  local ok, refused, used = pcall(function()
    local now, rid, until_ = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
    local used = {}
    local reserved = {}  -- each counter's "r" (in flight) before this reservation
    local refused = 0
    for i = 1, n do
      local h, before = KEYS[k + 2*i - 1], KEYS[k + 2*i]
      local e = h .. ":e"
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
      reserved[i] = tonumber(cdr[3] or '0')
      local total = tonumber(cdr[1] or '0') + tonumber(debt) + reserved[i]
      used[i] = total
      if refused == 0 and amount > 0 and total + amount > limit then refused = i end
    end
    if refused == 0 then
      for i = 1, n do
        local amount = spec[4*i-2]
        if amount > 0 then
          local h = KEYS[k + 2*i - 1]
          local e = h .. ":e"
          redis.call('HSET', h, rid, amount)
          redis.call('HINCRBY', h, 'r', amount)
          redis.call('ZADD', e, until_, rid)
          -- h got its expiry when it was first used (above: the field "d" is written then);
          -- e holds a member for each reservation in "r", so with none it was empty, that is
          -- gone, and ZADD made it anew
          if reserved[i] == 0 then
            redis.call('PEXPIREAT', e, spec[4*i-1] + 60000)
          end
        end
      end
    end
    return refused, used
  end)
  if ok then
    out[#out + 1] = refused == 0 and 1 or 0
    out[#out + 1] = refused
    for i = 1, n do out[#out + 1] = used[i] end
  elseif of_key(refused) then  -- (refused holds the error)
    out[#out + 1] = -1
    out[#out + 1] = why(refused)
    for _ = 1, n do out[#out + 1] = 0 end
  end
  k = k + 2 * n
end
return out
