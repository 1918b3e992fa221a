-- A fixed JSON POST: wrk ... -s post.lua URL -- BODY
function init(args)
  wrk.method = "POST"
  wrk.body = args[1]
  wrk.headers["Content-Type"] = "application/json"
end
