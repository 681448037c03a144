-- wrk script of the cluster benchmark (benchmarks/cluster/wrk.py runs it).
--
-- wrk ... -s load.lua URL -- API OP PREFIX NKEYS QUOTA
--   API    rest: PUT/GET /v1/kv/{key} (raftdb, PySyncObj server, trivial apps)
--          etcd: POST /v3/kv/put, /v3/kv/range (etcd's HTTP/JSON gateway, base64)
--   OP     put:   a new key per request, 100-byte value
--          get:   linearizable read of an existing key (etcd: default range)
--          stale: local read (rest: ?consistency=stale; etcd: serializable range)
--          txn:   (rest only) POST /v1/txn, a transfer: two preloaded keys exist ->
--                 put both (100-byte values)
--          audit: (rest only) POST /v1/txn of two gets of preloaded keys
--   PREFIX keys of put are PREFIX-<thread>-<n>, unique per wrk process and thread
--   NKEYS  reads cycle over the preloaded keys r000000 .. r<NKEYS-1>
--   QUOTA  > 0: each thread stops after that many answers (the memory run)
-- done() prints one line "WRKJSON {...}": counts, errors and latency percentiles.

local counter = 0
local answered = 0
local api, op, prefix, nkeys, quota
local value = string.rep("v", 100)
local b64value
local next_id = 0

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  local n = #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(v / 262144) % 64
    local c2 = math.floor(v / 4096) % 64
    local c3 = math.floor(v / 64) % 64
    local c4 = v % 64
    out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1) .. alphabet:sub(c2 + 1, c2 + 1)
      .. (b and alphabet:sub(c3 + 1, c3 + 1) or "=")
      .. (c and alphabet:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end

function init(args)
  api, op, prefix = args[1], args[2], args[3]
  nkeys = tonumber(args[4]) or 1
  quota = tonumber(args[5]) or 0
  b64value = b64(value)
  -- threads start their read cycles at different keys
  counter = ((tid or 1) - 1) * 7919
  if quota > 0 then
    response = function(status, headers, body)
      answered = answered + 1
      if answered >= quota then
        wrk.thread:stop()
      end
    end
  end
end

local function key_for()
  counter = counter + 1
  if op == "put" then
    return prefix .. "-" .. (tid or 1) .. "-" .. counter
  end
  return string.format("r%06d", counter % nkeys)
end

local json_headers = {["Content-Type"] = "application/json"}

-- Two distinct preloaded keys (with NKEYS > 1), for a transaction.
local function pair()
  counter = counter + 1
  local a = counter % nkeys
  local b = (a + 1 + math.floor(nkeys / 2)) % nkeys
  return string.format("r%06d", a), string.format("r%06d", b)
end

local function txn_request()
  local a, b = pair()
  local body
  if op == "txn" then
    body = '{"compare":[{"key":"' .. a .. '","target":"exists","op":"==","value":true},' ..
      '{"key":"' .. b .. '","target":"exists","op":"==","value":true}],' ..
      '"success":[{"op":"put","key":"' .. a .. '","value":"' .. value .. '"},' ..
      '{"op":"put","key":"' .. b .. '","value":"' .. value .. '"}]}'
  else
    body = '{"success":[{"op":"get","key":"' .. a .. '"},{"op":"get","key":"' .. b .. '"}]}'
  end
  return wrk.format("POST", "/v1/txn", json_headers, body)
end

function request()
  if op == "txn" or op == "audit" then
    return txn_request()
  end
  local key = key_for()
  if api == "etcd" then
    if op == "put" then
      return wrk.format("POST", "/v3/kv/put", nil,
        '{"key":"' .. b64(key) .. '","value":"' .. b64value .. '"}')
    elseif op == "stale" then
      return wrk.format("POST", "/v3/kv/range", nil,
        '{"key":"' .. b64(key) .. '","serializable":true}')
    end
    return wrk.format("POST", "/v3/kv/range", nil, '{"key":"' .. b64(key) .. '"}')
  end
  if op == "put" then
    return wrk.format("PUT", "/v1/kv/" .. key, nil, value)
  elseif op == "stale" then
    return wrk.format("GET", "/v1/kv/" .. key .. "?consistency=stale", nil, nil)
  end
  return wrk.format("GET", "/v1/kv/" .. key, nil, nil)
end

function done(summary, latency, requests)
  local e = summary.errors
  local points = {}
  local p = 0.5
  while p <= 99.5 do
    points[#points + 1] = string.format('"%.1f":%d', p, latency:percentile(p))
    p = p + 0.5
  end
  for _, q in ipairs({99.9, 99.99}) do
    points[#points + 1] = string.format('"%.2f":%d', q, latency:percentile(q))
  end
  points[#points + 1] = string.format('"100":%d', latency.max)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"mean_us":%.1f,"percentiles_us":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, table.concat(points, ",")))
end
