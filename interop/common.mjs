// Helpers the interop scripts share: an HS256 JWT minted as an app server would, and a bound on
// a wait whose timer never outlives it.

import { createHmac } from "node:crypto";

export function b64url(x) {
  return Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
}

// mintHS256 signs claims with secret (HS256, compact JWS).
export function mintHS256(secret, claims) {
  const head = b64url({ alg: "HS256", typ: "JWT" }) + "." + b64url(claims);
  return head + "." + createHmac("sha256", secret).update(head).digest("base64url");
}

// withTimeout bounds promise (or value) by ms; it rejects naming what when the bound passes.
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}
