// A call survives a relay drain, in headless Chromium: a redis-server, relay A (region
// "eu") announcing itself, a signaling node offering the fleet's live relays, and two
// pages of the browser demo in a relay-only call through relay A. Relay B joins, relay A
// gets SIGTERM: both pages get `relay_moved`, ICE-restart onto relay B (the caller
// offers through `renegotiate`), video keeps decoding, and relay A exits 0. Chromium
// keeps its old-generation TURN allocations after an ICE restart (it frees them when the
// peer connection closes), so relay A exits at its drain timeout (15 s here) rather than
// when the calls have moved; the Rust call client frees them at once
// (callclient/tests/fleet.rs).
//
// Run by tests/browser.rs (`cargo test --workspace`); by hand:
//   npm ci --prefix tests/browser && cargo build && node tests/browser/fleet.test.mjs
// Environment: TURNPIKE_BIN (default target/debug/turnpike), CHROMIUM (default
// /usr/bin/chromium). Needs redis-server. Exits 0 on success; on failure prints why, the
// pages' consoles and the servers' logs, and exits 1.

import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import dgram from "node:dgram";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const BIN = process.env.TURNPIKE_BIN || path.join(repo, "target/debug/turnpike");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOTAL_TIMEOUT_MS = 150_000;
const SECRET = "browser-fleet-secret";

const logs = [];
const cleanups = [];
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const step = (text) => console.log(`[${elapsed()}] ${text}`);

async function fail(why) {
  console.error(`\nFAIL after ${elapsed()}: ${why}\n`);
  console.error("---- page consoles and server logs ----");
  for (const line of logs) console.error(line);
  await cleanup();
  process.exit(1);
}

async function cleanup() {
  while (cleanups.length) {
    const f = cleanups.pop();
    try {
      await f();
    } catch {
      // best effort: the process is ending anyway
    }
  }
}

const timer = setTimeout(() => fail(`timed out after ${TOTAL_TIMEOUT_MS / 1000}s`),
  TOTAL_TIMEOUT_MS);
process.on("unhandledRejection", (e) => fail(`unhandled rejection: ${e && e.stack || e}`));

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  await fail("playwright-core is not installed: run `npm ci --prefix tests/browser`");
}
if (!fs.existsSync(CHROMIUM)) await fail(`no Chromium at ${CHROMIUM}`);
if (!fs.existsSync(BIN)) await fail(`no turnpike binary at ${BIN}: cargo build`);

/** A port free for both UDP and TCP on every address. */
async function freePort() {
  for (let i = 0; i < 50; i++) {
    const srv = net.createServer();
    srv.listen(0, "0.0.0.0");
    await once(srv, "listening");
    const port = srv.address().port;
    const udp = dgram.createSocket("udp4");
    const ok = await new Promise((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, "0.0.0.0", () => resolve(true));
    });
    if (ok) udp.close();
    srv.close();
    if (ok) return port;
  }
  throw new Error("no free port");
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "turnpike-browser-fleet-"));
cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Spawn a child that logs into `logs` as [name] and is killed at cleanup. */
function child(name, cmd, args) {
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  proc.on("error", (e) => fail(`cannot start ${cmd} (${e.message})` +
    (cmd === "redis-server" ? ": apt-get install -y redis-server" : "")));
  const exited = new Promise((resolve) => proc.on("exit", (code) => resolve(code)));
  proc.exited = exited;
  cleanups.push(async () => {
    if (proc.exitCode === null) {
      proc.kill("SIGKILL");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
  });
  for (const stream of [proc.stdout, proc.stderr]) {
    let buf = "";
    stream.on("data", (chunk) => {
      buf += chunk;
      const lines = buf.split("\n");
      buf = lines.pop();
      for (const l of lines) logs.push(`[${name}] ${l}`);
    });
  }
  proc.on("exit", (code) => logs.push(`[${name}] exited with ${code}`));
  return proc;
}

// ------------------------------------------------------------------------ servers

const redisPort = await freePort();
child("redis", "redis-server",
  ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
const redisUrl = `redis://127.0.0.1:${redisPort}/`;

/** A relay announcing itself as `id`; its relay ports are a slice of its own. */
async function startRelay(id, slice) {
  const port = await freePort();
  const portMin = 20000 + slice * 100 + Math.floor(Math.random() * 45) * 200; // 0: even, 1: odd hundreds
  const portMax = portMin + 99;
  const config = path.join(tmp, `${id}.toml`);
  fs.writeFileSync(config, `
[server]
drain_timeout_secs = 15
[listen]
udp = ["0.0.0.0:${port}"]
tcp = []
[relay]
port_min = ${portMin}
port_max = ${portMax}
[auth]
secrets = ["${SECRET}"]
[metrics]
listen = ""
[signaling]
listen = ""
[fleet]
redis_url = "${redisUrl}"
id = "${id}"
region = "eu"
`);
  const proc = child(id, BIN, ["serve", "--config", config, "--workers", "1"]);
  return { proc, port, portMin, portMax };
}

const relayA = await startRelay("relay-a", 0);
const sigPort = await freePort();
const ownRelayPort = await freePort();
const sigConfig = path.join(tmp, "signaling.toml");
fs.writeFileSync(sigConfig, `
[listen]
udp = ["127.0.0.1:${ownRelayPort}"]
tcp = []
[auth]
secrets = ["${SECRET}"]
[metrics]
listen = ""
[signaling]
listen = "127.0.0.1:${sigPort}"
[fleet]
redis_url = "${redisUrl}"
announce = false
`);
child("signaling", BIN, ["serve", "--config", sigConfig, "--workers", "1"]);
const base = `http://127.0.0.1:${sigPort}`;

async function waitFor(what, timeoutMs, check) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last.ok) return last;
    if (Date.now() > deadline) await fail(`${what} (last seen: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

await waitFor("the demo page was not served within 20s", 20_000, async () => {
  try {
    const res = await fetch(`${base}/`);
    return { ok: res.ok && (await res.text()).includes("Turnpike call demo") };
  } catch (e) {
    return { ok: false, error: String(e) };
  }
});
step(`redis on ${redisPort}, relay A on ${relayA.port} (ports ${relayA.portMin}-` +
  `${relayA.portMax}), signaling at ${base}/`);

// ----------------------------------------------------------------------- browsers

const POLICY = "default_public_interface_only";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--disable-background-networking",
  `--webrtc-ip-handling-policy=${POLICY}`,
];

async function openUser(name) {
  const profile = fs.mkdtempSync(path.join(tmp, `chromium-${name}-`));
  fs.mkdirSync(path.join(profile, "Default"));
  fs.writeFileSync(path.join(profile, "Default", "Preferences"),
    JSON.stringify({ webrtc: { ip_handling_policy: POLICY } }));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 960, height: 860 },
    timeout: 30_000,
  });
  cleanups.push(() => context.close());
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(20_000);
  page.on("console", (m) => logs.push(`[${name} console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`[${name} page error] ${e.message}`));
  await page.goto(`${base}/`);
  await page.fill("#name", name);
  // Sign in only once the registry has relay A (the page takes the relays of hello_ok).
  await waitFor(`${name}: no relay offered within 10s`, 10_000, async () => {
    const res = await fetch(`${base}/v1/dev/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: `probe-${name}`, device: "probe" }),
    });
    const { token } = await res.json();
    const creds = await fetch(`${base}/v1/turn-credentials`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await creds.json();
    return { ok: (body.uris || []).length > 0, uris: body.uris };
  });
  await page.click("#login");
  await page.waitForSelector("#app", { state: "visible" });
  return page;
}

const alice = await openUser("alice");
const bob = await openUser("bob");
await alice.fill("#contact", "bob");
await alice.click("#add");
await alice.waitForSelector('#contacts li[data-user="bob"][data-online="true"]');
await alice.click('#contacts li[data-user="bob"] button.call');
await bob.waitForSelector("#incoming", { state: "visible" });
await bob.click("#answer");
step("alice called bob, bob answered");

const callState = (page) => page.evaluate(() => window.turnpikeDemo.callState());
const stats = (page) => page.evaluate(() => window.turnpikeDemo.stats());
const onRelay = (relay) => (c) =>
  c && c.candidateType === "relay" && c.port >= relay.portMin && c.port <= relay.portMax;

/** Both pages' selected pairs on `relay`, with video frames decoding past `frames`. */
async function bothOn(relay, what, frames) {
  const out = {};
  for (const [name, page] of [["alice", alice], ["bob", bob]]) {
    out[name] = await waitFor(`${name}: ${what}`, 30_000, async () => {
      const s = await stats(page);
      const inRelay = onRelay(relay);
      const ok = !!s && inRelay(s.local) && inRelay(s.remote) &&
        s.framesDecoded > (frames ? frames[name] : 0) && s.audioPacketsReceived > 0;
      return { ok, local: s && s.local && s.local.port, remote: s && s.remote && s.remote.port,
        framesDecoded: s && s.framesDecoded, state: await callState(page) };
    });
  }
  return out;
}

const before = await bothOn(relayA, "no relay/relay pair on relay A with media within 30s");
step(`both pages on relay A: frames decoded alice ${before.alice.framesDecoded}, ` +
  `bob ${before.bob.framesDecoded}`);

// Relay B joins; then relay A is taken down the way a deploy does it.
const relayB = await startRelay("relay-b", 1);
await new Promise((r) => setTimeout(r, 1500));
const drainAt = Date.now();
relayA.proc.kill("SIGTERM");
step(`relay B up on ${relayB.port} (ports ${relayB.portMin}-${relayB.portMax}); ` +
  "SIGTERM to relay A");

const frames = { alice: before.alice.framesDecoded, bob: before.bob.framesDecoded };
const after = await bothOn(relayB, "not on relay B with video decoding within 30s of the drain",
  frames);
step(`both pages on relay B ${((Date.now() - drainAt) / 1000).toFixed(1)}s after SIGTERM: ` +
  `frames decoded alice ${after.alice.framesDecoded}, bob ${after.bob.framesDecoded}`);
await new Promise((r) => setTimeout(r, 1000));
for (const [name, page] of [["alice", alice], ["bob", bob]]) {
  if ((await callState(page)) !== "connected") await fail(`${name}'s call is not connected`);
  const again = await stats(page);
  if (!(again.framesDecoded > after[name].framesDecoded)) {
    await fail(`${name}: video stopped decoding on relay B`);
  }
  const log = await page.textContent("#log");
  if (!/relay relay-a is draining/.test(log)) await fail(`${name}'s page never heard relay_moved`);
}

const code = await Promise.race([
  relayA.proc.exited,
  new Promise((r) => setTimeout(() => r("still running"), 25_000)),
]);
if (code !== 0) await fail(`relay A did not exit 0 within 25s of the drain: ${code}`);
step(`relay A exited 0 ${((Date.now() - drainAt) / 1000).toFixed(1)}s after SIGTERM`);
// Its exit cut the old allocations; the calls are on relay B and go on.
await bothOn(relayB, "the call did not go on on relay B after relay A exited", {
  alice: after.alice.framesDecoded + 1,
  bob: after.bob.framesDecoded + 1,
});
step("both calls still on relay B with video decoding after relay A exited");

clearTimeout(timer);
await cleanup();
step("PASS");
process.exit(0);
