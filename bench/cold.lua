-- wrk script: every request asks a different page of the article listing
-- (random limit 1..100 and skip 0..COLD_MAX_SKIP: over 500,000 distinct pages
-- on the demo data), so a response cache can answer almost none of them.
local max_skip = tonumber(os.getenv("COLD_MAX_SKIP") or "1000")
math.randomseed(os.time())

request = function()
  local limit = math.random(1, 100)
  local skip = math.random(0, max_skip)
  return wrk.format("GET", "/api/optimized/articles?limit=" .. limit .. "&skip=" .. skip)
end
