-- Requests that use a session up, from TOKENS lines "accessToken refreshToken":
--   wrk ... -s sessions.lua URL -- refresh|logout TOKENS FIRST COUNT
-- logout: each request logs one session out (COUNT must cover the run).
-- refresh: each request presents a refresh token once, then queues the rotated pair from the
-- response for a later request, so COUNT = 2 x connections keeps every connection busy.
local mode, queue, head, tail = nil, {}, 1, 0
local json = {["Content-Type"] = "application/json"}

function init(args)
  mode = args[1]
  local first, count, i = tonumber(args[3]), tonumber(args[4]), 0
  for line in io.lines(args[2]) do
    i = i + 1
    if i > first + count then break end
    if i > first then
      local access, refresh = line:match("(%S+) (%S+)")
      tail = tail + 1
      queue[tail] = {access, refresh}
    end
  end
end

function request()
  local pair = queue[head]
  if pair == nil then  -- out of sessions: an invalid request, counted as an error
    return wrk.format("POST", nil, json, "{}")
  end
  queue[head] = nil
  head = head + 1
  if mode == "logout" then
    return wrk.format("POST", nil, {
      ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. pair[1],
    }, "{}")
  end
  return wrk.format("POST", nil, json, string.format(
    '{"accessToken":"%s","refreshToken":"%s"}', pair[1], pair[2]))
end

function response(status, headers, body)
  if mode == "refresh" and status == 200 then
    local access = body:match('"accessToken":"([^"]+)"')
    local refresh = body:match('"refreshToken":"([^"]+)"')
    tail = tail + 1
    queue[tail] = {access, refresh}
  end
end
