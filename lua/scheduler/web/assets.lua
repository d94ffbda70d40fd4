--- scheduler.web.assets: the dashboard's stylesheet and script, as Lua
-- strings, so that they ship inside the rock with the modules (no file to
-- find at run time, no CDN: the dashboard works offline).

local assets = {}

assets["app.css"] = [[
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #dde2e8; --bg: #f6f7f9; --accent: #2457c5;
  --bad: #b42318; --good: #067647; --warn: #b54708; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); }
header { display: flex; gap: 1.2em; align-items: center; padding: .6em 1.2em; background: #1d2330; color: #fff;
  flex-wrap: wrap; }
header a { color: #c9d6ff; text-decoration: none; }
header a.here { color: #fff; font-weight: 600; border-bottom: 2px solid #fff; }
header .brand { font-weight: 700; }
header .db { color: #aab4c3; font-size: 12px; margin-left: auto; overflow-wrap: anywhere; }
header .live { font-size: 12px; color: #aab4c3; }
#updated { font-size: 12px; color: #aab4c3; min-width: 6em; }
main { padding: 1em 1.2em; }
h1 { font-size: 20px; margin: .2em 0 .6em; }
h2 { font-size: 16px; margin: 1.2em 0 .4em; }
table.grid { border-collapse: collapse; background: #fff; border: 1px solid var(--line); width: 100%; }
table.grid th, table.grid td { padding: .35em .6em; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
table.grid th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
td.late { color: var(--warn); font-weight: 600; }
td.err, .err code { color: var(--bad); overflow-wrap: anywhere; }
table.fields { border-collapse: collapse; background: #fff; border: 1px solid var(--line); }
table.fields th { text-align: left; padding: .3em .8em; background: #eef1f5; white-space: nowrap; }
table.fields td { padding: .3em .8em; overflow-wrap: anywhere; }
pre { background: #fff; border: 1px solid var(--line); padding: .8em; overflow: auto; max-height: 30em;
  white-space: pre-wrap; overflow-wrap: anywhere; }
#error { color: var(--bad); }
.state { padding: 0 .4em; border-radius: 3px; background: #eef1f5; }
.state.failed { background: #fde7e5; color: var(--bad); }
.state.running { background: #e5edff; color: var(--accent); }
.state.done { background: #e3f5ea; color: var(--good); }
.badge { background: #fdead7; color: var(--warn); padding: 0 .5em; border-radius: 3px; font-size: 12px; }
form.inline { display: inline; margin: 0; }
button { font: inherit; padding: .15em .7em; border: 1px solid #b9c2cf; border-radius: 4px; background: #fff;
  cursor: pointer; }
button:hover { border-color: var(--accent); }
button.danger { color: var(--bad); }
form.search { margin: 0 0 1em; display: flex; gap: .8em; flex-wrap: wrap; align-items: center; }
form.search input { padding: .2em .4em; }
.flash { padding: .5em .8em; border-radius: 4px; }
.flash.ok { background: #e3f5ea; color: var(--good); }
.flash.error { background: #fde7e5; color: var(--bad); }
.note, .empty { color: var(--muted); }
.acts { white-space: nowrap; }
]]

-- Live refresh: every few seconds, while the tab is visible and the box is
-- ticked, fetch the same page and swap in its #live part.  DOMParser runs
-- no script of what it parses, and the server escaped every field.
assets["app.js"] = [[
"use strict";
(function () {
  var EVERY = 3000;
  function busy() {
    var a = document.activeElement;
    return a && a.closest && a.closest("#live") && (a.tagName === "INPUT" || a.tagName === "SELECT");
  }
  function tick() {
    var box = document.getElementById("live-toggle");
    if (document.body.dataset.live !== "1" || (box && !box.checked) || document.hidden || busy()) return;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (t) {
        var doc = new DOMParser().parseFromString(t, "text/html");
        var fresh = doc.getElementById("live"), here = document.getElementById("live");
        if (fresh && here) here.replaceChildren.apply(here, Array.from(fresh.childNodes).map(function (n) {
          return document.adoptNode(n);
        }));
        var u = document.getElementById("updated");
        if (u) u.textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch(function (e) {
        var u = document.getElementById("updated");
        if (u) u.textContent = "refresh failed (" + e + ")";
      });
  }
  setInterval(tick, EVERY);
})();
]]

assets.types = { ["app.css"] = "text/css; charset=utf-8", ["app.js"] = "text/javascript; charset=utf-8" }

return assets
