-- wrk script: every request asks a different page of the article listing
-- (random skip), so a response cache cannot answer. COLD_MAX_SKIP bounds skip.
local max_skip = tonumber(os.getenv("COLD_MAX_SKIP") or "1000")
math.randomseed(os.time())

request = function()
  local skip = math.random(0, max_skip)
  return wrk.format("GET", "/api/optimized/articles?limit=20&skip=" .. skip)
end
