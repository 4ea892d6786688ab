// Strip charts on canvases: the last few seconds of a value, redrawn once per animation frame.

const HISTORY = 360; // points kept: 6 s at 60 frames/s

export class Strip {
  /** `max` fixed (weights in [0, 1]) or null to follow the largest value shown. */
  constructor(canvas, label, { max = 1, unit = "" } = {}) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.label = label;
    this.max = max;
    this.unit = unit;
    this.values = [];
    this.dirty = true;
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > HISTORY) this.values.splice(0, this.values.length - HISTORY);
    this.dirty = true;
  }

  draw() {
    if (!this.dirty) return;
    this.dirty = false;
    const { width, height } = this.canvas;
    const g = this.context;
    const top = this.max ?? Math.max(1, ...this.values) * 1.1;
    g.clearRect(0, 0, width, height);
    g.strokeStyle = "#e1e5eb";
    g.beginPath();
    g.moveTo(0, height / 2);
    g.lineTo(width, height / 2);
    g.stroke();
    g.strokeStyle = "#3a6ea5";
    g.lineWidth = 1.5;
    g.beginPath();
    this.values.forEach((value, i) => {
      const x = (i / (HISTORY - 1)) * width;
      const y = height - 4 - (Math.min(value, top) / top) * (height - 8);
      if (i === 0) g.moveTo(x, y);
      else g.lineTo(x, y);
    });
    g.stroke();
    const last = this.values.at(-1);
    g.fillStyle = "#1d2330";
    g.font = "12px system-ui, sans-serif";
    const shown = last === undefined ? "-" : `${last.toFixed(this.unit ? 0 : 2)}${this.unit}`;
    g.fillText(`${this.label} ${shown}`, 6, 14);
    if (this.max === null) g.fillText(`max ${top.toFixed(0)}${this.unit}`, width - 80, 14);
  }
}
