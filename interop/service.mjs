// service.mjs drives the official @microsoft/signalr client (Node, JSON and MessagePack) against
// two hubfabric nodes in service mode, the way an Azure SignalR Service app works: an app server
// (this script) mints client access tokens with the access key (aud = the client URL, nameid =
// the user), clients connect to /client/?hub=NAME, and the app server drives them through the
// REST API (its own tokens: aud = the request URL) while client invocations go to the upstream.
//
// Environment: SVC_URL1, SVC_URL2 (the nodes), SVC_ACCESS_KEY, SVC_HUB. Prints "PASS name" or
// "FAIL name: why" per check and "N passed, M failed" last; exits 1 on any failure.

import { createRequire } from "node:module";
import { mintHS256, withTimeout as withTimeoutMs } from "./common.mjs";
import { isDeepStrictEqual } from "node:util";

const require = createRequire(import.meta.url);
const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

const env = process.env;
const URL1 = env.SVC_URL1, URL2 = env.SVC_URL2, KEY = env.SVC_ACCESS_KEY, HUB = env.SVC_HUB || "chat";
const WAIT_MS = 10000;
let passed = 0, failed = 0;

function mint(claims) {
  return mintHS256(KEY, { exp: Math.floor(Date.now() / 1000) + 3600, ...claims });
}

const withTimeout = (p, what) => withTimeoutMs(p, WAIT_MS, what);

// rest calls the REST API as an app server would.
async function rest(method, base, path, body, query = "") {
  const url = `${base}/api/hubs/${HUB}${path}?api-version=2022-06-01${query}`;
  const res = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${mint({ aud: url.split("?")[0] })}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  await res.text();
  return res.status;
}

function connect(base, user, protocol) {
  const url = `${base}/client/?hub=${HUB}`;
  const b = new signalR.HubConnectionBuilder()
    .withUrl(url, { accessTokenFactory: () => mint({ aud: url, nameid: user }), transport: signalR.HttpTransportType.WebSockets })
    .configureLogging(signalR.LogLevel.None);
  if (protocol === "messagepack") b.withHubProtocol(new MessagePackHubProtocol());
  const c = b.build();
  c.inbox = [];
  c.waiters = [];
  c.on("msg", (x) => { c.inbox.push(x); c.waiters.splice(0).forEach((w) => w()); });
  c.closedWith = new Promise((resolve) => c.onclose((e) => resolve(e)));
  return c;
}

function nextMessage(c, what) {
  return withTimeout(new Promise((resolve) => {
    const take = () => (c.inbox.length ? resolve(c.inbox.shift()) : c.waiters.push(take));
    take();
  }), what);
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.message}`);
  }
}

function eq(got, want, what) {
  if (!isDeepStrictEqual(got, want)) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

for (const protocol of ["json", "messagepack"]) {
  const alice = connect(URL1, `alice-${protocol}`, protocol);
  const bob = connect(URL2, `bob-${protocol}`, protocol);
  await check(`${protocol}: clients connect through /client/ with access tokens`, async () => {
    await withTimeout(Promise.all([alice.start(), bob.start()]), "start");
  });
  await check(`${protocol}: REST send to a user on the other node`, async () => {
    eq(await rest("POST", URL2, `/users/alice-${protocol}/:send`, { target: "msg", arguments: ["to-alice"] }), 202, "status");
    eq(await nextMessage(alice, "alice's message"), "to-alice", "message");
  });
  await check(`${protocol}: REST group join and group send across nodes`, async () => {
    eq(await rest("PUT", URL1, `/groups/room/connections/${bob.connectionId}`), 200, "join status");
    eq(await rest("POST", URL1, `/groups/room/:send`, { target: "msg", arguments: [{ n: 1, s: "room" }] }), 202, "send status");
    eq(await nextMessage(bob, "bob's group message"), { n: 1, s: "room" }, "message");
  });
  await check(`${protocol}: REST send to all`, async () => {
    eq(await rest("POST", URL2, `/:send`, { target: "msg", arguments: ["all"] }), 202, "status");
    eq(await nextMessage(alice, "alice's broadcast"), "all", "alice");
    eq(await nextMessage(bob, "bob's broadcast"), "all", "bob");
  });
  await check(`${protocol}: an invocation goes upstream and returns its answer`, async () => {
    eq(await withTimeout(alice.invoke("echo", { x: [1, 2], y: "z" }), "invoke"), { x: [1, 2], y: "z" }, "result");
  });
  await check(`${protocol}: the relay hub's methods are not there in service mode`, async () => {
    let err;
    try { await withTimeout(alice.invoke("SendToAll", "msg", "x"), "invoke"); } catch (e) { err = e; }
    if (!err || !/upstream/.test(err.message)) throw new Error(`want an error from the upstream, got ${err && err.message}`);
  });
  await check(`${protocol}: REST close of a connection on the other node, with a reason`, async () => {
    eq(await rest("DELETE", URL2, `/connections/${alice.connectionId}`, undefined, "&reason=kicked-by-app"), 204, "status");
    const e = await withTimeout(alice.closedWith, "alice closed");
    if (!e || !/kicked-by-app/.test(e.message)) throw new Error(`closed with ${e && e.message}, want the reason`);
  });
  await bob.stop();
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
