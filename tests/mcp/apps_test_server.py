"""A real MCP server with an MCP App (io.modelcontextprotocol/ui), for the client, API and
browser tests: `roll` names the view `ui://dice/view`; `tally` is app-only (the model never sees
it); `model_note` is model-only (a view may not call it).

The view speaks the extension's postMessage JSON-RPC by hand (no SDK): it initialises, shows the
tool's input and result when the host sends them, then calls `tally` and `model_note` through the
host and shows both answers. It also reports whether it can reach its parent's DOM or storage
(it must not: the frame is sandboxed without same-origin).

Run as a stdio server: `python apps_test_server.py`.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

VIEW_URI = "ui://dice/view"
APP_MIME = "text/html;profile=mcp-app"

VIEW_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Dice</title>
<style>body{font:14px sans-serif;margin:8px;color:#123} p{margin:4px 0}</style></head>
<body>
<h1 style="font-size:16px">Dice app</h1>
<p id="handshake">handshake: pending</p>
<p id="input">input: none</p>
<p id="result">result: none</p>
<p id="tally">tally: none</p>
<p id="model-only">model-only: none</p>
<p id="isolation">isolation: unknown</p>
<script>
var next = 1, waiting = {};
function request(method, params) {
  var id = next++;
  parent.postMessage({jsonrpc: "2.0", id: id, method: method, params: params}, "*");
  return new Promise(function (resolve, reject) { waiting[id] = {resolve: resolve, reject: reject}; });
}
function notify(method, params) { parent.postMessage({jsonrpc: "2.0", method: method, params: params}, "*"); }
function show(id, text) { document.getElementById(id).textContent = text; }
function textOf(result) { return (result.content || []).map(function (c) { return c.text || ""; }).join(" "); }
window.addEventListener("message", function (ev) {
  var m = ev.data || {};
  if (m.id !== undefined && waiting[m.id]) {
    var w = waiting[m.id]; delete waiting[m.id];
    if (m.error) w.reject(m.error); else w.resolve(m.result);
    return;
  }
  if (m.method === "ui/notifications/tool-input") show("input", "input: " + JSON.stringify(m.params.arguments));
  if (m.method === "ui/notifications/tool-result") {
    show("result", "result: " + textOf(m.params));
    request("tools/call", {name: "tally", arguments: {by: 2}})
      .then(function (r) { show("tally", "tally: " + textOf(r)); }, function (e) { show("tally", "tally error: " + e.message); });
    request("tools/call", {name: "model_note", arguments: {}})
      .then(function (r) { show("model-only", "model-only: allowed " + textOf(r)); }, function (e) { show("model-only", "model-only refused: " + e.code); });
  }
});
var reached = [];
try { reached.push("dom:" + parent.document.title); } catch (e) { }
try { reached.push("storage:" + localStorage.length); } catch (e) { }
try { reached.push("cookie:" + document.cookie); } catch (e) { }
show("isolation", reached.length ? "isolation: REACHED " + reached.join(",") : "isolation: parent and storage unreachable");
request("ui/initialize", {appInfo: {name: "dice", version: "1"}, appCapabilities: {}, protocolVersion: "2026-01-26"})
  .then(function (r) {
    show("handshake", "handshake: " + r.hostInfo.name + " " + r.protocolVersion + " tool " + r.hostContext.toolInfo.tool.name);
    notify("ui/notifications/initialized", {});
    notify("ui/notifications/size-changed", {height: document.body.scrollHeight + 16});
  });
</script>
</body></html>
"""


def build_server() -> MCPServer:
    srv = MCPServer("apps-test-server")
    tallied = {"total": 0}

    @srv.tool(meta={"ui": {"resourceUri": VIEW_URI}})
    def roll(sides: int) -> str:
        """Roll a die and show it in the dice app."""
        return f"rolled {max(1, sides // 2)} of {sides}"

    @srv.tool(meta={"ui": {"resourceUri": VIEW_URI, "visibility": ["app"]}})
    def tally(by: int) -> str:
        """Add to the app's running tally (the app's own tool)."""
        tallied["total"] += by
        return f"total {tallied['total']}"

    @srv.tool(meta={"ui": {"visibility": ["model"]}})
    def model_note() -> str:
        """A tool only the model may call."""
        return "a note for the model"

    @srv.resource(VIEW_URI, name="dice_view", mime_type=APP_MIME)
    def view() -> str:
        return VIEW_HTML

    return srv


if __name__ == "__main__":
    build_server().run("stdio")
