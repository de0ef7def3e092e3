#!/usr/bin/env node
// Echo latency per transport and protocol: the official client forced to each transport invokes
// Echo("x") COUNT times in a row (after 100 warm-up calls) and the median, p90 and p99 of the
// round trips are printed, one line per transport and protocol.
//
//   node interop/latency.mjs http://127.0.0.1:8080/hubs/chat [COUNT]
//
// Against a round-robin proxy (scripts/rrproxy) in front of two nodes, each request of a
// long-polling or SSE client goes to the other node than the one before, so every Echo crosses
// nodes (a WebSocket stays on the node it was opened on, its negotiate on the other).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

const url = process.argv[2];
const count = Number(process.argv[3] || 1000);
if (!url) {
  console.error("usage: node interop/latency.mjs HUB_URL [COUNT]");
  process.exit(2);
}
const T = signalR.HttpTransportType;
const runs = [
  ["WebSockets", T.WebSockets, "json"],
  ["WebSockets", T.WebSockets, "messagepack"],
  ["ServerSentEvents", T.ServerSentEvents, "json"],
  ["LongPolling", T.LongPolling, "json"],
  ["LongPolling", T.LongPolling, "messagepack"],
];
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
for (const [name, transport, proto] of runs) {
  const conn = new signalR.HubConnectionBuilder()
    .withUrl(url, { transport })
    .withHubProtocol(proto === "json" ? new signalR.JsonHubProtocol() : new MessagePackHubProtocol())
    .configureLogging(signalR.LogLevel.Warning)
    .build();
  await conn.start();
  for (let i = 0; i < 100; i++) await conn.invoke("Echo", "x");
  const ms = [];
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    await conn.invoke("Echo", "x");
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await conn.stop();
  ms.sort((a, b) => a - b);
  console.log(`${name.padEnd(17)} ${proto.padEnd(12)} n=${count} median ${pct(ms, 50).toFixed(3)} ms  p90 ${pct(ms, 90).toFixed(3)} ms  p99 ${pct(ms, 99).toFixed(3)} ms`);
}
