// The demo page: microphone or a dropped file -> the gateway -> a face and live plots.

import { Face } from "./face.js";
import { Strip } from "./plots.js";
import { CHUNK, SAMPLE_RATE, Session } from "./session.js";

const EMOTIONS = [
  "amazement", "anger", "cheekiness", "disgust", "fear",
  "grief", "joy", "outofbreath", "pain", "sadness",
];
const TRACE_LENGTH = 3000; // frames kept in `a2fDemo.trace` (50 s at 60 frames/s)
const EMOTION_DELAY_MS = 100; // slider moves are sent at most this often

const $ = (selector) => document.querySelector(selector);
const face = new Face($("#face"));
const strips = [...document.querySelectorAll("#plots canvas")].map((canvas) => {
  const channel = canvas.dataset.channel;
  return channel === "latency"
    ? new Strip(canvas, "added latency", { max: null, unit: " ms" })
    : new Strip(canvas, channel);
});

// What the page saw, for a look from the DevTools console (and for the browser test).
const demo = { state: "idle", frames: 0, errors: [], emotionsSent: 0, trace: [] };
window.a2fDemo = demo;

let session = null;
let stopSource = () => {};

function status(text, error = false) {
  $("#status").textContent = text;
  $("#status").classList.toggle("error", error);
  if (error) demo.errors.push(text);
}

function setState(state) {
  demo.state = state;
  const busy = state !== "idle";
  $("#mic").disabled = busy;
  $("#file").disabled = busy;
  $("#stop").disabled = !busy;
}

// -- emotions ------------------------------------------------------------------------------------

const sliders = new Map();
for (const name of [...EMOTIONS, "strength"]) {
  const label = document.createElement("label");
  const input = Object.assign(document.createElement("input"), {
    type: "range", min: 0, max: 1, step: 0.05, value: name === "strength" ? 1 : 0, name,
  });
  const shown = document.createElement("output");
  shown.textContent = input.value;
  label.append(name, input, shown);
  $("#emotions").append(label);
  sliders.set(name, input);
  input.addEventListener("input", () => {
    shown.textContent = Number(input.value).toFixed(2);
    scheduleEmotion();
  });
}

function emotions() {
  return Object.fromEntries(EMOTIONS.map((name) => [name, Number(sliders.get(name).value)]));
}

let emotionTimer = null;
function scheduleEmotion() {
  if (emotionTimer !== null) return;
  emotionTimer = setTimeout(() => {
    emotionTimer = null;
    if (!session) return;
    session.setEmotion(emotions(), Number(sliders.get("strength").value));
    demo.emotionsSent += 1;
  }, EMOTION_DELAY_MS);
}

// -- the session ---------------------------------------------------------------------------------

function onFrame({ timestamp, weights, latencyMs, level }) {
  demo.frames += 1;
  face.update(weights);
  const mouth = face.mouthOpening();
  demo.trace.push({ timestamp, level, mouth, latencyMs, jawOpen: weights.jawOpen });
  if (demo.trace.length > TRACE_LENGTH) demo.trace.splice(0, demo.trace.length - TRACE_LENGTH);
  for (const strip of strips) {
    const value = strip.label === "added latency" ? latencyMs : weights[strip.label];
    if (value !== null && value !== undefined) strip.push(value);
  }
}

async function openSession() {
  setState("connecting");
  status("Connecting...");
  const fresh = new Session({
    onFrame,
    onError: (message) => status(`Gateway: ${message}`, true),
    onClosed: (code) => {
      if (session === fresh) finish(code === 1000 ? null : `connection closed (${code})`);
    },
  });
  const chosen = Object.fromEntries(Object.entries(emotions()).filter(([, value]) => value > 0));
  // Idle frames: while the microphone hears nothing the face keeps breathing and blinking
  // instead of freezing between sentences.
  const start = Object.keys(chosen).length
    ? { idle: true, emotions: chosen, emotion_strength: Number(sliders.get("strength").value) }
    : { idle: true };
  await fresh.open(start);
  session = fresh;
  return fresh;
}

function finish(problem) {
  stopSource();
  stopSource = () => {};
  session = null;
  setState("idle");
  if (problem) status(problem, true);
}

async function stop() {
  stopSource();
  stopSource = () => {};
  const ending = session;
  if (ending) {
    setState("ending");
    await ending.end();
  }
  session = null;
  setState("idle");
  status(`Done: ${demo.frames} frames.`);
}

async function guarded(start) {
  try {
    await start();
  } catch (error) {
    finish(String(error.message ?? error));
  }
}

// -- sources -------------------------------------------------------------------------------------

async function startMicrophone() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, autoGainControl: true },
  });
  const context = new AudioContext();
  stopSource = () => {
    stream.getTracks().forEach((track) => track.stop());
    context.close();
  };
  await context.audioWorklet.addModule("/demo/assets/pcm-worklet.js");
  const live = await openSession();
  const chunker = new AudioWorkletNode(context, "pcm16-chunker");
  chunker.port.onmessage = (event) => live.push(new Int16Array(event.data));
  context.createMediaStreamSource(stream).connect(chunker);
  // A node is run only on the way to the destination; the chunker's output is silence.
  chunker.connect(context.destination);
  await context.resume();
  setState("streaming");
  status(`Streaming the microphone (context at ${context.sampleRate} Hz).`);
}

async function decode(file) {
  // Decoding in a 16 kHz context resamples the file to the protocol's rate.
  const decoded = await new OfflineAudioContext(1, 1, SAMPLE_RATE).decodeAudioData(
    await file.arrayBuffer(),
  );
  const mono = new Float32Array(decoded.length);
  for (let c = 0; c < decoded.numberOfChannels; c += 1) {
    decoded.getChannelData(c).forEach((x, i) => { mono[i] += x / decoded.numberOfChannels; });
  }
  return { decoded, pcm: Int16Array.from(mono, (x) => Math.round(Math.max(-1, Math.min(1, x)) * 32767)) };
}

async function streamFile(file) {
  const { decoded, pcm } = await decode(file);
  const live = await openSession();
  const context = new AudioContext();
  const player = context.createBufferSource();
  player.buffer = decoded;
  player.connect(context.destination);
  player.start();
  // Chunks leave in real time, as from a microphone, so the face keeps pace with the sound.
  const started = performance.now();
  let sent = 0;
  const timer = setInterval(() => {
    const due = Math.min(pcm.length, ((performance.now() - started) / 1000) * SAMPLE_RATE);
    while (sent < pcm.length && Math.min(sent + CHUNK, pcm.length) <= due) {
      const end = Math.min(sent + CHUNK, pcm.length);
      live.push(pcm.subarray(sent, end));
      sent = end;
    }
    if (sent >= pcm.length) {
      clearInterval(timer);
      stop();
    }
  }, 20);
  stopSource = () => {
    clearInterval(timer);
    context.close();
  };
  setState("streaming");
  status(`Streaming ${file.name} (${(pcm.length / SAMPLE_RATE).toFixed(1)} s).`);
}

// -- wiring --------------------------------------------------------------------------------------

$("#mic").addEventListener("click", () => guarded(startMicrophone));
$("#stop").addEventListener("click", () => stop());
$("#file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) guarded(() => streamFile(file));
});
const drop = $("#drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const [file] = event.dataTransfer.files;
  if (file && demo.state === "idle") guarded(() => streamFile(file));
});

function redraw() {
  for (const strip of strips) strip.draw();
  requestAnimationFrame(redraw);
}
requestAnimationFrame(redraw);
