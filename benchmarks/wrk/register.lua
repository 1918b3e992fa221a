-- A new user per request: wrk ... -s register.lua URL -- PREFIX PASSWORD
local prefix, password, n = "", "", 0

function init(args)
  prefix, password = args[1], args[2]
end

function request()
  n = n + 1
  local body = string.format(
    '{"user":{"username":"%s%d","password":"%s"}}', prefix, n, password)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
