#!/usr/bin/env node
// Client results with the official @microsoft/signalr client (JSON and MessagePack) against
// hubfabric nodes' relay hub: InvokeClient(connectionId, target, ...args) makes the server invoke
// a handler of another client and return its value. Run by interop/results_test.go, or by hand:
//
//   go run ./cmd/node --jwt-secret s3cret &
//   HUBFABRIC_URL=http://127.0.0.1:8080 JWT_SECRET=s3cret node interop/results.mjs
//
// Environment: HUBFABRIC_URL (required), HUBFABRIC_URL2 (a second node on the same backplane: the
// invoked client then also connects there), HUBFABRIC_HUB (default chat), JWT_SECRET,
// INTEROP_TIMEOUT_MS (bound of every wait, default 10000).
// Prints `ok <protocols> <name>` or `FAIL <protocols> <name>: <reason>` per scenario and last
// `N passed, M failed`; exit status 0 only when M == 0.

import { createRequire } from "node:module";
import { isDeepStrictEqual } from "node:util";
import { mintHS256, withTimeout as withTimeoutMs } from "./common.mjs";

const require = createRequire(import.meta.url);
const env = process.env;
const BASE = (env.HUBFABRIC_URL || "").replace(/\/+$/, "");
const BASE2 = (env.HUBFABRIC_URL2 || "").replace(/\/+$/, "");
const HUB = env.HUBFABRIC_HUB || "chat";
const WAIT_MS = Number(env.INTEROP_TIMEOUT_MS || 10000);
const SECRET = env.JWT_SECRET || "";

let passed = 0;
let failed = 0;
function done() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}
if (!/^https?:\/\//.test(BASE)) {
  console.log("FAIL setup: set HUBFABRIC_URL=http://host:port");
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

const open = [];
async function connect(base, protocol, user) {
  const tok = mint(user);
  const opts = { transport: signalR.HttpTransportType.WebSockets, timeout: WAIT_MS };
  if (tok) opts.accessTokenFactory = () => tok;
  const conn = new signalR.HubConnectionBuilder()
    .withUrl(`${base}/hubs/${HUB}`, opts)
    .withHubProtocol(protocol === "json" ? new signalR.JsonHubProtocol() : new MessagePackHubProtocol())
    .configureLogging(signalR.LogLevel.None)
    .build();
  open.push(conn);
  await withTimeout(conn.start(), "start");
  const who = await withTimeout(conn.invoke("WhoAmI"), "WhoAmI");
  conn.id = who.connectionId;
  return conn;
}

async function rejects(p, what) {
  try {
    await withTimeout(p, what);
  } catch (e) {
    return String(e && e.message ? e.message : e);
  }
  throw new Error(`${what}: resolved, want an error`);
}

function expect(cond, msg) {
  if (!cond) throw new Error(msg);
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
  await Promise.all(open.splice(0).map((c) => c.stop().catch(() => {})));
}

const placements = [["same node", BASE]];
if (BASE2) placements.push(["other node", BASE2]);
const protocolPairs = [["json", "json"], ["messagepack", "messagepack"], ["json", "messagepack"], ["messagepack", "json"]];

for (const [where, targetBase] of placements) {
  for (const [pc, pt] of protocolPairs) {
    const tag = `${pc}->${pt} ${where}`;

    await scenario(`${tag}: a handler's value comes back`, async () => {
      const caller = await connect(BASE, pc, "alice");
      const target = await connect(targetBase, pt, "bob");
      target.on("add", (x, y) => x + y);
      target.on("profile", async (name) => ({ name, tags: ["a", "b"], n: 3 }));
      const sum = await withTimeout(caller.invoke("InvokeClient", target.id, "add", 2, 3), "InvokeClient add");
      expect(sum === 5, `add(2, 3) gave ${JSON.stringify(sum)}, want 5`);
      const prof = await withTimeout(caller.invoke("InvokeClient", target.id, "profile", "zoe"), "InvokeClient profile");
      expect(isDeepStrictEqual(prof, { name: "zoe", tags: ["a", "b"], n: 3 }), `profile gave ${JSON.stringify(prof)}`);
      // Several at once, each answered with its own value.
      const many = await withTimeout(Promise.all([...Array(20).keys()].map((i) => caller.invoke("InvokeClient", target.id, "add", i, 1000))), "20 InvokeClient");
      expect(many.every((v, i) => v === i + 1000), `20 at once gave ${JSON.stringify(many)}`);
    });

    await scenario(`${tag}: a throwing handler's error comes back`, async () => {
      const caller = await connect(BASE, pc, "alice");
      const target = await connect(targetBase, pt, "bob");
      target.on("explode", () => {
        throw new Error("kaboom 42");
      });
      const msg = await rejects(caller.invoke("InvokeClient", target.id, "explode"), "InvokeClient explode");
      expect(msg.includes("kaboom 42"), `error ${JSON.stringify(msg)} does not carry the client's text`);
      // The connection goes on.
      target.on("add", (x, y) => x + y);
      expect((await withTimeout(caller.invoke("InvokeClient", target.id, "add", 1, 1), "add after")) === 2, "add after the error");
    });

    await scenario(`${tag}: a missing handler is an error`, async () => {
      const caller = await connect(BASE, pc, "alice");
      const target = await connect(targetBase, pt, "bob");
      const msg = await rejects(caller.invoke("InvokeClient", target.id, "noSuchMethod", 1), "InvokeClient noSuchMethod");
      expect(msg.includes("Client didn't provide a result."), `error ${JSON.stringify(msg)}`);
    });

    await scenario(`${tag}: a client that disconnects while the server waits`, async () => {
      const caller = await connect(BASE, pc, "alice");
      const target = await connect(targetBase, pt, "bob");
      let entered;
      const inHandler = new Promise((resolve) => (entered = resolve));
      target.on("hang", () => {
        entered();
        return new Promise(() => {}); // never answers
      });
      const pending = caller.invoke("InvokeClient", target.id, "hang");
      await withTimeout(inHandler, "the handler was not invoked");
      await target.stop();
      const msg = await rejects(pending, "InvokeClient hang");
      expect(msg.includes("disconnected"), `error ${JSON.stringify(msg)} does not say the connection disconnected`);
    });
  }
}

await scenario("json: an unknown connection is an error", async () => {
  const caller = await connect(BASE, "json", "alice");
  const msg = await rejects(caller.invoke("InvokeClient", "no-such-connection", "add", 1, 2), "InvokeClient unknown");
  expect(msg.includes("unknown connection"), `error ${JSON.stringify(msg)}`);
});

done();
