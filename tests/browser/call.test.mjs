// Two headless Chromium pages call each other through Turnpike: the browser demo served
// by `turnpike serve` at `/`, dev login, presence, invite/answer over the signaling
// WebSocket, media relay-only through Turnpike's TURN server, what the relay measured of
// the call (GET /v1/allocations and /metrics with telemetry.rtp_quality on), then hangup.
//
// Run by tests/browser.rs (`cargo test --workspace`); by hand:
//   npm ci --prefix tests/browser && cargo build && node tests/browser/call.test.mjs
// Environment: TURNPIKE_BIN (default target/debug/turnpike), CHROMIUM (default
// /usr/bin/chromium), SCREENSHOT (a PNG path for alice's page; bob's gets "-bob.png"),
// DEMO_URL (test a server that is already running, e.g. http://127.0.0.1:8080 for
// `cargo run --release -- serve` on the embedded defaults, relay ports 49152-65535).
// Exits 0 on success; on failure prints why, both pages' console and the server's log,
// and exits 1.

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

const logs = []; // every page console line and server line, printed on failure
const cleanups = [];
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const step = (text) => console.log(`[${elapsed()}] ${text}`);

async function fail(why) {
  console.error(`\nFAIL after ${elapsed()}: ${why}\n`);
  console.error("---- page consoles and server log ----");
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

// ------------------------------------------------------------------ prerequisites

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  await fail("playwright-core is not installed: run `npm ci --prefix tests/browser`");
}
if (!fs.existsSync(CHROMIUM)) {
  await fail(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
}
if (!process.env.DEMO_URL && !fs.existsSync(BIN)) {
  await fail(`no turnpike binary at ${BIN}: cargo build (or set TURNPIKE_BIN)`);
}

// ------------------------------------------------------------------------ server

/** A port free for both UDP and TCP on every address (TURN listens on both). */
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

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "turnpike-browser-"));
cleanups.push(() => fs.rmSync(tmp, { recursive: true, force: true }));

let base, portMin, portMax, metricsBase;
if (process.env.DEMO_URL) {
  base = process.env.DEMO_URL.replace(/\/$/, "");
  [portMin, portMax] = [49152, 65535]; // config/turnpike.toml's relay range
  step(`testing the running server at ${base}/`);
} else {
  ({ base, portMin, portMax, metricsBase } = await startServer());
}

async function startServer() {
  const turnPort = await freePort();
  const sigPort = await freePort();
  const metricsPort = await freePort();
  // Relay ports outside Linux's ephemeral range (32768-60999), where client sockets of
  // other tests could take them; a random slice so parallel runs rarely meet.
  const portMin = 20000 + Math.floor(Math.random() * 90) * 100;
  const portMax = portMin + 99;

  // The embedded default configuration, with only the ports moved so the test runs beside
  // anything else (metrics on a free loopback port, where the admin endpoints are
  // mounted too) and call-quality telemetry on: same wildcard listeners, same peer
  // policy, same dev login and ephemeral shared secret.
  const config = `
  [listen]
  udp = ["0.0.0.0:${turnPort}", "[::]:${turnPort}"]
  tcp = ["0.0.0.0:${turnPort}", "[::]:${turnPort}"]
  [relay]
  port_min = ${portMin}
  port_max = ${portMax}
  [metrics]
  listen = "127.0.0.1:${metricsPort}"
  [signaling]
  listen = "127.0.0.1:${sigPort}"
  [telemetry]
  rtp_quality = true
  `;
  const configPath = path.join(tmp, "turnpike.toml");
  fs.writeFileSync(configPath, config);

  const server = spawn(BIN, ["serve", "--config", configPath, "--workers", "2"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const serverExited = new Promise((resolve) => server.on("exit", resolve));
  cleanups.push(async () => {
    if (server.exitCode === null) {
      server.kill("SIGTERM");
      await Promise.race([serverExited, new Promise((r) => setTimeout(r, 5000))]);
      if (server.exitCode === null) server.kill("SIGKILL");
    }
  });
  for (const stream of [server.stdout, server.stderr]) {
    let buf = "";
    stream.on("data", (chunk) => {
      buf += chunk;
      const lines = buf.split("\n");
      buf = lines.pop();
      for (const l of lines) logs.push(`[server] ${l}`);
    });
  }
  server.on("exit", (code) => logs.push(`[server] exited with ${code}`));

  const base = `http://127.0.0.1:${sigPort}`;
  const ready = Date.now() + 20_000;
  for (;;) {
    if (server.exitCode !== null) await fail(`turnpike serve exited with ${server.exitCode}`);
    try {
      const res = await fetch(`${base}/`);
      if (res.ok && (await res.text()).includes("Turnpike call demo")) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > ready) await fail("the demo page was not served within 20s");
    await new Promise((r) => setTimeout(r, 100));
  }
  step(`turnpike serve up: TURN on port ${turnPort}, relay ports ${portMin}-${portMax}, ` +
    `demo at ${base}/`);
  return { base, portMin, portMax, metricsBase: `http://127.0.0.1:${metricsPort}` };
}

// ----------------------------------------------------------------------- browsers

// Headless Chromium binds its WebRTC sockets to the non-loopback interface unless the
// IP-handling policy says otherwise; the flag and the profile preference together keep
// the traffic where the relay listens.
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
  // A fresh profile per page, its preference written before Chromium starts.
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
  await page.click("#login");
  await page.waitForSelector("#app", { state: "visible" });
  return page;
}

const alice = await openUser("alice");
const bob = await openUser("bob");
step("alice and bob signed in");

// Presence: alice watches bob and sees him online.
await alice.fill("#contact", "bob");
await alice.click("#add");
await alice.waitForSelector('#contacts li[data-user="bob"][data-online="true"]');
step("alice sees bob online");

// alice calls; bob's page rings; bob answers.
await alice.click('#contacts li[data-user="bob"] button.call');
await bob.waitForSelector("#incoming", { state: "visible" });
const from = await bob.textContent("#incoming-from");
if (from !== "alice") await fail(`bob's page says the call is from ${JSON.stringify(from)}`);
await bob.click("#answer");
step("bob answered");

const callState = (page) => page.evaluate(() => window.turnpikeDemo.callState());
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

await waitFor("the call did not connect on both pages within 30s", 30_000, async () => {
  const a = await callState(alice);
  const b = await callState(bob);
  return { ok: a === "connected" && b === "connected", alice: a, bob: b };
});
step("call connected on both pages");

// The relay's addresses: our own interface addresses, on its relay port range.
const ownIps = new Set(Object.values(os.networkInterfaces()).flat().map((i) => i.address));
const throughTurnpike = (c) =>
  c && c.candidateType === "relay" && ownIps.has(c.address || c.ip) &&
  c.port >= portMin && c.port <= portMax;

const summaries = {};
for (const [name, page] of [["alice", alice], ["bob", bob]]) {
  const s = await waitFor(`${name}: no relay/relay pair with media within 30s`, 30_000,
    async () => {
      const s = await page.evaluate(() => window.turnpikeDemo.stats());
      const ok = !!s && throughTurnpike(s.local) && throughTurnpike(s.remote) &&
        s.framesDecoded > 0 && s.audioPacketsReceived > 0;
      return { ok, ...s };
    });
  summaries[name] = s;
  const cand = (c) => `${c.candidateType} ${c.address || c.ip}:${c.port}`;
  step(`${name}: selected pair local ${cand(s.local)} <-> remote ${cand(s.remote)}; ` +
    `video frames decoded ${s.framesDecoded}, audio packets received ` +
    `${s.audioPacketsReceived}`);
}

// The page shows what the test read: the path and a bitrate.
await waitFor("the pages do not show a bitrate", 10_000, async () => {
  const a = await alice.textContent("#bitrate");
  const b = await bob.textContent("#bitrate");
  return { ok: /kbit\/s/.test(a) && /kbit\/s/.test(b), alice: a, bob: b };
});
if (process.env.SCREENSHOT) {
  const shots = [await alice.screenshot(), await bob.screenshot()];
  fs.writeFileSync(process.env.SCREENSHOT, shots[0]);
  fs.writeFileSync(process.env.SCREENSHOT.replace(/\.png$/, "") + "-bob.png", shots[1]);
  step(`screenshots written to ${process.env.SCREENSHOT} (+ -bob.png)`);
}

// ------------------------------------------------------------------ call quality

// The relay measured the call (telemetry.rtp_quality): GET /v1/allocations on the metrics
// listener shows both allocations that carry the call's media, each with Opus audio (48 kHz
// clock) and video (90 kHz) both ways, and none of those streams losing more than 1% on
// loopback over its last 5-second interval. (While ICE still tries pairs, Chromium sends
// its first packets over other candidates' allocations: those carry a handful of RTP
// packets, and the main streams' totals miss them, so totals are not the measure.) /metrics
// counts the RTP, RTCP and DTLS payloads it relayed, both ways. Against DEMO_URL the test
// does not know the server's metrics listener, and says so.
const MIN_PACKETS = 100;
if (metricsBase) {
  const has = (a, direction, kind, clockRate) => a.streams.some((s) =>
    s.direction === direction && s.kind === kind && s.clock_rate === clockRate &&
    s.expected >= MIN_PACKETS && s.interval_loss_ratio !== null);
  const complete = (a) => ["to_peer", "to_client"].every((d) =>
    has(a, d, "audio", 48000) && has(a, d, "video", 90000));
  const { doc } = await waitFor("the relay did not report audio and video both ways on two " +
    "allocations within 20s", 20_000, async () => {
    try {
      const doc = await (await fetch(`${metricsBase}/v1/allocations`)).json();
      const media = doc.allocations.filter((a) =>
        a.streams.some((s) => s.expected >= MIN_PACKETS));
      const ok = doc.rtp_quality === true && media.length === 2 && media.every(complete);
      return { ok, doc };
    } catch (e) {
      return { ok: false, error: String(e) };
    }
  });
  const streams = doc.allocations.flatMap((a) => a.streams.map((s) => ({ user: a.user, ...s })));
  for (const s of streams) {
    step(`relay: ${s.user} ${s.direction} ${s.kind} (${s.clock_rate ?? "no"} Hz clock): ` +
      `${s.lost} of ${s.expected} lost (${(100 * s.loss_ratio).toFixed(2)}%), ` +
      `${s.reordered} reordered, ${s.duplicates} duplicates, jitter ` +
      `${s.jitter_ms === null ? "-" : s.jitter_ms.toFixed(2)} ms`);
  }
  const lossy = streams.filter((s) => s.expected >= MIN_PACKETS &&
    !(s.interval_loss_ratio !== null && s.interval_loss_ratio <= 0.01));
  if (lossy.length) {
    await fail(`the relay reports loss above 1% in a 5-second interval: ${JSON.stringify(lossy)}`);
  }

  const text = await (await fetch(`${metricsBase}/metrics`)).text();
  const payloads = {};
  for (const m of text.matchAll(/^turnpike_relayed_payloads_total\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="([^"]*)"/g)]
      .map((l) => [l[1], l[2]]));
    payloads[`${labels.direction} ${labels.kind}`] = Number(m[2]);
  }
  for (const direction of ["to_peer", "to_client"]) {
    for (const kind of ["rtp", "rtcp", "dtls"]) {
      if (!(payloads[`${direction} ${kind}`] > 0)) {
        await fail(`no ${kind} payloads counted ${direction}: ${JSON.stringify(payloads)}`);
      }
    }
  }
  step(`relay: payloads ${JSON.stringify(payloads)}`);
} else {
  step("call quality not checked: DEMO_URL's metrics listener is unknown to the test");
}

// alice hangs up: both pages end the call.
await alice.click("#hangup");
await waitFor("hangup did not end the call on both pages within 10s", 10_000, async () => {
  const a = await callState(alice);
  const b = await callState(bob);
  return { ok: a === "ended" && b === "ended", alice: a, bob: b };
});
const bobLog = await bob.textContent("#log");
if (!/ended: hangup by alice/.test(bobLog)) await fail("bob's page does not say alice hung up");
step("hangup ended the call on both pages");

clearTimeout(timer);
await cleanup();
step("PASS");
process.exit(0);
