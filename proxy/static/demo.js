// The demo page's client: the component protocol over one WebSocket, nothing else. No dependencies, no build step.
const MIC_RATE = 16000; // what the component sends: 16 kHz mono PCM16 little-endian
const LOG_LIMIT = 500; // event log rows kept; older ones are dropped so a long session stays light

const $ = (id) => document.getElementById(id);
const ui = {
  connect: $("connect"), route: $("route"), rate: $("rate"), token: $("token"), status: $("status"),
  disconnect: $("disconnect-button"), connectButton: $("connect-button"), mic: $("mic-button"),
  inject: $("inject"), text: $("text"), send: $("send-button"),
  conversation: $("conversation"), log: $("log"), audioBytes: $("audio-bytes"),
};

let socket = null;
let applied = false; // SettingsApplied seen: audio and messages may flow
let context = null; // one AudioContext for playback and the microphone
let outputRate = 24000;
let playhead = 0; // when the next agent chunk starts, in context time
let playing = []; // scheduled sources, stopped on barge-in
let mic = null; // { stream, source, node, sink }
let audioBytes = 0;

function log(direction, text, kind = "") {
  const row = document.createElement("li");
  row.className = kind || direction;
  row.textContent = `${new Date().toISOString().slice(11, 23)} ${direction === "out" ? "→" : "←"} ${text}`;
  ui.log.append(row);
  while (ui.log.childElementCount > LOG_LIMIT) ui.log.firstElementChild.remove();
  ui.log.scrollTop = ui.log.scrollHeight;
}

function say(role, text) {
  const row = document.createElement("li");
  row.className = role;
  row.textContent = `${role === "assistant" ? "Agent" : "You"}: ${text}`;
  ui.conversation.append(row);
  ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

function setStatus(text) {
  ui.status.textContent = text;
}

function settings(route) {
  // The agent's audio comes back at the rate declared here; /openai always answers at 24 kHz.
  const output = route === "/openai" ? 24000 : Number(ui.rate.value);
  outputRate = output;
  const think = route === "/openai"
    ? { provider: { type: "open_ai", model: "gpt-realtime" }, prompt: "You are a helpful voice assistant. Keep answers short." }
    : { provider: { type: "open_ai", model: "gpt-4o-mini" }, prompt: "You are a helpful voice assistant. Keep answers short." };
  return {
    type: "Settings",
    audio: {
      input: { encoding: "linear16", sample_rate: MIC_RATE },
      output: { encoding: "linear16", sample_rate: output },
    },
    agent: {
      language: "en",
      listen: { provider: { type: "deepgram", model: "nova-3" } },
      think,
      speak: { provider: { type: "deepgram", model: "aura-asteria-en" } },
    },
  };
}

function send(message) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const text = JSON.stringify(message);
  socket.send(text);
  log("out", text);
}

function ensureContext() {
  if (!context) context = new AudioContext();
  if (context.state === "suspended") context.resume();
  return context;
}

function play(buffer) {
  const bytes = buffer.byteLength - (buffer.byteLength % 2);
  if (!bytes) return;
  audioBytes += bytes;
  ui.audioBytes.textContent = String(audioBytes);
  const samples = new Int16Array(buffer, 0, bytes / 2);
  const ctx = ensureContext();
  const chunk = ctx.createBuffer(1, samples.length, outputRate);
  const channel = chunk.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
  const source = ctx.createBufferSource();
  source.buffer = chunk;
  source.connect(ctx.destination);
  playhead = Math.max(playhead, ctx.currentTime + 0.02);
  source.start(playhead);
  playhead += chunk.duration;
  playing.push(source);
  source.onended = () => { playing = playing.filter((s) => s !== source); };
}

function stopPlayback() {
  for (const source of playing) {
    try { source.stop(); } catch { /* already ended */ }
  }
  playing = [];
  playhead = 0;
}

function onEvent(event) {
  switch (event.type) {
    case "SettingsApplied":
      applied = true;
      setStatus("ready");
      ui.text.disabled = ui.send.disabled = ui.mic.disabled = false;
      break;
    case "ConversationText":
      say(event.role === "assistant" ? "assistant" : "user", String(event.content ?? ""));
      break;
    case "UserStartedSpeaking":
      stopPlayback(); // barge-in: the agent stops talking when the user starts
      break;
    case "Error":
      setStatus(`error: ${event.description ?? ""} (${event.code ?? "no code"})`);
      break;
    default:
      break;
  }
}

function onMessage(message) {
  if (typeof message.data === "string") {
    log("in", message.data, message.data.includes('"type":"Error"') ? "error" : "in");
    try { onEvent(JSON.parse(message.data)); } catch { /* not JSON: logged above */ }
    return;
  }
  const view = new Uint8Array(message.data);
  if (view.length && view[0] === 0x7b) { // "{": Deepgram sometimes sends JSON in a binary frame
    const text = new TextDecoder().decode(view);
    log("in", text);
    try { onEvent(JSON.parse(text)); return; } catch { /* audio that starts with 0x7b */ }
  }
  play(message.data);
}

function connect(route) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams();
  if (route === "/deepgram-proxy") params.set("service", "agent");
  const query = params.toString();
  const url = `${scheme}//${location.host}${route}${query ? `?${query}` : ""}`;
  ensureContext();
  applied = false;
  audioBytes = 0;
  ui.audioBytes.textContent = "0";
  setStatus("connecting");
  // A client token travels as the "token" subprotocol pair, never in the URL (which servers and proxies log).
  socket = ui.token.value ? new WebSocket(url, ["token", ui.token.value]) : new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onopen = () => {
    setStatus("waiting for SettingsApplied");
    ui.connectButton.disabled = true;
    ui.disconnect.disabled = false;
    log("out", `connected to ${route}`);
    send(settings(route));
  };
  socket.onmessage = onMessage;
  socket.onclose = (close) => {
    log("in", `closed: ${close.code} ${close.reason}`, close.code === 1000 ? "in" : "error");
    if (!ui.status.textContent.startsWith("error")) setStatus(`closed (${close.code})`);
    disconnected();
  };
}

function disconnected() {
  applied = false;
  socket = null;
  stopMic();
  stopPlayback();
  ui.connectButton.disabled = false;
  ui.disconnect.disabled = true;
  ui.text.disabled = ui.send.disabled = ui.mic.disabled = true;
}

async function startMic() {
  const ctx = ensureContext();
  await ctx.audioWorklet.addModule("/demo/mic-worklet.js");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "mic-processor");
  const sink = ctx.createGain(); // keeps the worklet pulled by the graph without playing the mic back
  sink.gain.value = 0;
  node.port.onmessage = (frame) => {
    if (applied && socket && socket.readyState === WebSocket.OPEN) socket.send(frame.data);
  };
  source.connect(node).connect(sink).connect(ctx.destination);
  mic = { stream, source, node, sink };
  ui.mic.textContent = "Stop microphone";
  ui.mic.setAttribute("aria-pressed", "true");
  log("out", "microphone on: 16 kHz PCM16 frames of 20 ms");
}

function stopMic() {
  if (!mic) return;
  mic.stream.getTracks().forEach((track) => track.stop());
  mic.source.disconnect();
  mic.node.disconnect();
  mic.sink.disconnect();
  mic = null;
  ui.mic.textContent = "Start microphone";
  ui.mic.setAttribute("aria-pressed", "false");
  log("out", "microphone off");
}

ui.connect.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!socket) connect(ui.route.value);
});
ui.disconnect.addEventListener("click", () => socket && socket.close(1000));
ui.mic.addEventListener("click", () => {
  if (mic) {
    stopMic();
    return;
  }
  startMic().catch((error) => {
    log("out", `microphone failed: ${error.message || error}`, "error");
  });
});
ui.inject.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = ui.text.value.trim();
  if (!content || !applied) return;
  send({ type: "InjectUserMessage", content });
  ui.text.value = "";
});
