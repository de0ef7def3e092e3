#!/usr/bin/env node
// Interop scenarios: the official @microsoft/signalr client (and its MessagePack protocol) against
// a running hubfabric node's relay hub. Run by interop/interop_test.go, or by hand:
//
//   npm ci                                   # at the repository root, once
//   go run ./cmd/node --jwt-secret s3cret --hub chat,lobby --group-ack-timeout 1s &
//   HUBFABRIC_URL=http://127.0.0.1:8080 JWT_SECRET=s3cret HUBFABRIC_HUB2=lobby node interop/scenarios.mjs
//
// Every scenario runs once per protocol and prints exactly one line, `ok <protocol> <name>` or
// `FAIL <protocol> <name>: <reason>` (followed, on failure only, by the client's own warnings,
// indented); the last line is `N passed, M failed`; the exit status is 0 only when M == 0.
//
// Configuration (environment; the URL may also be the first argument):
//   HUBFABRIC_URL        base URL of the node, e.g. http://127.0.0.1:8080 (required)
//   HUBFABRIC_HUB        hub name served at /hubs/NAME (default chat)
//   HUBFABRIC_HUB2       a second hub of the same node; enables the hub-isolation scenario
//   HUBFABRIC_NODE_ID    when set, WhoAmI's nodeId must equal it
//   JWT_SECRET           HS256 secret of the node; the script mints any token not given below
//   TOKEN_ALICE, TOKEN_ALICE2 (both sub=alice), TOKEN_BOB (sub=bob): valid tokens
//   TOKEN_EXPIRED, TOKEN_BADSIG, TOKEN_NONE_ALG: tokens the node must refuse
//   INTEROP_PROTOCOLS    comma-separated subset of json,messagepack (default both)
//   INTEROP_ONLY         regular expression; runs only the scenarios whose name matches
//   INTEROP_TIMEOUT_MS   bound of every single wait (default 10000)
//   INTEROP_TRANSPORT    websockets (default), longpolling or serversentevents: the `transport`
//                        option every connection is forced to (skipNegotiation ones stay on
//                        WebSockets, the only transport that allows it); serversentevents needs
//                        INTEROP_PROTOCOLS=json (the client never uses SSE with MessagePack)
// The node must run with --jwt-secret (the user scenarios need user ids) and a short
// --group-ack-timeout (the non-existent-connection scenario waits for it; 1s is good).
//
// Several nodes on one backplane (the "two nodes:" and "prefix isolation:" scenarios):
//   HUBFABRIC_URL2       base URL of a second node on the same Redis with the same channel prefix
//                        and the same --token-secret; enables the cross-node scenarios, where the
//                        clients of one scenario are split across the nodes (typically A on node 1,
//                        B and C on node 2) and every route is checked across them
//   HUBFABRIC_NODE_ID2   when set, WhoAmI's nodeId on node 2 must equal it (without it, node 1 and
//                        node 2 must merely report different node ids, unless the URLs are equal)
//   HUBFABRIC_URL3       base URL of a node on the same Redis with a DIFFERENT channel prefix;
//                        enables the prefix-isolation scenarios (needs HUBFABRIC_URL2 too)
//   HUBFABRIC_GROUP_ACK_TIMEOUT_MS  the nodes' --group-ack-timeout; when set, AddToGroup of a
//                        connection no node has must take at least about that long to reject
//   INTEROP_ORDER_COUNT  messages per sender in the in-order scenarios (default 500)
// The same nodes serve the single-node scenarios too (against HUBFABRIC_URL). For a quick check of
// the script without a backplane, HUBFABRIC_URL2 may equal HUBFABRIC_URL.
//
// How "nobody else got it" is checked without sleeping
// ----------------------------------------------------
// A Send* scenario registers a handler for its (unique) target on EVERY client of the scenario,
// recipients and non-recipients alike. After the sends complete (the server accepted them):
//   1. it waits (bounded) until every recipient has received every message meant for it, so the
//      server has made its routing decision and fanned the messages out;
//   2. then a barrier on EVERY client: an Echo round trip, followed by SendToConnection(<itself>,
//      "__barrier", nonce) and a wait until that nonce arrives. A wrongly routed copy (to a
//      non-recipient, or a duplicate to a recipient) that was already queued for that connection
//      when the barrier went in is written to the socket before the barrier: whatever the route
//      (group, user, all), everything for one connection leaves through that connection's single
//      ordered outbound queue, which the SignalR protocol needs anyway (results, stream items
//      and invocations of one connection are ordered).
//   3. only then are the received lists compared with the expectation: each recipient got each
//      message exactly once with exactly the arguments sent; every other client got nothing.
// A marker over the very same route is not always possible (a non-member cannot be reached through
// the group it is not in), and ordering across different routes is not promised, so the barrier
// goes through the target connection's own queue instead. The residual window (a misrouted copy
// still travelling between the router and the connection queue after the correctly routed copies
// have crossed the network to their recipients) is far smaller than the round trips involved.
// Message lists are compared as multisets: the contract promises delivery once, not an order across
// separate invocations.
//
// Stream cancellation is the one place where time is waited on purpose: after
// subscription.dispose() the suite waits (bounded) for a quiet period of many stream intervals,
// which an uncancelled stream (an item every 20ms for minutes) can never produce. Items are
// counted on the wire through a protocol wrapper (TapProtocol), since the client itself drops
// items that arrive after dispose().
//
// Everything waited on is bounded by INTEROP_TIMEOUT_MS (a scenario as a whole by 6x that), and a
// timed-out wait fails the scenario; every connection a scenario opened is stopped (bounded) before
// the next one starts.

import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";
import { isDeepStrictEqual, inspect } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { b64url, mintHS256, withTimeout } from "./common.mjs";

const require = createRequire(import.meta.url);

// ---------------------------------------------------------------- configuration

const env = process.env;
const BASE = (process.argv[2] || env.HUBFABRIC_URL || "").replace(/\/+$/, "");
const HUB = env.HUBFABRIC_HUB || "chat";
const HUB2 = env.HUBFABRIC_HUB2 || "";
const NODE_ID = env.HUBFABRIC_NODE_ID || "";
const BASE2 = (env.HUBFABRIC_URL2 || "").replace(/\/+$/, "");
const BASE3 = (env.HUBFABRIC_URL3 || "").replace(/\/+$/, "");
const NODE_ID2 = env.HUBFABRIC_NODE_ID2 || "";
const BASES = { 1: BASE, 2: BASE2, 3: BASE3 };
const ACK_TIMEOUT_MS = Number(env.HUBFABRIC_GROUP_ACK_TIMEOUT_MS || 0);
const ORDER_COUNT = Number(env.INTEROP_ORDER_COUNT || 500);
const WAIT_MS = Number(env.INTEROP_TIMEOUT_MS || 10000);
const SCENARIO_MS = WAIT_MS * 6;
const STOP_MS = 5000;
const PROTOCOLS = (env.INTEROP_PROTOCOLS || "json,messagepack").split(",").map((s) => s.trim()).filter(Boolean);
const ONLY = env.INTEROP_ONLY ? new RegExp(env.INTEROP_ONLY) : null;
const BARRIER = "__barrier";
const TRANSPORT_NAME = (env.INTEROP_TRANSPORT || "websockets").toLowerCase();

let passed = 0;
let failed = 0;

function summaryAndExit() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

if (!BASE || !/^https?:\/\//.test(BASE)) {
  console.log(`FAIL setup: no server URL: set HUBFABRIC_URL=http://host:port or pass it as the first argument`);
  failed++;
  summaryAndExit();
}
for (const [what, url] of [["HUBFABRIC_URL2", BASE2], ["HUBFABRIC_URL3", BASE3]]) {
  if (url && !/^https?:\/\//.test(url)) {
    console.log(`FAIL setup: ${what}=${JSON.stringify(url)} is no http(s) URL`);
    failed++;
    summaryAndExit();
  }
}
if (BASE3 && !BASE2) {
  console.log(`FAIL setup: HUBFABRIC_URL3 (prefix isolation) needs HUBFABRIC_URL2`);
  failed++;
  summaryAndExit();
}
for (const p of PROTOCOLS) {
  if (p !== "json" && p !== "messagepack") {
    console.log(`FAIL setup: unknown protocol ${JSON.stringify(p)} in INTEROP_PROTOCOLS (json, messagepack)`);
    failed++;
    summaryAndExit();
  }
}

// The packages are CommonJS (their "main"); loading them through require keeps the client's
// Node code paths (it picks the `ws` package and fetch-cookie only when `require` exists).
let signalR, MessagePackHubProtocol;
try {
  signalR = require("@microsoft/signalr");
  ({ MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack"));
} catch (e) {
  console.log(`FAIL setup: cannot load the SignalR client packages (run \`npm ci\` at the repository root): ${e.message.split("\n")[0]}`);
  failed++;
  summaryAndExit();
}
const { LogLevel, HttpTransportType, HubConnectionState, MessageType } = signalR;
const TRANSPORTS = {
  websockets: HttpTransportType.WebSockets,
  longpolling: HttpTransportType.LongPolling,
  serversentevents: HttpTransportType.ServerSentEvents,
};
const TRANSPORT = TRANSPORTS[TRANSPORT_NAME];
if (TRANSPORT === undefined) {
  console.log(`FAIL setup: unknown INTEROP_TRANSPORT ${JSON.stringify(TRANSPORT_NAME)} (websockets, longpolling, serversentevents)`);
  failed++;
  summaryAndExit();
}

// ---------------------------------------------------------------- tokens


const now = Math.floor(Date.now() / 1000);
const SECRET = env.JWT_SECRET || "";
const mint = (claims) => (SECRET ? mintHS256(SECRET, { iat: now, ...claims }) : "");
const TOKENS = {
  alice: env.TOKEN_ALICE || mint({ sub: "alice", exp: now + 3600 }),
  alice2: env.TOKEN_ALICE2 || mint({ sub: "alice", exp: now + 3600, jti: "second" }),
  bob: env.TOKEN_BOB || mint({ sub: "bob", exp: now + 3600 }),
  expired: env.TOKEN_EXPIRED || mint({ sub: "alice", iat: now - 7200, exp: now - 3600 }),
  badsig: env.TOKEN_BADSIG || (SECRET ? mintHS256(SECRET + "-wrong", { sub: "alice", exp: now + 3600 }) : ""),
  nonealg: env.TOKEN_NONE_ALG || b64url({ alg: "none", typ: "JWT" }) + "." + b64url({ sub: "alice", exp: now + 3600 }) + ".",
};
const USER_OF = { alice: "alice", alice2: "alice", bob: "bob" };

function token(name) {
  const tok = TOKENS[name];
  if (!tok) throw new Error(`no token for ${name}: set JWT_SECRET (and run the node with --jwt-secret) or TOKEN_${name.toUpperCase()}`);
  return tok;
}

// ---------------------------------------------------------------- helpers

function fmt(v) {
  return inspect(v, { depth: 8, breakLength: Infinity, compact: true });
}

function errText(e) {
  if (e instanceof Error) {
    // fetch failures hide their reason in cause (ECONNREFUSED, ...)
    const cause = e.cause ? ` (${e.cause instanceof Error ? e.cause.message || e.cause.code : String(e.cause)})` : "";
    return e.message + cause;
  }
  return String(e);
}

class AssertionError extends Error {}

function check(cond, message) {
  if (!cond) throw new AssertionError(typeof message === "function" ? message() : message);
}

function checkEqual(got, want, what) {
  check(isDeepStrictEqual(got, want), () => `${what}: got ${fmt(got)}, want ${fmt(want)}`);
}


// rejection awaits promise (bounded) and returns its rejection; fulfilment fails the check.
async function rejection(promise, what) {
  let value;
  try {
    value = await withTimeout(promise, WAIT_MS, what);
  } catch (e) {
    if (/^timed out after/.test(errText(e))) throw e;
    return e;
  }
  throw new AssertionError(`${what}: expected an error, got result ${fmt(value)}`);
}

// multiset comparison of argument lists
function sortedArgs(list) {
  return list.map((a) => [JSON.stringify(a), a]).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)).map((x) => x[1]);
}

// BufferLogger collects the client's warnings and errors; they are printed only when the
// scenario fails (the same threshold as configureLogging(LogLevel.Warning)).
class BufferLogger {
  constructor(sink, name) {
    this.sink = sink;
    this.name = name;
  }
  log(level, message) {
    if (level >= LogLevel.Warning && level !== LogLevel.None) {
      this.sink.push(`[${this.name}] ${LogLevel[level]}: ${message}`);
    }
  }
}

// TapProtocol wraps the real protocol object (it implements the public IHubProtocol interface) and
// records what crosses the wire, so a test can see stream items the client drops after dispose().
class TapProtocol {
  constructor(inner) {
    this.inner = inner;
    this.name = inner.name;
    this.version = inner.version;
    this.transferFormat = inner.transferFormat;
    this.streamItems = new Map(); // invocationId -> [{item, at}]
    this.completions = new Map(); // invocationId -> message
    this.sentStreamInvocations = []; // {invocationId, target}
    this.sentCompletions = 0; // Completion messages the client wrote (the ends of its uploads)
  }
  parseMessages(input, logger) {
    const messages = this.inner.parseMessages(input, logger);
    const at = Date.now();
    for (const m of messages) {
      if (m.type === MessageType.StreamItem) {
        if (!this.streamItems.has(m.invocationId)) this.streamItems.set(m.invocationId, []);
        this.streamItems.get(m.invocationId).push({ item: m.item, at });
      } else if (m.type === MessageType.Completion) {
        this.completions.set(m.invocationId, m);
      }
    }
    return messages;
  }
  writeMessage(message) {
    if (message.type === MessageType.StreamInvocation) {
      this.sentStreamInvocations.push({ invocationId: message.invocationId, target: message.target });
    }
    const out = this.inner.writeMessage(message);
    if (message.type === MessageType.Completion) {
      this.sentCompletions++;
      if (this.onWrite) queueMicrotask(this.onWrite); // after the client queued the send
    }
    return out;
  }
}

// Client is one HubConnection plus what it received, per (lower-cased) target.
class Client {
  constructor(t, name, conn, tap) {
    this.t = t;
    this.name = name;
    this.conn = conn;
    this.tap = tap;
    tap.onWrite = () => this.notify();
    this.id = null;
    this.inbox = new Map();
    this.waiters = new Set();
    this.closedWith = undefined; // set to {error} when onclose fires
    this.stopping = false;
    conn.onclose((error) => {
      this.closedWith = { error };
      this.notify();
    });
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  // waitFor resolves when cond() holds, re-checked on every received message; bounded.
  waitFor(cond, what, ms = WAIT_MS) {
    if (cond()) return Promise.resolve();
    let waiter;
    const p = new Promise((resolve) => {
      waiter = () => {
        if (cond()) resolve();
      };
      this.waiters.add(waiter);
    });
    return withTimeout(p, ms, `${this.name}: ${what}`).finally(() => this.waiters.delete(waiter));
  }

  listen(target) {
    const key = target.toLowerCase();
    if (this.inbox.has(key)) return;
    this.inbox.set(key, []);
    this.conn.on(target, (...args) => {
      this.inbox.get(key).push(args);
      this.notify();
    });
  }

  got(target) {
    return this.inbox.get(target.toLowerCase()) || [];
  }

  invoke(method, ...args) {
    return withTimeout(this.conn.invoke(method, ...args), WAIT_MS, `${this.name}: invoke ${method}`);
  }
}

// T is one scenario run: its protocol, its connections, its client log.
class T {
  constructor(protocol, scenario) {
    this.protocol = protocol;
    this.scenario = scenario;
    this.clients = [];
    this.logs = [];
    this.uid = `${protocol}-${scenario.replace(/[^a-z0-9]+/gi, "-")}-${randomUUID().slice(0, 8)}`;
    this.asyncErrors = [];
  }

  name(what) {
    return `${what}-${this.uid}`;
  }

  // hubUrl: node is 1, 2 or 3 (HUBFABRIC_URL, _URL2, _URL3).
  hubUrl(hub = HUB, node = 1) {
    const base = BASES[node];
    if (!base) throw new Error(`no URL for node ${node}`);
    return `${base}/hubs/${hub}`;
  }

  newProtocol() {
    return this.protocol === "json" ? new signalR.JsonHubProtocol() : new MessagePackHubProtocol();
  }

  // build makes (but does not start) a connection. user: a TOKENS key or null (no token);
  // tokenVia: "factory" (accessTokenFactory) or "query" (?access_token= in the URL); node: which
  // node's URL (1, 2, 3); query: extra query string (without "?") appended to the hub URL.
  build({ name, user = "alice", rawToken, skipNegotiation = false, hub = HUB, tokenVia = "factory", node = 1, query = "" } = {}) {
    const tok = rawToken !== undefined ? rawToken : user ? token(user) : "";
    let url = this.hubUrl(hub, node);
    if (query) url += `?${query}`;
    // timeout bounds the client's HTTP requests (negotiate; default 100s), so that stop() of a
    // connection stuck in negotiation returns.
    const opts = { transport: skipNegotiation ? HttpTransportType.WebSockets : TRANSPORT, skipNegotiation, timeout: WAIT_MS };
    if (tok && tokenVia === "factory") opts.accessTokenFactory = () => tok;
    if (tok && tokenVia === "query") url += `${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(tok)}`;
    const tap = new TapProtocol(this.newProtocol());
    const conn = new signalR.HubConnectionBuilder()
      .withUrl(url, opts)
      .withHubProtocol(tap)
      .configureLogging(new BufferLogger(this.logs, name || `c${this.clients.length}`))
      .build();
    const c = new Client(this, name || `c${this.clients.length}`, conn, tap);
    c.node = node;
    this.clients.push(c);
    return c;
  }

  // connect builds, starts, and learns the connection id through WhoAmI.
  async connect(opts = {}) {
    const c = this.build(opts);
    await withTimeout(c.conn.start(), WAIT_MS, `${c.name}: start`);
    check(c.conn.state === HubConnectionState.Connected, `${c.name}: state ${c.conn.state} after start`);
    if (!opts.skipNegotiation) {
      // The client's own record of the transport it started (HttpConnection.transport).
      const used = c.conn.connection && c.conn.connection.transport && c.conn.connection.transport.constructor.name;
      const want = { websockets: "WebSocketTransport", longpolling: "LongPollingTransport", serversentevents: "ServerSentEventsTransport" }[TRANSPORT_NAME];
      check(used === want, `${c.name}: connected over ${used}, want ${want}`);
    }
    const who = await c.invoke("WhoAmI");
    check(who && typeof who.connectionId === "string" && who.connectionId !== "", () => `${c.name}: WhoAmI gave ${fmt(who)}`);
    c.id = who.connectionId;
    c.who = who;
    return c;
  }

  async connectMany(specs) {
    return Promise.all(specs.map((s) => this.connect(s)));
  }

  // cleanup stops every connection (bounded) and reports connections the server closed on
  // its own (onclose with an error before the scenario stopped them).
  async cleanup() {
    const problems = [];
    for (const c of this.clients) {
      if (c.closedWith && !c.stopping && c.closedWith.error) {
        problems.push(`${c.name} was closed by the server or transport: ${errText(c.closedWith.error)}`);
      }
    }
    await Promise.all(
      this.clients.map(async (c) => {
        c.stopping = true;
        try {
          await withTimeout(c.conn.stop(), STOP_MS, `${c.name}: stop`);
        } catch (e) {
          problems.push(errText(e));
        }
      }),
    );
    if (problems.length) throw new Error(problems.join("; "));
  }
}

// barrier: see the top of the file. Every client's queue is flushed through itself.
async function barrier(clients) {
  await Promise.all(
    clients.map(async (c) => {
      c.listen(BARRIER);
      const nonce = randomUUID();
      checkEqual(await c.invoke("Echo", nonce), nonce, `${c.name}: barrier Echo`);
      await c.invoke("SendToConnection", c.id, BARRIER, nonce);
      await c.waitFor(() => c.got(BARRIER).some((a) => a[0] === nonce), `barrier message ${nonce}`);
    }),
  );
}

// expectDeliveries: expected is a Map(client -> list of argument lists) over ALL clients of the
// scenario (missing or empty: the client must get nothing). Waits (each recipient up to waitMs)
// for the recipients, runs the barrier, then compares exactly.
async function expectDeliveries(clients, target, expected, waitMs = WAIT_MS) {
  await Promise.all(
    clients.map((c) => {
      const want = expected.get(c) || [];
      return c.waitFor(() => c.got(target).length >= want.length, `${want.length} '${target}' message(s), has ${c.got(target).length}`, waitMs);
    }),
  );
  await barrier(clients);
  for (const c of clients) {
    const want = expected.get(c) || [];
    const got = c.got(target);
    if (want.length === 0) {
      check(got.length === 0, () => `${c.name} is no recipient but got ${fmt(got)}`);
    } else {
      checkEqual(sortedArgs(got), sortedArgs(want), `${c.name} received on '${target}'`);
    }
  }
}

function listenAll(clients, target) {
  for (const c of clients) c.listen(target);
}

// expectHttpStatus posts to the negotiate endpoint directly.
async function negotiateStatus(headers = {}, query = "") {
  const res = await withTimeout(
    fetch(`${BASE}/hubs/${HUB}/negotiate?negotiateVersion=1${query}`, { method: "POST", headers, signal: AbortSignal.timeout(WAIT_MS) }),
    WAIT_MS,
    "negotiate HTTP response",
  );
  await res.arrayBuffer();
  return res.status;
}

// ---------------------------------------------------------------- scenarios

const ECHO_VALUES = [
  ["unicode string", "héllo wörld ✓ 日本語 🎉 \"quoted\" \\ back\nnewline"],
  ["int", 42],
  ["zero", 0],
  ["negative int", -17],
  ["float", 3.14159],
  ["small float", 0.1],
  ["big-ish int 2^40", 2 ** 40],
  ["negative -2^40", -(2 ** 40)],
  ["true", true],
  ["false", false],
  ["null", null],
  ["array", [1, "two", 3.5, null, true, [], {}]],
  ["nested object", { name: "x", nested: { list: [1, { deep: "y", n: -2 }], flag: false, none: null }, "ключ": "значение" }],
  ["empty string", ""],
  ["empty array", []],
  ["empty object", {}],
];

const SCENARIOS = [];
const scenario = (name, fn) => SCENARIOS.push({ name, fn });

scenario("connect (negotiate + WebSockets) and WhoAmI", async (t) => {
  const a = await t.connect({ name: "alice" });
  check(typeof a.conn.connectionId === "string" && a.conn.connectionId !== "", () => `no connectionId from negotiate: ${fmt(a.conn.connectionId)}`);
  checkEqual(a.who.connectionId, a.conn.connectionId, "WhoAmI.connectionId vs negotiated connectionId");
  checkEqual(a.who.userId, "alice", "WhoAmI.userId");
  check(typeof a.who.nodeId === "string" && a.who.nodeId !== "", () => `WhoAmI.nodeId: ${fmt(a.who.nodeId)}`);
  if (NODE_ID) checkEqual(a.who.nodeId, NODE_ID, "WhoAmI.nodeId");
  checkEqual(Object.keys(a.who).sort(), ["connectionId", "nodeId", "userId"], "WhoAmI keys");
  const b = await t.connect({ name: "bob", user: "bob" });
  checkEqual(b.who.userId, "bob", "second connection WhoAmI.userId");
  check(b.id !== a.id, "two connections share a connection id");
});

scenario("skipNegotiation connect", async (t) => {
  const a = await t.connect({ name: "alice", skipNegotiation: true });
  checkEqual(a.who.userId, "alice", "WhoAmI.userId");
  checkEqual(await a.invoke("Echo", "skip ✓"), "skip ✓", "Echo");
});

scenario("token in access_token query (negotiate and skipNegotiation)", async (t) => {
  const a = await t.connect({ name: "bob-query", user: "bob", tokenVia: "query" });
  checkEqual(a.who.userId, "bob", "WhoAmI.userId (negotiate)");
  const b = await t.connect({ name: "bob-query-skip", user: "bob", tokenVia: "query", skipNegotiation: true });
  checkEqual(b.who.userId, "bob", "WhoAmI.userId (skipNegotiation)");
});

scenario("Echo with varied values", async (t) => {
  const a = await t.connect({ name: "alice" });
  const bad = [];
  for (const [label, value] of ECHO_VALUES) {
    try {
      const got = await a.invoke("Echo", value);
      if (!isDeepStrictEqual(got, value)) bad.push(`${label}: got ${fmt(got)}, want ${fmt(value)}`);
    } catch (e) {
      bad.push(`${label}: ${errText(e)}`);
    }
  }
  check(bad.length === 0, () => bad.join("; "));
});

scenario("method names match case-insensitively", async (t) => {
  const a = await t.connect({ name: "alice" });
  checkEqual(await a.invoke("echo", "lower"), "lower", "echo");
  checkEqual(await a.invoke("ECHO", "upper"), "upper", "ECHO");
  checkEqual((await a.invoke("whoami")).connectionId, a.id, "whoami");
});

scenario("SendToAll reaches every client exactly once", async (t) => {
  const [a, b, c] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c", user: "alice2" }]);
  const target = t.name("all");
  listenAll([a, b, c], target);
  const m1 = ["hi ✓", 7, { k: [1, null, "x"] }, -2.5];
  const m2 = [];
  await a.invoke("SendToAll", target, ...m1);
  await b.invoke("SendToAll", target, ...m2);
  await expectDeliveries([a, b, c], target, new Map([a, b, c].map((x) => [x, [m1, m2]])));
});

scenario("SendToOthers excludes the caller", async (t) => {
  const [a, b, c] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c" }]);
  const target = t.name("others");
  listenAll([a, b, c], target);
  const m = ["to others", 2 ** 40, [true, false]];
  await a.invoke("SendToOthers", target, ...m);
  await expectDeliveries([a, b, c], target, new Map([[b, [m]], [c, [m]]]));
});

scenario("SendToConnection reaches only that connection", async (t) => {
  const [a, b, c] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c" }]);
  const target = t.name("conn");
  listenAll([a, b, c], target);
  const m = ["direct", { to: c.id }];
  await a.invoke("SendToConnection", c.id, target, ...m);
  await expectDeliveries([a, b, c], target, new Map([[c, [m]]]));
});

scenario("JoinGroup + SendToGroup reaches members only", async (t) => {
  const [a, b, c, d] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c" }, { name: "d", user: "bob" }]);
  const group = t.name("group");
  const target = t.name("grp");
  listenAll([a, b, c, d], target);
  await b.invoke("JoinGroup", group);
  await c.invoke("JoinGroup", group);
  const m1 = ["from a non-member", 1];
  const m2 = ["from a member", 2];
  await a.invoke("SendToGroup", group, target, ...m1);
  await b.invoke("SendToGroup", group, target, ...m2);
  await expectDeliveries([a, b, c, d], target, new Map([[b, [m1, m2]], [c, [m1, m2]]]));
});

scenario("SendToOthersInGroup excludes the caller", async (t) => {
  const [a, b, c, d] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c" }, { name: "d", user: "bob" }]);
  const group = t.name("group");
  const target = t.name("oig");
  listenAll([a, b, c, d], target);
  for (const x of [b, c, d]) await x.invoke("JoinGroup", group);
  const m = ["others in group", { n: 3 }];
  await b.invoke("SendToOthersInGroup", group, target, ...m);
  await expectDeliveries([a, b, c, d], target, new Map([[c, [m]], [d, [m]]]));
});

scenario("LeaveGroup stops group messages", async (t) => {
  const [a, b, c] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c" }]);
  const group = t.name("group");
  const target = t.name("leave");
  listenAll([a, b, c], target);
  await b.invoke("JoinGroup", group);
  await c.invoke("JoinGroup", group);
  const m1 = ["before leave"];
  await a.invoke("SendToGroup", group, target, ...m1);
  await expectDeliveries([a, b, c], target, new Map([[b, [m1]], [c, [m1]]]));
  await b.invoke("LeaveGroup", group);
  const m2 = ["after leave"];
  await a.invoke("SendToGroup", group, target, ...m2);
  await expectDeliveries([a, b, c], target, new Map([[b, [m1]], [c, [m1, m2]]]));
});

scenario("AddToGroup/RemoveFromGroup of another connection", async (t) => {
  const [a, b, c] = await t.connectMany([{ name: "a" }, { name: "b", user: "bob" }, { name: "c" }]);
  const group = t.name("group");
  const target = t.name("added");
  listenAll([a, b, c], target);
  await a.invoke("AddToGroup", b.id, group);
  const m1 = ["added by a"];
  await a.invoke("SendToGroup", group, target, ...m1);
  await expectDeliveries([a, b, c], target, new Map([[b, [m1]]]));
  await a.invoke("RemoveFromGroup", b.id, group);
  const m2 = ["after removal"];
  await a.invoke("SendToGroup", group, target, ...m2);
  await expectDeliveries([a, b, c], target, new Map([[b, [m1]]]));
});

scenario("AddToGroup/RemoveFromGroup of a non-existent connection rejects", async (t) => {
  const a = await t.connect({ name: "a" });
  const ghost = `no-such-connection-${randomUUID()}`;
  const started = Date.now();
  const e1 = await rejection(a.conn.invoke("AddToGroup", ghost, t.name("group")), "AddToGroup(ghost)");
  const e2 = await rejection(a.conn.invoke("RemoveFromGroup", ghost, t.name("group")), "RemoveFromGroup(ghost)");
  check(errText(e1) !== "" && errText(e2) !== "", "empty error message");
  check(Date.now() - started < WAIT_MS * 2, "took too long");
  checkEqual(await a.invoke("Echo", "still alive"), "still alive", "Echo after the errors");
});

scenario("SendToUser reaches every connection of that user only", async (t) => {
  const [a1, a2, b] = await t.connectMany([{ name: "alice1", user: "alice" }, { name: "alice2", user: "alice2" }, { name: "bob", user: "bob" }]);
  checkEqual([a1.who.userId, a2.who.userId, b.who.userId], ["alice", "alice", "bob"], "user ids");
  const target = t.name("user");
  listenAll([a1, a2, b], target);
  const m1 = ["for alice", 1, { from: "bob" }];
  await b.invoke("SendToUser", "alice", target, ...m1);
  const m2 = ["for bob", 2];
  await a1.invoke("SendToUser", "bob", target, ...m2);
  await expectDeliveries([a1, a2, b], target, new Map([[a1, [m1]], [a2, [m1]], [b, [m2]]]));
});

scenario("invalid or missing JWT is rejected (401 at negotiate, refused at connect)", async (t) => {
  // positive control: a valid token negotiates
  checkEqual(await negotiateStatus({ Authorization: `Bearer ${token("alice")}` }), 200, "negotiate with a valid token");
  const bad = [
    ["expired", TOKENS.expired],
    ["bad signature", TOKENS.badsig],
    ["alg none", TOKENS.nonealg],
    ["garbage", "not.a.jwt"],
    ["missing", ""],
  ];
  const problems = [];
  for (const [label, tok] of bad) {
    if (tok === undefined || (tok === "" && label !== "missing")) {
      problems.push(`${label}: no token (set JWT_SECRET or the TOKEN_* variables)`);
      continue;
    }
    // raw HTTP: header and query
    const hs = await negotiateStatus(tok ? { Authorization: `Bearer ${tok}` } : {});
    if (hs !== 401) problems.push(`${label}: negotiate with Authorization header answered ${hs}, want 401`);
    if (tok) {
      const qs = await negotiateStatus({}, `&access_token=${encodeURIComponent(tok)}`);
      if (qs !== 401) problems.push(`${label}: negotiate with access_token query answered ${qs}, want 401`);
    }
    // the client: negotiate fails with the HTTP status in the message
    const c = t.build({ name: `neg-${label}`, rawToken: tok });
    const e = await rejection(c.conn.start(), `start with ${label} token`);
    if (!/Status code '401'/.test(errText(e))) problems.push(`${label}: start failed with ${fmt(errText(e))}, want a 401`);
    // the client with skipNegotiation: the WebSocket upgrade itself must be refused
    const s = t.build({ name: `ws-${label}`, rawToken: tok, skipNegotiation: true });
    try {
      await withTimeout(s.conn.start(), WAIT_MS, `skipNegotiation start with ${label} token`);
      problems.push(`${label}: skipNegotiation WebSocket connect was accepted`);
    } catch (err) {
      if (/^timed out/.test(errText(err))) problems.push(`${label}: ${errText(err)}`);
    }
  }
  check(problems.length === 0, () => problems.join("; "));
  t.logs.length = 0; // the client logs the expected failures as errors
});

scenario("hub error from Fail carries the message", async (t) => {
  const a = await t.connect({ name: "a" });
  const msg = `boom ✓ ${t.uid}`;
  const e = await rejection(a.conn.invoke("Fail", msg), "Fail");
  checkEqual(errText(e), `An unexpected error occurred invoking 'Fail' on the server. HubException: ${msg}`, "error message");
  checkEqual(await a.invoke("Echo", "after Fail"), "after Fail", "Echo after Fail");
});

scenario("unknown method gives an invocation error", async (t) => {
  const a = await t.connect({ name: "a" });
  const e = await rejection(a.conn.invoke("NoSuchMethodAnywhere", 1, "x"), "NoSuchMethodAnywhere");
  check(errText(e) !== "", "empty error message");
  check(a.conn.state === HubConnectionState.Connected, () => `connection state ${a.conn.state} after the error`);
  checkEqual(await a.invoke("Echo", "after unknown"), "after unknown", "Echo after the unknown method");
});

function collectStream(c, method, ...args) {
  const items = [];
  let sub;
  const done = new Promise((resolve, reject) => {
    sub = c.conn.stream(method, ...args).subscribe({
      next: (x) => {
        items.push(x);
        c.notify(); // waitFor re-checks on stream items too
      },
      complete: () => resolve(items),
      error: (e) => reject(e),
    });
  });
  return { items, sub, done: withTimeout(done, WAIT_MS, `${c.name}: stream ${method} to complete`) };
}

scenario("server stream Counter yields 0..n-1", async (t) => {
  const a = await t.connect({ name: "a" });
  checkEqual(await collectStream(a, "Counter", 5, 10).done, [0, 1, 2, 3, 4], "Counter(5, 10)");
  checkEqual(await collectStream(a, "Counter", 20, 0).done, [...Array(20).keys()], "Counter(20, 0)");
  checkEqual(await collectStream(a, "Counter", 0, 0).done, [], "Counter(0, 0)");
});

scenario("server stream Counter is cancelled by dispose()", async (t) => {
  const a = await t.connect({ name: "a" });
  const period = 20;
  const s = collectStream(a, "Counter", 100000, period);
  s.done.catch(() => {}); // never completes: it is cancelled
  const sent = a.tap.sentStreamInvocations.filter((x) => x.target === "Counter");
  check(sent.length === 1, "no StreamInvocation for Counter was written");
  const id = sent[0].invocationId;
  const onWire = () => a.tap.streamItems.get(id) || [];
  await a.waitFor(() => s.items.length >= 3, "3 Counter items");
  s.sub.dispose();
  const seenAtDispose = s.items.length;
  // Wait (bounded) for a quiet period of 25 intervals on the wire; an uncancelled stream has none.
  const quiet = period * 25;
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const items = onWire();
    const last = items.length ? items[items.length - 1].at : 0;
    if (Date.now() - last >= quiet) break;
    check(Date.now() < deadline, () => `items still arriving ${WAIT_MS}ms after dispose (${items.length} on the wire)`);
    await sleep(period);
  }
  checkEqual(s.items.length, seenAtDispose, "items delivered to the subscriber after dispose");
  const onWireItems = onWire().map((x) => x.item);
  checkEqual(onWireItems, [...Array(onWireItems.length).keys()], "items on the wire");
  checkEqual(await a.invoke("Echo", "after cancel"), "after cancel", "Echo after cancel");
  checkEqual(await collectStream(a, "Counter", 3, 0).done, [0, 1, 2], "a new Counter after the cancelled one");
});

scenario("client upload stream Sum via Subject", async (t) => {
  const a = await t.connect({ name: "a" });
  const upload = async (values) => {
    const subject = new signalR.Subject();
    const result = a.invoke("Sum", subject);
    for (const v of values) {
      subject.next(v);
      await sleep(1);
    }
    subject.complete();
    return result;
  };
  checkEqual(await upload([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 55, "Sum(1..10)");
  checkEqual(await upload([0.5, 1.25, -2]), -0.25, "Sum(0.5, 1.25, -2)");
  checkEqual(await upload([]), 0, "Sum() of an empty stream");
  // two uploads at once on one connection
  const [x, y] = await Promise.all([upload([1, 1, 1]), upload([100, 200])]);
  checkEqual([x, y], [3, 300], "two concurrent uploads");
});

scenario("an upload ended with subject.error() fails Sum with the client's message", async (t) => {
  const a = await t.connect({ name: "a" });
  const subject = new signalR.Subject();
  const failed = rejection(a.conn.invoke("Sum", subject), "Sum after subject.error");
  subject.next(1);
  subject.next(2);
  await sleep(5);
  subject.error(new Error(`sensor unplugged ${t.uid}`));
  const e = await failed;
  checkEqual(errText(e), `An unexpected error occurred invoking 'Sum' on the server. HubException: sensor unplugged ${t.uid}`, "Sum's error");
  checkEqual(await a.invoke("Echo", "after the failed upload"), "after the failed upload", "Echo after the failed upload");
});

scenario("an upload item of the wrong type fails Sum, saying which item", async (t) => {
  const a = await t.connect({ name: "a" });
  const subject = new signalR.Subject();
  // The call may fail before the stream is complete: watch it from the start.
  const failed = rejection(a.conn.invoke("Sum", subject), "Sum([1, \"abc\", 2])");
  for (const v of [1, "abc", 2]) {
    subject.next(v);
    await sleep(1);
  }
  subject.complete();
  const e = await failed;
  check(/^An unexpected error occurred invoking 'Sum' on the server\. HubException: Stream '\d+' failed: item 2 does not fit float64: /.test(errText(e)), () => `Sum's error: ${errText(e)}`);
  // The client sends the upload's items and its end one after another, each after the previous
  // send finished, whatever became of the call; on the slower HTTP transports its end may still
  // be queued here, and a stop() then rejects that send where nobody catches it. Wait until the
  // end was written: the Echo below is sent after it on the same ordered send queue.
  await a.waitFor(() => a.tap.sentCompletions >= 1, "the client to send the upload's end");
  checkEqual(await a.invoke("Echo", "after the bad item"), "after the bad item", "Echo after the bad item");
});

scenario("Counter with a delay that would overflow is refused and the node stays up", async (t) => {
  const a = await t.connect({ name: "a" });
  const e = await rejection(collectStream(a, "Counter", 1, 10000000000000).done, "Counter(1, 1e13)");
  checkEqual(errText(e), "An unexpected error occurred invoking 'Counter' on the server. HubException: Counter needs n >= 0 and 0 <= delayMs <= 3600000", "Counter's error");
  checkEqual(await a.invoke("Echo", "after Counter"), "after Counter", "Echo after the refused Counter");
});

scenario("100 parallel Echo invocations", async (t) => {
  const a = await t.connect({ name: "a" });
  const values = [...Array(100).keys()].map((i) => (i % 3 === 0 ? `v${i} ✓` : i % 3 === 1 ? i * 1000 + 0.5 : { i, list: [i, `s${i}`] }));
  const results = await Promise.all(values.map((v) => a.invoke("Echo", v)));
  const bad = values.map((v, i) => [v, results[i]]).filter(([v, r]) => !isDeepStrictEqual(v, r));
  check(bad.length === 0, () => `${bad.length} wrong results, e.g. ${fmt(bad.slice(0, 3))}`);
});

scenario("client stop() ends cleanly", async (t) => {
  const a = await t.connect({ name: "a" });
  const closed = new Promise((resolve) => a.conn.onclose((error) => resolve({ error })));
  a.stopping = true;
  await withTimeout(a.conn.stop(), WAIT_MS, "stop()");
  const { error } = await withTimeout(closed, WAIT_MS, "onclose");
  check(error === undefined, () => `onclose got an error: ${errText(error)}`);
  checkEqual(a.conn.state, HubConnectionState.Disconnected, "state after stop");
  await rejection(a.conn.invoke("Echo", "x"), "invoke after stop");
  // Sending to the stopped connection may succeed or fail (the contract leaves it open), but
  // must not disturb the node or the sender.
  const b = await t.connect({ name: "b" });
  await b.invoke("SendToConnection", a.id, t.name("gone"), "to a stopped connection").catch(() => {});
  checkEqual(await b.invoke("Echo", "alive"), "alive", "Echo on the other connection");
});

if (HUB2) {
  scenario(`a second hub (${HUB2}) is separate`, async (t) => {
    const a = await t.connect({ name: "hub1" });
    const b = await t.connect({ name: "hub2", user: "bob", hub: HUB2 });
    checkEqual(b.who.userId, "bob", "WhoAmI on the second hub");
    const target = t.name("hubs");
    listenAll([a, b], target);
    const m1 = ["on hub 1"];
    const m2 = ["on hub 2"];
    await a.invoke("SendToAll", target, ...m1);
    await b.invoke("SendToAll", target, ...m2);
    await expectDeliveries([a, b], target, new Map([[a, [m1]], [b, [m2]]]));
  });
}

// ---------------------------------------------------------------- several nodes on one backplane
//
// Scenario clients carry the node they connected to (c.node: 1, 2 or 3). Every route is checked with
// the same exactly-once / nobody-else rule as above: the barrier of each client goes through its own
// node (SendToConnection to itself), so it flushes that client's queue whatever node the message
// under test came from.

const SAME_NODE = BASE2 !== "" && BASE2 === BASE; // script self-test against a single node only

// checkPlacement: the clients of one node agree on its nodeId, and different nodes have different
// ones (the clients really are split), and the configured ids match.
function checkPlacement(clients) {
  const byNode = new Map();
  for (const c of clients) {
    if (!c.who) continue;
    if (!byNode.has(c.node)) byNode.set(c.node, c.who.nodeId);
    else checkEqual(c.who.nodeId, byNode.get(c.node), `${c.name}: WhoAmI.nodeId (other clients of node ${c.node} report ${byNode.get(c.node)})`);
  }
  if (NODE_ID && byNode.has(1)) checkEqual(byNode.get(1), NODE_ID, "node 1's WhoAmI.nodeId");
  if (NODE_ID2 && byNode.has(2)) checkEqual(byNode.get(2), NODE_ID2, "node 2's WhoAmI.nodeId");
  const nodes = [...byNode.keys()];
  for (const x of nodes) {
    for (const y of nodes) {
      if (x < y && !(SAME_NODE && BASES[x] === BASES[y])) {
        check(byNode.get(x) !== byNode.get(y), () => `node ${x} and node ${y} both report nodeId ${fmt(byNode.get(x))}: the clients are not on different nodes`);
      }
    }
  }
}

async function connectSplit(t, specs) {
  const clients = await t.connectMany(specs);
  checkPlacement(clients);
  return clients;
}

// inOrder: the values of one sender, in the order received, must be exactly 0..n-1.
function checkInOrder(c, target, sender, n) {
  const seq = c.got(target).filter((a) => a[1] === sender).map((a) => a[0]);
  if (isDeepStrictEqual(seq, [...Array(n).keys()])) return;
  const firstBad = seq.findIndex((v, i) => v !== i);
  check(false, () => `${c.name}: ${seq.length} messages from ${sender} (want ${n}); first out of place at index ${firstBad}: ${fmt(seq.slice(Math.max(0, firstBad - 2), firstBad + 3))}`);
}

// sendMany pipelines n invocations of one route from one client (they are written in this order
// and the node runs one client's hub methods one at a time, in arrival order) and waits for all.
function sendMany(c, n, method, ...routeArgs) {
  return Promise.all([...Array(n).keys()].map((i) => withTimeout(c.conn.invoke(method, ...routeArgs, i, c.name), WAIT_MS * 3, `${c.name}: ${method} #${i}`)));
}

if (BASE2) {
  scenario("two nodes: WhoAmI reports each client's node", async (t) => {
    const [a, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", user: "alice2", node: 2 }]);
    checkEqual([a.who.userId, b.who.userId, c.who.userId], ["alice", "bob", "alice"], "user ids");
    check(new Set([a.id, b.id, c.id]).size === 3, () => `connection ids are not distinct: ${fmt([a.id, b.id, c.id])}`);
    for (const x of [a, b, c]) checkEqual(await x.invoke("Echo", `echo via ${x.name}`), `echo via ${x.name}`, `${x.name}: Echo`);
  });

  scenario("two nodes: SendToAll reaches the clients of both nodes exactly once", async (t) => {
    const [a, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", user: "alice2", node: 2 }]);
    const target = t.name("all");
    listenAll([a, b, c], target);
    const m1 = ["from node 1 ✓", { k: [1, null] }];
    const m2 = ["from node 2", 2 ** 40];
    await a.invoke("SendToAll", target, ...m1);
    await b.invoke("SendToAll", target, ...m2);
    await expectDeliveries([a, b, c], target, new Map([a, b, c].map((x) => [x, [m1, m2]])));
  });

  scenario("two nodes: SendToOthers excludes only the caller, on both nodes", async (t) => {
    const [a, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const target = t.name("others");
    listenAll([a, b, c], target);
    const m1 = ["others from node 1"];
    const m2 = ["others from node 2", -1.5];
    await a.invoke("SendToOthers", target, ...m1);
    await b.invoke("SendToOthers", target, ...m2);
    await expectDeliveries([a, b, c], target, new Map([[a, [m2]], [b, [m1]], [c, [m1, m2]]]));
  });

  scenario("two nodes: SendToConnection to a connection on the other node", async (t) => {
    const [a, d, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "d@1", user: "bob" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const target = t.name("conn");
    listenAll([a, d, b, c], target);
    const m1 = ["node 1 -> node 2", { to: b.id }];
    const m2 = ["node 2 -> node 1", { to: a.id }];
    await a.invoke("SendToConnection", b.id, target, ...m1);
    await c.invoke("SendToConnection", a.id, target, ...m2);
    await expectDeliveries([a, d, b, c], target, new Map([[b, [m1]], [a, [m2]]]));
  });

  scenario("two nodes: JoinGroup on both nodes + SendToGroup reaches members only", async (t) => {
    const [a, d, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "d@1", user: "bob" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const group = t.name("group");
    const target = t.name("grp");
    listenAll([a, d, b, c], target);
    await a.invoke("JoinGroup", group);
    await b.invoke("JoinGroup", group);
    const ms = [a, b, c, d].map((x) => [`from ${x.name}`, x.node]);
    for (const [i, x] of [a, b, c, d].entries()) await x.invoke("SendToGroup", group, target, ...ms[i]);
    await expectDeliveries([a, d, b, c], target, new Map([[a, ms], [b, ms]]));
  });

  scenario("two nodes: SendToOthersInGroup excludes the caller, members on both nodes", async (t) => {
    const [a, d, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "d@1", user: "bob" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const group = t.name("group");
    const target = t.name("oig");
    listenAll([a, d, b, c], target);
    for (const x of [a, b, c]) await x.invoke("JoinGroup", group);
    const m1 = ["others in group, from node 1"];
    const m2 = ["others in group, from node 2", { n: 2 }];
    await a.invoke("SendToOthersInGroup", group, target, ...m1);
    await b.invoke("SendToOthersInGroup", group, target, ...m2);
    await expectDeliveries([a, d, b, c], target, new Map([[a, [m2]], [b, [m1]], [c, [m1, m2]]]));
  });

  scenario("two nodes: LeaveGroup on node 2 stops messages sent from either node", async (t) => {
    const [a, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const group = t.name("group");
    const target = t.name("leave");
    listenAll([a, b, c], target);
    await a.invoke("JoinGroup", group);
    await b.invoke("JoinGroup", group);
    const m1 = ["before leave"];
    await a.invoke("SendToGroup", group, target, ...m1);
    await expectDeliveries([a, b, c], target, new Map([[a, [m1]], [b, [m1]]]));
    await b.invoke("LeaveGroup", group);
    const m2 = ["after leave, from node 1"];
    const m3 = ["after leave, from node 2"];
    await a.invoke("SendToGroup", group, target, ...m2);
    await c.invoke("SendToGroup", group, target, ...m3);
    await expectDeliveries([a, b, c], target, new Map([[a, [m1, m2, m3]], [b, [m1]]]));
  });

  scenario("two nodes: SendToUser reaches the user's connections on both nodes", async (t) => {
    const [a1, a2, b] = await connectSplit(t, [{ name: "alice@1", user: "alice" }, { name: "alice@2", user: "alice2", node: 2 }, { name: "bob@2", user: "bob", node: 2 }]);
    checkEqual([a1.who.userId, a2.who.userId, b.who.userId], ["alice", "alice", "bob"], "user ids");
    const target = t.name("user");
    listenAll([a1, a2, b], target);
    const m1 = ["for alice, from bob on node 2"];
    const m2 = ["for bob, from alice on node 1", 2];
    const m3 = ["for alice, from alice on node 2", { self: true }];
    await b.invoke("SendToUser", "alice", target, ...m1);
    await a1.invoke("SendToUser", "bob", target, ...m2);
    await a2.invoke("SendToUser", "alice", target, ...m3);
    await expectDeliveries([a1, a2, b], target, new Map([[a1, [m1, m3]], [a2, [m1, m3]], [b, [m2]]]));
  });

  scenario("two nodes: AddToGroup/RemoveFromGroup of a connection on the other node", async (t) => {
    const [a, d, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "d@1", user: "bob" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const group = t.name("group");
    const target = t.name("added");
    listenAll([a, d, b, c], target);
    await d.invoke("JoinGroup", group); // a local member on node 1 as well
    await a.invoke("AddToGroup", b.id, group); // node 1 adds a connection of node 2
    const m1 = ["after the remote add, from node 1"];
    const m2 = ["after the remote add, from node 2"];
    await a.invoke("SendToGroup", group, target, ...m1);
    await c.invoke("SendToGroup", group, target, ...m2);
    await expectDeliveries([a, d, b, c], target, new Map([[b, [m1, m2]], [d, [m1, m2]]]));
    await a.invoke("RemoveFromGroup", b.id, group);
    const m3 = ["after the remote removal, from node 1"];
    const m4 = ["after the remote removal, from node 2"];
    await a.invoke("SendToGroup", group, target, ...m3);
    await c.invoke("SendToGroup", group, target, ...m4);
    await expectDeliveries([a, d, b, c], target, new Map([[b, [m1, m2]], [d, [m1, m2, m3, m4]]]));
    // the other direction: node 2 adds a connection of node 1
    const group2 = t.name("group2");
    const target2 = t.name("added2");
    listenAll([a, d, b, c], target2);
    await b.invoke("AddToGroup", a.id, group2);
    const m5 = ["node 2 added a node-1 connection"];
    await c.invoke("SendToGroup", group2, target2, ...m5);
    await expectDeliveries([a, d, b, c], target2, new Map([[a, [m5]]]));
  });

  scenario("two nodes: AddToGroup of a connection no node has rejects after the ack timeout", async (t) => {
    const [a, b] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }]);
    const ghost = `no-such-connection-${randomUUID()}`;
    const group = t.name("group");
    const timed = async (c, method) => {
      const started = Date.now();
      const e = await rejection(c.conn.invoke(method, ghost, group), `${c.name}: ${method}(ghost)`);
      return { e, ms: Date.now() - started };
    };
    const [add1, add2, rem1] = await Promise.all([timed(a, "AddToGroup"), timed(b, "AddToGroup"), timed(a, "RemoveFromGroup")]);
    for (const [what, r] of [["AddToGroup on node 1", add1], ["AddToGroup on node 2", add2], ["RemoveFromGroup on node 1", rem1]]) {
      check(errText(r.e) !== "", `${what}: empty error message`);
      if (ACK_TIMEOUT_MS > 0) {
        check(r.ms >= ACK_TIMEOUT_MS * 0.9, () => `${what} rejected after ${r.ms}ms, before the ${ACK_TIMEOUT_MS}ms ack timeout: the nodes did not wait for an owner`);
        check(r.ms < ACK_TIMEOUT_MS + WAIT_MS, () => `${what} rejected only after ${r.ms}ms (ack timeout ${ACK_TIMEOUT_MS}ms)`);
      }
    }
    checkEqual(await a.invoke("Echo", "still alive"), "still alive", "Echo after the errors");
    // the remote group machinery still works after the timeouts
    const target = t.name("after");
    listenAll([a, b], target);
    await a.invoke("AddToGroup", b.id, group);
    const m = ["after the timeouts"];
    await a.invoke("SendToGroup", group, target, ...m);
    await expectDeliveries([a, b], target, new Map([[b, [m]]]));
  });

  scenario(`two nodes: ${ORDER_COUNT} messages over SendToConnection arrive in order across nodes`, async (t) => {
    const [a, b, c] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }]);
    const target = t.name("order");
    listenAll([a, b, c], target);
    const seq = (who) => [...Array(ORDER_COUNT).keys()].map((i) => [i, who.name]);
    // node 1 -> node 2 and node 2 -> node 1 at the same time
    await Promise.all([sendMany(a, ORDER_COUNT, "SendToConnection", b.id, target), sendMany(c, ORDER_COUNT, "SendToConnection", a.id, target)]);
    await expectDeliveries([a, b, c], target, new Map([[b, seq(a)], [a, seq(c)]]), WAIT_MS * 3);
    checkInOrder(b, target, a.name, ORDER_COUNT);
    checkInOrder(a, target, c.name, ORDER_COUNT);
  });

  scenario(`two nodes: ${ORDER_COUNT} messages over SendToGroup arrive in order at every member`, async (t) => {
    const [a, d, b, c, e] = await connectSplit(t, [{ name: "a@1" }, { name: "d@1", user: "bob" }, { name: "b@2", user: "bob", node: 2 }, { name: "c@2", node: 2 }, { name: "e@2", user: "alice2", node: 2 }]);
    const group = t.name("group");
    const target = t.name("order");
    listenAll([a, d, b, c, e], target);
    for (const x of [a, d, b, c]) await x.invoke("JoinGroup", group);
    const seq = (who) => [...Array(ORDER_COUNT).keys()].map((i) => [i, who.name]);
    // one sender on each node, at the same time
    await Promise.all([sendMany(a, ORDER_COUNT, "SendToGroup", group, target), sendMany(b, ORDER_COUNT, "SendToGroup", group, target)]);
    const both = [...seq(a), ...seq(b)];
    await expectDeliveries([a, d, b, c, e], target, new Map([a, d, b, c].map((x) => [x, both])), WAIT_MS * 3);
    for (const x of [a, d, b, c]) {
      checkInOrder(x, target, a.name, ORDER_COUNT);
      checkInOrder(x, target, b.name, ORDER_COUNT);
    }
  });

  scenario("two nodes: negotiate on node 1, WebSocket on node 2", async (t) => {
    const [a, ref] = await connectSplit(t, [{ name: "a@1" }, { name: "ref@2", user: "bob", node: 2 }]);
    const res = await withTimeout(
      fetch(`${BASE}/hubs/${HUB}/negotiate?negotiateVersion=1`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token("alice")}` },
        signal: AbortSignal.timeout(WAIT_MS),
      }),
      WAIT_MS,
      "negotiate on node 1",
    );
    const body = await res.text();
    checkEqual(res.status, 200, `negotiate status (body ${fmt(body)})`);
    const neg = JSON.parse(body);
    check(typeof neg.connectionId === "string" && neg.connectionId !== "", () => `negotiate gave no connectionId: ${body}`);
    check(typeof neg.connectionToken === "string" && neg.connectionToken !== "", () => `negotiate gave no connectionToken: ${body}`);
    // The client with skipNegotiation connects to the URL as given (HttpConnection._startInternal
    // hands baseUrl to the transport unchanged, WebSocketTransport only swaps http for ws), so the
    // id query parameter reaches node 2 just as after its own negotiate (_createConnectUrl).
    const x = t.build({ name: "x@2", node: 2, skipNegotiation: true, query: `id=${encodeURIComponent(neg.connectionToken)}` });
    await withTimeout(x.conn.start(), WAIT_MS, `${x.name}: start`);
    const who = await x.invoke("WhoAmI");
    checkEqual(who.connectionId, neg.connectionId, "WhoAmI.connectionId on node 2 vs the connectionId negotiated on node 1");
    checkEqual(who.userId, "alice", "WhoAmI.userId");
    checkEqual(who.nodeId, ref.who.nodeId, "WhoAmI.nodeId (node 2's)");
    x.id = who.connectionId;
    x.who = who;
    checkPlacement([a, ref, x]);
    // it is reachable under the negotiated id, from both nodes
    const target = t.name("neg");
    listenAll([a, ref, x], target);
    const m1 = ["to the negotiated id, from node 1"];
    const m2 = ["to the negotiated id, from node 2"];
    await a.invoke("SendToConnection", neg.connectionId, target, ...m1);
    await ref.invoke("SendToConnection", neg.connectionId, target, ...m2);
    await expectDeliveries([a, ref, x], target, new Map([[x, [m1, m2]]]));
  });

  if (HUB2) {
    scenario(`two nodes: hubs ${HUB} and ${HUB2} stay separate across nodes`, async (t) => {
      const [a, b, c] = await connectSplit(t, [{ name: `a@1/${HUB}` }, { name: `b@2/${HUB2}`, user: "bob", node: 2, hub: HUB2 }, { name: `c@2/${HUB}`, node: 2 }]);
      const target = t.name("hubs");
      const group = t.name("group");
      listenAll([a, b, c], target);
      await b.invoke("JoinGroup", group);
      await c.invoke("JoinGroup", group);
      const m1 = [`all on ${HUB}`];
      const m2 = [`all on ${HUB2}`];
      const m3 = [`group on ${HUB}`];
      await a.invoke("SendToAll", target, ...m1);
      await b.invoke("SendToAll", target, ...m2);
      await a.invoke("SendToGroup", group, target, ...m3);
      await expectDeliveries([a, b, c], target, new Map([[a, [m1]], [b, [m2]], [c, [m1, m3]]]));
    });
  }
}

if (BASE3) {
  scenario("prefix isolation: SendToAll and SendToOthers stay within a channel prefix", async (t) => {
    const [a, b, x, y] = await connectSplit(t, [{ name: "a@1" }, { name: "b@2", user: "bob", node: 2 }, { name: "x@3", node: 3 }, { name: "y@3", user: "bob", node: 3 }]);
    const target = t.name("all");
    listenAll([a, b, x, y], target);
    const m1 = ["all, node 1"];
    const m2 = ["all, node 2"];
    const m3 = ["all, node 3 (other prefix)"];
    const m4 = ["others, node 3 (other prefix)"];
    const m5 = ["others, node 1"];
    await a.invoke("SendToAll", target, ...m1);
    await b.invoke("SendToAll", target, ...m2);
    await x.invoke("SendToAll", target, ...m3);
    await y.invoke("SendToOthers", target, ...m4);
    await a.invoke("SendToOthers", target, ...m5);
    await expectDeliveries([a, b, x, y], target, new Map([[a, [m1, m2]], [b, [m1, m2, m5]], [x, [m3, m4]], [y, [m3]]]));
  });

  scenario("prefix isolation: groups, users and connections stay within a channel prefix", async (t) => {
    const [a, b, x, y] = await connectSplit(t, [{ name: "alice@1" }, { name: "bob@2", user: "bob", node: 2 }, { name: "alice@3", user: "alice2", node: 3 }, { name: "bob@3", user: "bob", node: 3 }]);
    const group = t.name("group"); // the same group name under both prefixes
    const target = t.name("iso");
    listenAll([a, b, x, y], target);
    await a.invoke("JoinGroup", group);
    await x.invoke("JoinGroup", group);
    const g1 = ["group, node 2"];
    const g3 = ["group, node 3"];
    const u1 = ["user alice, node 2"];
    const u3 = ["user alice, node 3"];
    const ub = ["user bob, node 1"];
    await b.invoke("SendToGroup", group, target, ...g1);
    await y.invoke("SendToGroup", group, target, ...g3);
    await b.invoke("SendToUser", "alice", target, ...u1);
    await y.invoke("SendToUser", "alice", target, ...u3);
    await a.invoke("SendToUser", "bob", target, ...ub);
    // a connection of the other prefix cannot be reached (the send may succeed or fail)
    await a.invoke("SendToConnection", x.id, target, "cross-prefix connection").catch(() => {});
    await y.invoke("SendToConnection", b.id, target, "cross-prefix connection").catch(() => {});
    await expectDeliveries([a, b, x, y], target, new Map([[a, [g1, u1]], [b, [ub]], [x, [g3, u3]], [y, []]]));
    // nor added to a group from the other prefix: no node of that prefix owns it
    const e = await rejection(a.conn.invoke("AddToGroup", x.id, group), "AddToGroup(a connection of the other prefix)");
    check(errText(e) !== "", "empty error message");
    const g4 = ["group, node 2, after the failed cross-prefix add"];
    await b.invoke("SendToGroup", group, target, ...g4);
    await expectDeliveries([a, b, x, y], target, new Map([[a, [g1, u1, g4]], [b, [ub]], [x, [g3, u3]], [y, []]]));
  });
}

// ---------------------------------------------------------------- message size limit

// With INTEROP_MAX_MESSAGE_SIZE (the node's --max-message-size), a message over the limit closes
// the connection with the server's Close message, whose error names the limit, at every size: just
// over it, past 4x it (where coder/websocket's read limit once sent a bare close 1009 instead) and
// 100x it. The client reports the Close message's error as "Server returned an error on close: ...".
const MAX_MESSAGE_SIZE = Number(env.INTEROP_MAX_MESSAGE_SIZE || 0);
if (MAX_MESSAGE_SIZE > 0) {
  scenario(`a message over --max-message-size ${MAX_MESSAGE_SIZE} gets the Close error naming the limit, at any size`, async (t) => {
    for (const size of [MAX_MESSAGE_SIZE, Math.round(4.5 * MAX_MESSAGE_SIZE), 100 * MAX_MESSAGE_SIZE]) {
      const c = await t.connect({ name: `c${size}` });
      c.stopping = true; // the server closes it, on purpose
      const invoked = c.conn.invoke("Echo", "x".repeat(size)).then(
        () => null,
        (e) => e,
      );
      await c.waitFor(() => c.closedWith !== undefined, `the close after an Echo of ${size} characters`);
      const text = errText(c.closedWith.error);
      check(
        text.startsWith("Server returned an error on close: ") && text.includes(`limit ${MAX_MESSAGE_SIZE}`),
        () => `Echo of ${size} characters: closed with ${fmt(text)}, want the server's Close error naming the limit ${MAX_MESSAGE_SIZE}`,
      );
      check((await withTimeout(invoked, WAIT_MS, "the Echo to fail")) !== null, `Echo of ${size} characters succeeded`);
    }
    // The node goes on serving.
    const ok = await t.connect({ name: "after" });
    checkEqual(await ok.invoke("Echo", "x".repeat(MAX_MESSAGE_SIZE - 100)), "x".repeat(MAX_MESSAGE_SIZE - 100), "Echo within the limit");
  });
}

// ---------------------------------------------------------------- runner

let current = null;
process.on("unhandledRejection", (e) => {
  if (current) current.asyncErrors.push(`unhandled rejection: ${errText(e)}`);
  else console.error(`unhandled rejection outside a scenario: ${errText(e)}`);
});
process.on("uncaughtException", (e) => {
  if (current) current.asyncErrors.push(`uncaught exception: ${errText(e)}`);
  else console.error(`uncaught exception outside a scenario: ${errText(e)}`);
});

for (const protocol of PROTOCOLS) {
  for (const s of SCENARIOS) {
    if (ONLY && !ONLY.test(s.name)) continue;
    const t = new T(protocol, s.name);
    current = t;
    let err = null;
    try {
      await withTimeout(s.fn(t), SCENARIO_MS, "the whole scenario");
    } catch (e) {
      err = e;
    }
    try {
      await t.cleanup();
    } catch (e) {
      err = err || e;
    }
    if (!err && t.asyncErrors.length) err = new Error(t.asyncErrors.join("; "));
    current = null;
    if (err) {
      failed++;
      console.log(`FAIL ${protocol} ${s.name}: ${errText(err).replace(/\s*\n\s*/g, " | ")}`);
      for (const line of t.logs.slice(0, 40)) console.log(`    ${line.replace(/\s*\n\s*/g, " | ")}`);
      for (const line of t.asyncErrors) console.log(`    ${line}`);
    } else {
      passed++;
      console.log(`ok ${protocol} ${s.name}`);
    }
  }
}
summaryAndExit();
