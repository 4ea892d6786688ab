// AudioWorklet: the microphone at the context's rate in, 16 kHz PCM16 chunks of 40 ms out.
// Decimation averages the input samples that fall into each output sample (a box filter, with
// a fractional phase so 44.1 kHz works too): enough anti-aliasing for speech at 16 kHz.

const TARGET_RATE = 16000;
const CHUNK = 640; // 40 ms at 16 kHz

class Pcm16Chunker extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.chunk = new Int16Array(CHUNK);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels.length === 0) return true;
    const samples = channels[0].length;
    for (let i = 0; i < samples; i += 1) {
      let x = 0;
      for (const channel of channels) x += channel[i];
      this.sum += x / channels.length;
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.step) {
        this.phase -= this.step;
        const y = Math.max(-1, Math.min(1, this.sum / this.count));
        this.chunk[this.filled] = Math.round(y * 32767);
        this.filled += 1;
        this.sum = 0;
        this.count = 0;
        if (this.filled === CHUNK) {
          this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
          this.chunk = new Int16Array(CHUNK);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm16-chunker", Pcm16Chunker);
