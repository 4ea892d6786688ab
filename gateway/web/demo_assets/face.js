// A vector face drawn from ARKit blendshape weights: part of the project, no third-party code.
// Each shape reads a handful of the 52 ARKit channels; a channel the session does not stream
// counts as 0. ARKit names the subject's sides, so "Left" is drawn on the viewer's right.

const SVG = "http://www.w3.org/2000/svg";
const SKIN = "#e8b996";
const MOUTH_Y = 170;

function element(parent, name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  parent.appendChild(node);
  return node;
}

const fixed = (value) => value.toFixed(2);

export class Face {
  constructor(svg) {
    this.head = element(svg, "path", { fill: SKIN, stroke: "#a87a5a", "stroke-width": 2 });
    element(svg, "path", {
      d: "M100 112 Q94 138 90 146 Q100 152 110 146 Q106 138 100 112",
      fill: "none", stroke: "#a87a5a", "stroke-width": 2, "stroke-linejoin": "round",
    });
    this.eyes = [128, 72].map((x) => this.#eye(svg, x)); // Left (viewer's right), Right
    this.brows = [128, 72].map(() =>
      element(svg, "path", { fill: "none", stroke: "#5b3d2b", "stroke-width": 4,
        "stroke-linecap": "round" }));
    this.mouthInner = element(svg, "path", { id: "mouth-inner", fill: "#5a1e24" });
    this.lips = element(svg, "path", { fill: "none", stroke: "#b0505a", "stroke-width": 4,
      "stroke-linejoin": "round" });
    this.update({});
  }

  #eye(svg, x) {
    const white = element(svg, "ellipse", { cx: x, cy: 100, rx: 13, ry: 8, fill: "#fff" });
    const iris = element(svg, "circle", { cx: x, cy: 100, r: 5, fill: "#3b5878" });
    const lid = element(svg, "path", { fill: SKIN, stroke: "#a87a5a", "stroke-width": 1.5 });
    return { x, white, iris, lid };
  }

  /** Draw the face for `w`, a map from ARKit channel name to weight. */
  update(w) {
    const get = (name) => Math.min(1, Math.max(0, w[name] ?? 0));
    const jaw = get("jawOpen");
    const chin = 212 + 16 * jaw;
    this.head.setAttribute("d",
      `M100 22 C150 22 172 62 172 110 C172 158 148 ${fixed(chin - 8)} 100 ${fixed(chin)} ` +
      `C52 ${fixed(chin - 8)} 28 158 28 110 C28 62 50 22 100 22 Z`);

    ["Left", "Right"].forEach((side, i) => {
      const eye = this.eyes[i];
      const open = 1 - Math.max(get(`eyeBlink${side}`), 0.6 * get(`eyeSquint${side}`));
      const height = 8 * (1 + 0.4 * get(`eyeWide${side}`));
      // The lid's lower edge comes down over the eye's white from its top edge.
      const lidEdge = 100 - height + 2 * height * (1 - open);
      eye.lid.setAttribute("d",
        `M${eye.x - 15} 100 Q${eye.x} ${100 - 2.2 * height} ${eye.x + 15} 100 ` +
        `Q${eye.x} ${fixed(2 * lidEdge - 100)} ${eye.x - 15} 100 Z`);
      eye.white.setAttribute("ry", fixed(height));
      const inward = i === 0 ? -1 : 1; // towards the nose
      const dx = 4 * (get(`eyeLookIn${side}`) - get(`eyeLookOut${side}`)) * inward;
      const dy = 3 * (get(`eyeLookDown${side}`) - get(`eyeLookUp${side}`));
      eye.iris.setAttribute("cx", fixed(eye.x + dx));
      eye.iris.setAttribute("cy", fixed(100 + dy));

      const inner = 78 - 10 * get("browInnerUp") + 7 * get(`browDown${side}`);
      const outer = 80 - 8 * get(`browOuterUp${side}`) + 4 * get(`browDown${side}`);
      const innerX = eye.x + 12 * inward;
      const outerX = eye.x - 14 * inward;
      this.brows[i].setAttribute("d",
        `M${outerX} ${fixed(outer)} Q${eye.x} ${fixed(Math.min(inner, outer) - 5)} ` +
        `${innerX} ${fixed(inner)}`);
    });

    const smile = (get("mouthSmileLeft") + get("mouthSmileRight")) / 2;
    const frown = (get("mouthFrownLeft") + get("mouthFrownRight")) / 2;
    const stretch = (get("mouthStretchLeft") + get("mouthStretchRight")) / 2;
    const round = Math.max(get("mouthFunnel"), get("mouthPucker"));
    const half = 26 * (1 + 0.3 * smile + 0.25 * stretch - 0.45 * round);
    const y = MOUTH_Y + 8 * jaw;
    const corner = y - 7 * smile + 6 * frown;
    // mouthClose holds the lips together while the jaw opens; funnel rounds them apart.
    const gap = Math.max(0, 30 * (jaw - get("mouthClose"))) + 8 * get("mouthFunnel");
    const upper = y - gap / 2 - 6 * (get("mouthUpperUpLeft") + get("mouthUpperUpRight")) / 2;
    const lower = y + gap / 2 + 8 * (get("mouthLowerDownLeft") + get("mouthLowerDownRight")) / 2;
    const left = 100 - half;
    const right = 100 + half;
    // Quadratic curves reach half way to their control point: double the lips' offsets.
    const top = `M${fixed(left)} ${fixed(corner)} Q100 ${fixed(2 * upper - corner)} ` +
      `${fixed(right)} ${fixed(corner)}`;
    const bottom = `Q100 ${fixed(2 * lower - corner)} ${fixed(left)} ${fixed(corner)}`;
    this.mouthInner.setAttribute("d", `${top} ${bottom} Z`);
    this.lips.setAttribute("d", `${top} ${bottom} Z`);
  }

  /** How far apart the drawn lips are, in face units (what a viewer sees of the mouth). */
  mouthOpening() {
    return this.mouthInner.getBBox().height;
  }
}
