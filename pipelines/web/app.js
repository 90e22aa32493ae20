// gst-moshi's page: microphone -> Opus (WebCodecs AudioEncoder) -> Ogg
// pages -> websocket kind 1; kind 1 back -> Ogg reader -> AudioDecoder ->
// speakers; kind 2 / 7 -> transcript.  Protocol: docs/server.md.
"use strict";
import { OggOpusWriter, OggReader } from "./ogg.js";

const RATE = 24000;
const $ = (id) => document.getElementById(id);

// Counters, also read by the browser test (tests/test-server-browser.c).
const stats = (window.moshiStats = {
  state: "idle", handshake: false, audioSent: 0, audioRecv: 0, textRecv: 0,
  decodedSamples: 0, playedSamples: 0, latencyMs: null, errors: [], text: "",
});

let ws = null, ctx = null, micStream = null, encoder = null, decoder = null;
let writer = null, reader = null, playTime = 0, sentTimes = [], image = null;

function setState(s, cls = s) {
  stats.state = s;
  $("state").textContent = s;
  $("state").className = "state " + cls;
}

function showStats() {
  $("stats").textContent =
    `sent ${stats.audioSent} audio pages · received ${stats.audioRecv} audio pages, ` +
    `${stats.textRecv} text pieces · played ${(stats.playedSamples / RATE).toFixed(1)} s`;
  $("latency").textContent = stats.latencyMs == null ? "latency: –" : `latency: ${Math.round(stats.latencyMs)} ms`;
}

function fail(msg) {
  stats.errors.push(String(msg));
  $("error").textContent = String(msg);
  console.error(msg);
}

function queryString() {
  const q = new URLSearchParams();
  for (const k of ["text_temperature", "text_topk", "audio_temperature", "audio_topk", "text_seed"]) {
    const v = $(k).value.trim();
    if (v !== "") q.set(k, v);
  }
  if ($("text_seed").value.trim() !== "") q.set("audio_seed", $("text_seed").value.trim());
  const token = new URLSearchParams(location.search).get("token");
  if (token) q.set("token", token);
  const s = q.toString();
  return s ? "?" + s : "";
}

function addText(piece, gate) {
  stats.text += piece;
  const span = document.createElement("span");
  span.textContent = piece;
  if (gate != null) {
    span.dataset.gate = gate;
    span.title = `gate intensity ${gate}/10`;
    span.style.background = `hsla(200, 90%, 55%, ${gate / 10})`;
  }
  $("transcript").append(span);
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

// --- playback -------------------------------------------------------------
function play(audioData) {
  const n = audioData.numberOfFrames;
  const pcm = new Float32Array(n);
  audioData.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
  audioData.close();
  stats.decodedSamples += n;
  const buf = ctx.createBuffer(1, n, RATE);
  buf.copyToChannel(pcm, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  // A small jitter buffer: start 60 ms ahead when the queue ran dry.
  playTime = Math.max(playTime, ctx.currentTime + 0.06);
  src.start(playTime);
  playTime += n / RATE;
  src.onended = () => { stats.playedSamples += n; };
}

let outTimestamp = 0;
function onAudio(bytes) {
  if (!decoder || decoder.state === "closed") return;
  stats.audioRecv++;
  for (const { packet, granule } of reader.push(bytes)) {
    const head = new TextDecoder().decode(packet.subarray(0, 8));
    if (head === "OpusHead" || head === "OpusTags") continue;
    decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: outTimestamp, data: packet }));
    outTimestamp += 20000;
    // Latency: the reply for input time t comes back with granule ~t.
    while (sentTimes.length > 1 && sentTimes[1][0] <= granule) sentTimes.shift();
    if (sentTimes.length && sentTimes[0][0] <= granule) {
      const lat = performance.now() - sentTimes[0][1];
      stats.latencyMs = stats.latencyMs == null ? lat : 0.9 * stats.latencyMs + 0.1 * lat;
    }
  }
}

// --- capture --------------------------------------------------------------
async function startMic() {
  micStream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  await ctx.audioWorklet.addModule("capture-worklet.js");
  const node = new AudioWorkletNode(ctx, "capture");
  ctx.createMediaStreamSource(micStream).connect(node);
  writer = new OggOpusWriter({ sampleRate: RATE });
  for (const page of writer.headers()) sendAudio(page);
  encoder = new AudioEncoder({
    output: (chunk) => {
      const data = new Uint8Array(chunk.byteLength);
      chunk.copyTo(data);
      const page = writer.packet(data, chunk.duration || 20000);
      sentTimes.push([writer.granule, performance.now()]);
      if (sentTimes.length > 500) sentTimes.shift();
      sendAudio(page);
    },
    error: (e) => fail("encoder: " + e.message),
  });
  encoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: 32000,
                      opus: { frameDuration: 20000 } });
  let ts = 0, acc = new Float32Array(480), fill = 0;
  node.port.onmessage = (e) => {
    const x = e.data;
    for (let i = 0; i < x.length; i++) {
      acc[fill++] = x[i];
      if (fill === acc.length) {
        encoder.encode(new AudioData({ format: "f32", sampleRate: RATE, numberOfFrames: 480,
                                        numberOfChannels: 1, timestamp: ts, data: acc }));
        ts += 20000;
        acc = new Float32Array(480);
        fill = 0;
      }
    }
  };
}

function sendAudio(page) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const msg = new Uint8Array(page.length + 1);
  msg[0] = 1;
  msg.set(page, 1);
  ws.send(msg);
  stats.audioSent++;
}

// --- session --------------------------------------------------------------
async function start() {
  if (!("AudioEncoder" in window) || !("AudioDecoder" in window)) {
    fail("this browser has no WebCodecs audio (AudioEncoder/AudioDecoder): use a recent Chromium, Chrome, Edge or Safari");
    return;
  }
  $("start").disabled = true;
  $("stop").disabled = false;
  $("error").textContent = "";
  ctx = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
  await ctx.resume();
  playTime = 0;
  sentTimes = [];
  outTimestamp = 0;
  reader = new OggReader();
  decoder = new AudioDecoder({ output: play, error: (e) => fail("decoder: " + e.message) });
  decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  setState("connecting");
  ws = new WebSocket(`${proto}//${location.host}/api/chat${queryString()}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    if ($("send_image").checked && image) {
      const msg = new Uint8Array(image.length + 1);
      msg[0] = 8;
      msg.set(image, 1);
      ws.send(msg);
    }
  };
  ws.onmessage = async (ev) => {
    const m = new Uint8Array(ev.data);
    if (!m.length) return;
    const body = m.subarray(1);
    switch (m[0]) {
      case 0:
        stats.handshake = true;
        setState("connected");
        try { await startMic(); } catch (e) { fail("microphone: " + e.message); stop(); }
        break;
      case 1: try { onAudio(body); } catch (e) { fail("audio: " + e.message); } break;
      case 2: stats.textRecv++; addText(new TextDecoder().decode(body), null); break;
      case 7: stats.textRecv++; addText(new TextDecoder().decode(body.subarray(1)), body[0]); break;
      case 4: console.log("server settings", new TextDecoder().decode(body)); break;
      case 5: fail("server: " + new TextDecoder().decode(body)); break;
      default: break; // unknown kinds are ignored
    }
  };
  ws.onclose = (ev) => {
    setState(ev.code === 1000 ? "closed" : `closed (${ev.code})`, ev.code === 1000 ? "idle" : "error");
    stop();
  };
  ws.onerror = () => setState("connection error", "error");
}

function stop() {
  $("start").disabled = false;
  $("stop").disabled = true;
  if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000);
  ws = null;
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  micStream = null;
  for (const c of [encoder, decoder]) if (c && c.state !== "closed") c.close();
  encoder = decoder = null;
  if (ctx) ctx.close();
  ctx = null;
}

// --- image (MoshiVis) -----------------------------------------------------
function preview(blob) {
  const img = new Image();
  img.onload = () => {
    const c = $("preview");
    c.hidden = false;
    c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
    URL.revokeObjectURL(img.src);
  };
  img.src = URL.createObjectURL(blob);
}

$("image_file").onchange = async (e) => {
  const f = e.target.files[0];
  if (!f) return;
  image = new Uint8Array(await f.arrayBuffer());
  $("send_image").checked = true;
  preview(f);
};

$("snapshot").onclick = async () => {
  try {
    const v = $("camera");
    const s = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
    v.srcObject = s;
    v.hidden = false;
    await v.play();
    await new Promise((r) => setTimeout(r, 500));
    const c = document.createElement("canvas");
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    c.getContext("2d").drawImage(v, 0, 0);
    s.getTracks().forEach((t) => t.stop());
    v.hidden = true;
    const blob = await new Promise((r) => c.toBlob(r, "image/jpeg", 0.9));
    image = new Uint8Array(await blob.arrayBuffer());
    $("send_image").checked = true;
    preview(blob);
  } catch (e) {
    fail("camera: " + e.message);
  }
};

$("start").onclick = () => start().catch((e) => fail(e.message));
$("stop").onclick = stop;
setInterval(showStats, 250);
// ?autostart=1: start without a click (kiosk use, the browser test).
if (new URLSearchParams(location.search).get("autostart")) start().catch((e) => fail(e.message));
