// Preloaded with NODE_OPTIONS=--require: the MCP reference servers listen on every interface,
// and tests must only ever listen on 127.0.0.1. Rewrites every TCP listen to loopback and reports
// the port the kernel assigned, so tests can run the server with PORT=0.
"use strict";
const net = require("net");

const originalListen2 = net.Server.prototype._listen2;
net.Server.prototype._listen2 = function (address, port, addressType, backlog, fd, flags) {
  if (fd === undefined || fd === null || fd < 0) {
    address = "127.0.0.1";
    addressType = 4;
  }
  return originalListen2.call(this, address, port, addressType, backlog, fd, flags);
};

const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  this.once("listening", () => {
    const a = this.address();
    if (a && typeof a === "object") {
      process.stderr.write(`CHATD_LISTENING ${a.address} ${a.port}\n`);
    }
  });
  return originalListen.apply(this, args);
};
