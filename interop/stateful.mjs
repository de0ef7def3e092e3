#!/usr/bin/env node
// Stateful reconnect with the official @microsoft/signalr client (withStatefulReconnect(), JSON
// and MessagePack) behind a TCP proxy that cuts the socket. Run by interop/stateful_test.go,
// which starts the nodes (--stateful-reconnect) and the proxy.
//
// Environment: HUBFABRIC_URL (node 1, direct), HUBFABRIC_PROXY_URL (the proxy, forwarding to node
// 1 and, after `resume?target=2`, to node 2), HUBFABRIC_PROXY_CTL (the proxy's control URL),
// HUBFABRIC_URL2 (node 2; enables the other-node scenarios: the resume lands there, and the connection moves), HUBFABRIC_HUB, JWT_SECRET,
// STATEFUL_BURST (messages sent during the gap, default 300), INTEROP_TIMEOUT_MS (default 15000).
// Output as scenarios.mjs: `ok ...` / `FAIL ...: reason` lines and `N passed, M failed`.

import { createRequire } from "node:module";
import { mintHS256, withTimeout as withTimeoutMs } from "./common.mjs";

const require = createRequire(import.meta.url);
const env = process.env;
const BASE = (env.HUBFABRIC_URL || "").replace(/\/+$/, "");
const BASE2 = (env.HUBFABRIC_URL2 || "").replace(/\/+$/, "");
const PROXY = (env.HUBFABRIC_PROXY_URL || "").replace(/\/+$/, "");
const CTL = (env.HUBFABRIC_PROXY_CTL || "").replace(/\/+$/, "");
const HUB = env.HUBFABRIC_HUB || "chat";
const WAIT_MS = Number(env.INTEROP_TIMEOUT_MS || 15000);
const BURST = Number(env.STATEFUL_BURST || 300);
const BACK = 50; // client-to-server messages sent during the gap
const SECRET = env.JWT_SECRET || "";

let passed = 0;
let failed = 0;
function done() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}
if (!/^https?:\/\//.test(BASE) || !/^https?:\/\//.test(PROXY) || !/^https?:\/\//.test(CTL)) {
  console.log("FAIL setup: set HUBFABRIC_URL, HUBFABRIC_PROXY_URL and HUBFABRIC_PROXY_CTL");
  failed++;
  done();
}
const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

function mint(sub) {
  if (!SECRET) return "";
  const now = Math.floor(Date.now() / 1000);
  return mintHS256(SECRET, { sub, iat: now, exp: now + 3600 });
}

const withTimeout = (p, what) => withTimeoutMs(p, WAIT_MS, what);

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

const open = [];
async function connect(base, protocol, user, stateful) {
  const tok = mint(user);
  const opts = { transport: signalR.HttpTransportType.WebSockets, timeout: WAIT_MS };
  if (tok) opts.accessTokenFactory = () => tok;
  let b = new signalR.HubConnectionBuilder()
    .withUrl(`${base}/hubs/${HUB}`, opts)
    .withHubProtocol(protocol === "json" ? new signalR.JsonHubProtocol() : new MessagePackHubProtocol())
    .configureLogging(signalR.LogLevel.None);
  if (stateful) b = b.withStatefulReconnect();
  const conn = b.build();
  conn.closedWith = undefined;
  conn.onclose((e) => (conn.closedWith = e || new Error("closed")));
  open.push(conn);
  await withTimeout(conn.start(), "start");
  const who = await withTimeout(conn.invoke("WhoAmI"), "WhoAmI");
  conn.id = who.connectionId;
  conn.nodeId = who.nodeId;
  return conn;
}

// collector records the arguments of target on conn and resolves waits for counts.
function collector(conn, target) {
  const got = [];
  let waiters = [];
  conn.on(target, (x) => {
    got.push(x);
    waiters = waiters.filter((w) => (got.length >= w.n ? (w.resolve(), false) : true));
  });
  return {
    got,
    wait(n, what) {
      if (got.length >= n) return Promise.resolve();
      return withTimeout(new Promise((resolve) => waiters.push({ n, resolve })), `${what}: ${got.length} of ${n} arrived`);
    },
  };
}

async function ctl(path) {
  const r = await fetch(`${CTL}${path}`, { method: "POST" });
  expect(r.ok, `proxy ${path}: ${r.status}`);
}

function checkSequence(got, from, n, what) {
  expect(got.length === n, `${what}: ${got.length} messages, want ${n}`);
  for (let i = 0; i < n; i++) {
    if (got[i] !== from + i) {
      const dup = got.filter((v) => v === got[i]).length > 1;
      throw new Error(`${what}: message ${i} is ${got[i]}, want ${from + i} (${dup ? "a duplicate" : "out of order or lost"})`);
    }
  }
}

async function scenario(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
    passed++;
  } catch (e) {
    console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
    failed++;
  }
  await ctl("/resume?target=1").catch(() => {});
  await Promise.all(open.splice(0).map((c) => c.stop().catch(() => {})));
}

// gap cuts the receiver's socket, holds its reconnect, runs during(), then lets the reconnect
// through to target.
async function gap(target, during) {
  await ctl("/cut?hold=1");
  await during();
  await ctl(`/resume?target=${target}`);
}

const targets = [[1, "same node"]];
if (BASE2) targets.push([2, "other node"]);

for (const protocol of ["json", "messagepack"]) {
  for (const [target, where] of targets) {
    await scenario(`${protocol} ${where}: a burst sent during the gap arrives complete, once, in order`, async () => {
      const receiver = await connect(PROXY, protocol, "alice", true);
      const sender = await connect(BASE, protocol, "bob", false);
      const burst = collector(receiver, "burst");
      const back = collector(sender, "back");
      // Before the cut.
      for (let i = 0; i < 10; i++) await sender.invoke("SendToConnection", receiver.id, "burst", i);
      await burst.wait(10, "before the cut");
      await gap(target, async () => {
        // The node accepted each of these while the receiver had no socket.
        for (let i = 10; i < 10 + BURST; i++) await withTimeout(sender.invoke("SendToConnection", receiver.id, "burst", i), `send ${i}`);
        // The receiver's own sends while it is cut off: its client buffers and resends them.
        for (let j = 0; j < BACK; j++) receiver.send("SendToConnection", sender.id, "back", j).catch(() => {});
      });
      await burst.wait(10 + BURST, "the burst");
      await back.wait(BACK, "the receiver's sends");
      // And after: the connection goes on, and nothing more arrives than was sent.
      await withTimeout(sender.invoke("SendToConnection", receiver.id, "burst", 10 + BURST), "send after");
      await burst.wait(11 + BURST, "after the reconnect");
      const who = await withTimeout(receiver.invoke("WhoAmI"), "WhoAmI after");
      expect(who.connectionId === receiver.id, `connection id changed: ${who.connectionId} != ${receiver.id}`);
      if (target === 2) expect(who.nodeId !== receiver.nodeId, `still on node ${who.nodeId}: the proxy did not move it`);
      await withTimeout(sender.invoke("SendToConnection", receiver.id, "burst", -1), "barrier");
      await burst.wait(12 + BURST, "barrier");
      checkSequence(burst.got.slice(0, 11 + BURST), 0, 11 + BURST, "receiver");
      expect(burst.got.length === 12 + BURST && burst.got[11 + BURST] === -1, `receiver got ${burst.got.length - 12 - BURST} extra messages`);
      checkSequence(back.got, 0, BACK, "sender");
      expect(receiver.closedWith === undefined, `the receiver's connection closed: ${receiver.closedWith}`);
    });
  }
}

done();
