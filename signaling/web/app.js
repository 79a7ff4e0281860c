// Turnpike call demo: dev login, presence, one call at a time over Turnpike's signaling
// (docs/signaling.md), media relayed through Turnpike (ICE servers from hello_ok).
// Plain browser JavaScript, no build step: the server embeds this file as it is.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  user: null,
  ws: null,
  iceServers: [],
  nextId: 1,
  lastSeq: 0,
  contacts: new Map(), // name -> online
  call: null, // see newCall()
  localStream: null,
  statsTimer: null,
  lastBytes: null, // {at, in, out} for the bitrate
  stats: {}, // the latest summary, also read by the browser test
};

// ---------------------------------------------------------------------------- log

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(li);
  console.log(`[demo] ${text}`);
}

// ---------------------------------------------------------------------- signaling

function send(type, fields = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    log(`cannot send ${type}: not connected`);
    return;
  }
  const msg = { v: 1, id: `m${state.nextId++}`, type, ...fields };
  state.ws.send(JSON.stringify(msg));
}

async function login(name) {
  // A device name per tab, so two tabs of the same user are two devices.
  const device = `web-${Math.random().toString(36).slice(2, 10)}`;
  const res = await fetch("/v1/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user: name, device }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.reason || `dev login failed (${res.status})`);
  state.token = body.token;
  state.user = body.user;
  connect();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/v1/signal`);
  state.ws = ws;
  ws.onopen = () => send("hello", { token: state.token, watch: [...state.contacts.keys()] });
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return log("server sent something that is not JSON");
    }
    if (msg.seq > state.lastSeq) state.lastSeq = msg.seq;
    onMessage(msg);
    // The server keeps unacknowledged messages for a resume; tell it we have these.
    if (msg.seq && msg.seq % 16 === 0) send("ack", { last_seq: state.lastSeq });
  };
  ws.onclose = (ev) => {
    log(`signaling closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    $("whoami").textContent = `${state.user} (disconnected: reload to sign in again)`;
    if (state.call) endCall("signaling closed");
  };
}

function onMessage(msg) {
  switch (msg.type) {
    case "hello_ok":
      state.iceServers = msg.ice_servers || [];
      $("login-card").hidden = true;
      $("app").hidden = false;
      $("whoami").textContent = `signed in as ${msg.user} (device ${msg.device})`;
      $("relays").textContent = "Relays: " +
        state.iceServers.flatMap((s) => s.urls).join(", ");
      log(`signed in as ${msg.user}; ${state.iceServers.length} relay(s) offered`);
      // TURN REST credentials expire: ask for fresh ones before they do.
      if (msg.ice_ttl > 60) setTimeout(() => send("turn_refresh"), msg.ice_ttl * 800);
      break;
    case "ice_servers":
      state.iceServers = msg.ice_servers || [];
      if (msg.ttl > 60) setTimeout(() => send("turn_refresh"), msg.ttl * 800);
      break;
    case "presence":
      setContact(msg.user, msg.online);
      break;
    case "missed_call":
      log(`missed call from ${msg.from}`);
      break;
    case "invite":
      onInvite(msg);
      break;
    case "ringing":
      if (isCall(msg)) setCallState("ringing");
      break;
    case "accept":
      if (isCall(msg)) onAccept(msg);
      break;
    case "accepted":
      if (isCall(msg)) {
        state.call.accepted = true;
        // The callee may trickle only once its accept won (docs/signaling.md).
        for (const c of state.call.pendingLocal) sendIce(c);
        state.call.pendingLocal = [];
      }
      break;
    case "answered_elsewhere":
      if (isCall(msg)) endCall("answered on another device");
      break;
    case "ice":
      if (isCall(msg)) onRemoteIce(msg);
      break;
    case "connected":
      if (isCall(msg)) log(`${msg.from} reports media flowing`);
      break;
    case "relay_moved":
      if (isCall(msg)) onRelayMoved(msg).catch(callFailed);
      break;
    case "renegotiate":
      if (isCall(msg)) onRenegotiate(msg).catch(callFailed);
      break;
    case "call_ended":
      if (isCall(msg)) endCall(`${msg.reason}${msg.by ? " by " + msg.by : ""}`);
      break;
    case "error":
      log(`error ${msg.code}: ${msg.reason}`);
      break;
    default:
      break;
  }
}

// ------------------------------------------------------------------------ contacts

function setContact(name, online) {
  state.contacts.set(name, online);
  let li = document.querySelector(`#contacts li[data-user="${CSS.escape(name)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.user = name;
    li.innerHTML = `<span class="dot"></span><span class="name"></span>` +
      `<button class="call">Call</button>`;
    li.querySelector(".name").textContent = name;
    li.querySelector(".call").onclick = () => placeCall(name).catch(callFailed);
    $("contacts").append(li);
  }
  li.dataset.online = String(online);
  li.querySelector(".call").disabled = !online;
}

// --------------------------------------------------------------------------- calls

function isCall(msg) {
  return state.call && state.call.id === msg.call_id;
}

function newCall(id, peer, role) {
  return {
    id,
    peer,
    role, // "caller" | "callee"
    pc: null,
    accepted: role === "caller", // the caller may trickle at once
    pendingLocal: [], // our candidates held until we may send them
    pendingRemote: [], // theirs, held until the remote description is set
    offer: null,
    connectedSent: false,
  };
}

function setCallState(s) {
  $("call-state").textContent = s;
  $("call-state").dataset.state = s;
  $("hangup").disabled = !["calling", "ringing", "connecting", "connected"].includes(s);
}

function callFailed(err) {
  log(`call failed: ${err.message || err}`);
  if (state.call) {
    send("hangup", { call_id: state.call.id, reason: "client error" });
    endCall("failed");
  }
}

async function media() {
  if (!state.localStream) {
    state.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    $("local-video").srcObject = state.localStream;
  }
  return state.localStream;
}

function makePeerConnection() {
  const relayOnly = !$("allow-direct").checked;
  const pc = new RTCPeerConnection({
    iceServers: state.iceServers,
    // Relay only: the peers never learn each other's addresses.
    iceTransportPolicy: relayOnly ? "relay" : "all",
  });
  const call = state.call;
  pc.onicecandidate = (ev) => {
    if (state.call !== call) return;
    const c = ev.candidate ? ev.candidate.toJSON() : null;
    if (call.accepted) sendIce(c);
    else call.pendingLocal.push(c);
  };
  pc.ontrack = (ev) => {
    const video = $("remote-video");
    if (video.srcObject !== ev.streams[0]) video.srcObject = ev.streams[0];
  };
  pc.onconnectionstatechange = () => {
    if (state.call !== call) return;
    log(`peer connection ${pc.connectionState}`);
    if (pc.connectionState === "connected") {
      setCallState("connected");
      if (!call.connectedSent) {
        call.connectedSent = true;
        send("connected", { call_id: call.id });
      }
    } else if (pc.connectionState === "failed") {
      callFailed(new Error("ICE/DTLS failed"));
    }
  };
  for (const track of state.localStream.getTracks()) pc.addTrack(track, state.localStream);
  call.pc = pc;
  startStats();
  return pc;
}

function sendIce(candidate) {
  if (candidate && candidate.candidate) {
    send("ice", { call_id: state.call.id, candidate });
  } else if (!candidate) {
    send("ice", { call_id: state.call.id, end_of_candidates: true });
  }
}

async function placeCall(to) {
  if (state.call) return log("already in a call");
  const id = crypto.randomUUID().replace(/-/g, "").slice(0, 24);
  state.call = newCall(id, to, "caller");
  $("peer").textContent = to;
  setCallState("calling");
  await media();
  const pc = makePeerConnection();
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send("invite", { call_id: id, to, sdp: offer.sdp });
  log(`calling ${to}`);
}

function onInvite(msg) {
  if (state.call) {
    send("busy", { call_id: msg.call_id });
    return log(`${msg.from} called while we were busy`);
  }
  state.call = newCall(msg.call_id, msg.from, "callee");
  state.call.offer = msg.sdp;
  send("ringing", { call_id: msg.call_id });
  $("incoming-from").textContent = msg.from;
  $("incoming").hidden = false;
  $("peer").textContent = msg.from;
  setCallState("ringing");
  log(`incoming call from ${msg.from}`);
}

async function answer() {
  const call = state.call;
  if (!call || call.role !== "callee" || call.pc) return;
  $("incoming").hidden = true;
  setCallState("connecting");
  await media();
  const pc = makePeerConnection();
  await pc.setRemoteDescription({ type: "offer", sdp: call.offer });
  await flushRemote();
  const ans = await pc.createAnswer();
  await pc.setLocalDescription(ans);
  send("accept", { call_id: call.id, sdp: ans.sdp });
  log(`answered ${call.peer}`);
}

function reject() {
  if (!state.call || state.call.role !== "callee") return;
  send("reject", { call_id: state.call.id });
  endCall("rejected");
}

async function onAccept(msg) {
  setCallState("connecting");
  await state.call.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  await flushRemote();
  log(`${msg.from} answered`);
}

// The relay this call runs through is draining (docs/signaling.md, "Fleet"): take the
// new relays, and the caller restarts ICE with a new offer; the callee answers it.
async function onRelayMoved(msg) {
  const call = state.call;
  state.iceServers = msg.ice_servers || [];
  log(`relay ${msg.relay} is draining: moving the call`);
  call.pc.setConfiguration({ ...call.pc.getConfiguration(), iceServers: state.iceServers });
  if (msg.offer) {
    call.pc.restartIce();
    const offer = await call.pc.createOffer({ iceRestart: true });
    await call.pc.setLocalDescription(offer);
    send("renegotiate", { call_id: call.id, sdp: offer.sdp, answer: false });
  }
}

async function onRenegotiate(msg) {
  const call = state.call;
  if (msg.answer) {
    await call.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    log("ICE restart answered");
    return;
  }
  await call.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  const answer = await call.pc.createAnswer();
  await call.pc.setLocalDescription(answer);
  send("renegotiate", { call_id: call.id, sdp: answer.sdp, answer: true });
  log("ICE restart: answered the new offer");
}

async function onRemoteIce(msg) {
  const call = state.call;
  const cand = msg.end_of_candidates ? null : msg.candidate;
  if (!call.pc || !call.pc.remoteDescription) {
    call.pendingRemote.push(cand);
    return;
  }
  await addRemote(call.pc, cand);
}

async function flushRemote() {
  const call = state.call;
  const queued = call.pendingRemote;
  call.pendingRemote = [];
  for (const c of queued) await addRemote(call.pc, c);
}

async function addRemote(pc, cand) {
  try {
    // No argument: end of candidates (RFC 8838).
    await (cand ? pc.addIceCandidate(cand) : pc.addIceCandidate());
  } catch (e) {
    log(`bad remote candidate: ${e.message}`);
  }
}

function hangup() {
  if (!state.call) return;
  send("hangup", { call_id: state.call.id, reason: "bye" });
  endCall("hung up");
}

function endCall(why) {
  const call = state.call;
  if (!call) return;
  state.call = null;
  if (call.pc) call.pc.close();
  stopStats();
  $("incoming").hidden = true;
  $("remote-video").srcObject = null;
  setCallState("ended");
  log(`call with ${call.peer} ended: ${why}`);
}

// --------------------------------------------------------------------------- stats

function candidateText(c) {
  if (!c) return "–";
  const addr = c.address || c.ip || "?";
  const relay = c.candidateType === "relay" && c.relayProtocol ? ` via ${c.relayProtocol}` : "";
  return `${c.candidateType} ${addr}:${c.port} (${c.protocol}${relay})`;
}

async function collectStats(pc) {
  const report = await pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let pair = null;
  const out = { bytesIn: 0, bytesOut: 0, framesDecoded: 0, audioPacketsReceived: 0 };
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = byId.get(s.selectedCandidatePairId) || pair;
    }
    if (s.type === "inbound-rtp") {
      out.bytesIn += s.bytesReceived || 0;
      if (s.kind === "video") out.framesDecoded += s.framesDecoded || 0;
      if (s.kind === "audio") out.audioPacketsReceived += s.packetsReceived || 0;
    }
    if (s.type === "outbound-rtp") out.bytesOut += s.bytesSent || 0;
  });
  if (pair) {
    out.local = byId.get(pair.localCandidateId) || null;
    out.remote = byId.get(pair.remoteCandidateId) || null;
    out.rtt = pair.currentRoundTripTime;
  }
  return out;
}

async function updateStats() {
  const call = state.call;
  if (!call || !call.pc) return;
  const s = await collectStats(call.pc);
  const now = performance.now();
  if (state.lastBytes) {
    const secs = (now - state.lastBytes.at) / 1000;
    s.kbpsIn = Math.round(((s.bytesIn - state.lastBytes.in) * 8) / secs / 1000);
    s.kbpsOut = Math.round(((s.bytesOut - state.lastBytes.out) * 8) / secs / 1000);
    $("bitrate").textContent = `${s.kbpsIn} / ${s.kbpsOut} kbit/s`;
  }
  state.lastBytes = { at: now, in: s.bytesIn, out: s.bytesOut };
  state.stats = s;
  $("local-cand").textContent = candidateText(s.local);
  $("remote-cand").textContent = candidateText(s.remote);
  // The TURN server our relayed candidate came from (empty for a direct path).
  $("relay-url").textContent = (s.local && s.local.url) || "–";
  // Tell signaling which relay the call runs through, so a drain of it moves the call.
  if (call.connectedSent && s.local && s.local.url && s.local.url !== call.relayReported) {
    call.relayReported = s.local.url;
    send("relay_used", { call_id: call.id, relay: s.local.url });
  }
  $("frames").textContent = String(s.framesDecoded);
  $("audio").textContent = String(s.audioPacketsReceived);
  $("rtt").textContent = s.rtt === undefined ? "–" : `${Math.round(s.rtt * 1000)} ms`;
}

function startStats() {
  stopStats();
  state.lastBytes = null;
  state.statsTimer = setInterval(() => updateStats().catch((e) => log(e.message)), 1000);
}

function stopStats() {
  if (state.statsTimer) clearInterval(state.statsTimer);
  state.statsTimer = null;
}

// ---------------------------------------------------------------------------- wiring

$("login-form").onsubmit = (ev) => {
  ev.preventDefault();
  login($("name").value.trim()).catch((e) => log(`sign-in failed: ${e.message}`));
};
$("contact-form").onsubmit = (ev) => {
  ev.preventDefault();
  const name = $("contact").value.trim();
  $("contact").value = "";
  if (!name || name === state.user || state.contacts.has(name)) return;
  setContact(name, false);
  send("watch", { users: [name] });
};
$("answer").onclick = () => answer().catch(callFailed);
$("reject").onclick = reject;
$("hangup").onclick = hangup;

// For automated tests (tests/browser/): read-only views of the call.
window.turnpikeDemo = {
  callState: () => $("call-state").dataset.state,
  stats: async () => (state.call && state.call.pc ? collectStats(state.call.pc) : null),
};
