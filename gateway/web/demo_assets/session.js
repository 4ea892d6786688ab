// One session of the gateway's WebSocket protocol (a2f_protocol/PROTOCOL.md), from a page.

export const SAMPLE_RATE = 16000;
export const CHUNK = 640; // 40 ms of 16 kHz audio per PushAudio
// A frame is computed once the sample 4160 after its timestamp has arrived (its model window
// ends there: PROTOCOL.md, "Frame clock"), so its added latency is measured from the moment
// the chunk holding that sample left the page.
const WINDOW_AHEAD = 4160;
const FRAME_HEADER = 40;
const MAGIC = 0x42463241; // "A2FB"
// Chunks are kept this long behind the newest frame, for the audio level around each frame.
const LEVEL_SPAN = 1280;

/** A browser ticket for the WebSocket, or null when the gateway needs none (no tenants file). */
async function demoTicket() {
  const response = await fetch("/demo/ticket", { method: "POST" });
  if (!response.ok) {
    throw new Error(`no ticket for the demo: ${response.status} ${await response.text()}`);
  }
  return (await response.json()).ticket;
}

function rms(pcm) {
  let sum = 0;
  for (const sample of pcm) sum += sample * sample;
  return pcm.length ? Math.sqrt(sum / pcm.length) / 32768 : 0;
}

export class Session {
  /** `onFrame({index, timestamp, weights, latencyMs, level})`, `onError(message)`,
   * `onClosed(code)`: `weights` maps channel names to values. */
  constructor({ onFrame, onError, onClosed }) {
    this.onFrame = onFrame;
    this.onError = onError;
    this.onClosed = onClosed;
    this.next = 0; // the next PushAudio's startSampleIndex
    this.sent = []; // {start, end, at, level} of chunks not yet behind every frame
    this.channels = [];
  }

  /** Connect and start a session with the StartSession fields `start`. */
  async open(start) {
    const ticket = await demoTicket();
    const url = new URL("/", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (ticket) url.searchParams.set("ticket", ticket);
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      this.socket.onopen = () => this.socket.send(JSON.stringify({ type: "StartSession", ...start }));
      this.socket.onmessage = (event) => {
        if (typeof event.data !== "string") return this.#frame(event.data);
        const message = JSON.parse(event.data);
        if (message.type === "SessionStarted") {
          this.channels = message.channels;
          resolve();
        } else if (message.type === "SessionEnded") {
          this.ended?.();
        } else if (message.type === "Error") {
          reject(new Error(message.message));
          this.onError(`${message.code}: ${message.message}`);
        }
      };
      this.socket.onclose = (event) => {
        reject(new Error(`connection closed (${event.code})`));
        this.ended?.();
        this.onClosed(event.code);
      };
    });
  }

  /** Send 16 kHz PCM16 samples (an Int16Array) as the next PushAudio. */
  push(pcm) {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    const message = new ArrayBuffer(8 + 2 * pcm.length);
    new DataView(message).setBigInt64(0, BigInt(this.next), true);
    new Int16Array(message, 8).set(pcm);
    this.socket.send(message);
    const start = this.next;
    this.next += pcm.length;
    this.sent.push({ start, end: this.next, at: performance.now(), level: rms(pcm) });
  }

  setEmotion(emotions, strength) {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({ type: "SetEmotion", emotions, emotion_strength: strength }));
  }

  /** End the session: the remaining frames come, then SessionEnded; then disconnect. */
  async end() {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    const ended = new Promise((resolve) => {
      this.ended = resolve;
      setTimeout(resolve, 5000);
    });
    this.socket.send(JSON.stringify({ type: "EndSession" }));
    await ended;
    this.socket.close(1000);
  }

  #frame(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < FRAME_HEADER || view.getUint32(0, true) !== MAGIC) {
      this.onError("not an A2FB frame");
      return;
    }
    const count = view.getUint32(8, true);
    const index = Number(view.getBigUint64(16, true));
    const timestamp = Number(view.getBigInt64(24, true));
    const weights = {};
    for (let i = 0; i < count; i += 1) {
      weights[this.channels[i]] = view.getFloat32(FRAME_HEADER + 4 * i, true);
    }
    while (this.sent.length && this.sent[0].end <= timestamp - LEVEL_SPAN) this.sent.shift();
    const near = this.sent.filter(
      (chunk) => chunk.end > timestamp - LEVEL_SPAN && chunk.start < timestamp + LEVEL_SPAN,
    );
    const level = near.length ? Math.max(...near.map((chunk) => chunk.level)) : 0;
    // Frames after EndSession wait for padding, not for audio: no latency of theirs counts.
    const needed = timestamp + WINDOW_AHEAD;
    const holder = this.sent.find((chunk) => chunk.start <= needed && needed < chunk.end);
    const latencyMs = holder ? performance.now() - holder.at : null;
    this.onFrame({ index, timestamp, weights, latencyMs, level });
  }
}
