-- wrk script: every request creates a new article (a unique slug per thread
-- and request) with the editor key in BENCH_KEY.
local key = os.getenv("BENCH_KEY") or ""
local run = os.getenv("BENCH_RUN") or "r"
local counter = 0
local id = 0

setup = function(thread)
  id = id + 1
  thread:set("id", id)
end

request = function()
  counter = counter + 1
  local slug = "bench-" .. run .. "-" .. tostring(id) .. "-" .. tostring(counter)
  local body = '{"slug":"' .. slug .. '","title":"Bench","body":"Body text.","author":"Bench",'
    .. '"category":"tooling","status":"published"}'
  return wrk.format("POST", "/api/articles", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. key,
  }, body)
end
