-- webtest/attacker.lua: the other site of make test-web's CSRF check.  A
-- lua-http server on 127.0.0.1 (a free port) whose page /?target=URL
-- posts a form to URL as soon as it loads (a cross-site request forgery:
-- the browser holds a session of the dashboard at URL).  Prints
-- "listening on http://127.0.0.1:PORT/"; stopped by its pid (SIGTERM).
local web = dofile((arg[0]:match("^(.*)/") or ".") .. "/../lua/scheduler/web.lua")
web.use_lua_http()
local http_server = require "http.server"
local http_headers = require "http.headers"

local function attr(s)
  return (s:gsub("[&<>\"']", function(c) return ("&#%d;"):format(c:byte()) end))
end

local server = assert(http_server.listen {
  host = "127.0.0.1", port = 0, tls = false,
  onstream = function(_, stream)
    local req = stream:get_headers()
    if not req then return end
    local query = (req:get(":path")):match("%?(.*)$") or ""
    local target = web.parse_query(query).target or "/"
    local body = ('<!DOCTYPE html><html><head><title>Win a prize</title></head><body>'
      .. '<form method="POST" action="%s"><input name="csrf" value="0000"><input name="back" value="/"></form>'
      .. '<script>document.forms[0].submit()</script></body></html>'):format(attr(target))
    local h = http_headers.new()
    h:append(":status", "200")
    h:append("content-type", "text/html; charset=utf-8")
    assert(stream:write_headers(h, false))
    assert(stream:write_chunk(body, true))
  end,
})
assert(server:listen())
local _, _, port = server:localname()
io.stdout:write(("listening on http://127.0.0.1:%d/\n"):format(port))
io.stdout:flush()
assert(server:loop())
