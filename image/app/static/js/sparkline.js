/**
 * Small inline-SVG line charts (no library): `new Sparkline(...)`, then `update(series)`.
 */

import { formatDuration } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 32;
// A pause longer than this between two samples draws a gap instead of a line.
const GAP_S = 30;

/**
 * @typedef {{t: number, v: number|null}} Sample  t: Unix seconds; v null: no value (node down)
 */

/**
 * @param {string} tag
 * @param {Record<string, string>} attrs
 * @returns {SVGElement}
 */
function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

export class Sparkline {
  /**
   * @param {{label: string, unit: string, min?: number, max?: number, digits?: number}} options
   *   min/max: a fixed scale (e.g. 0..100 %); without max the scale follows the data.
   */
  constructor({ label, unit, min = 0, max, digits = 0 }) {
    this.label = label;
    this.unit = unit;
    this.min = min;
    this.max = max;
    this.digits = digits;

    this.element = document.createElement("figure");
    this.element.className = "spark";
    const caption = document.createElement("figcaption");
    this.labelNode = document.createElement("span");
    this.labelNode.textContent = label;
    this.valueNode = document.createElement("strong");
    this.valueNode.textContent = "–";
    caption.append(this.labelNode, this.valueNode);

    this.svg = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img" });
    this.area = svg("path", { class: "spark-area" });
    this.line = svg("path", { class: "spark-line" });
    this.svg.append(this.area, this.line);
    this.element.append(caption, this.svg);
  }

  /** @param {number|null} v */
  format(v) {
    return v === null ? "–" : `${v.toFixed(this.digits)} ${this.unit}`;
  }

  /** @param {Sample[]} samples  oldest first */
  update(samples) {
    const values = samples.map((s) => s.v).filter((v) => v !== null);
    const last = samples.length ? samples[samples.length - 1].v : null;
    this.valueNode.textContent = this.format(last);
    if (!samples.length) {
      this.line.setAttribute("d", "");
      this.area.setAttribute("d", "");
      this.svg.setAttribute("aria-label", `${this.label}: no data yet`);
      return;
    }
    const lo = this.min;
    const hi = this.max ?? Math.max(lo + 1, ...values.map((v) => v * 1.15));
    const t1 = samples[samples.length - 1].t;
    const t0 = samples[0].t;
    const span = Math.max(t1 - t0, 1);
    const x = (/** @type {number} */ t) => ((t - t0) / span) * WIDTH;
    const y = (/** @type {number} */ v) => HEIGHT - 1 - ((Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * (HEIGHT - 2);

    // One run per stretch of consecutive values; a null or a long pause starts a new one.
    /** @type {Sample[][]} */
    const runs = [];
    let run = [];
    let prevT = null;
    for (const s of samples) {
      if (s.v === null || (prevT !== null && s.t - prevT > GAP_S)) {
        if (run.length) runs.push(run);
        run = [];
      }
      if (s.v !== null) run.push(s);
      prevT = s.t;
    }
    if (run.length) runs.push(run);

    let line = "";
    let area = "";
    for (const r of runs) {
      /** @type {[number, number][]} */
      const coords = r.map((s) => [x(s.t), y(/** @type {number} */ (s.v))]);
      if (coords.length === 1) {
        // A lone sample is a short flat segment (the whole width when it is all there is).
        const [px, py] = coords[0];
        const half = samples.length === 1 ? WIDTH : 1.5;
        coords.splice(0, 1, [Math.max(px - half, 0), py], [Math.min(px + half, WIDTH), py]);
      }
      const points = coords.map(([px, py]) => `${px.toFixed(2)},${py.toFixed(2)}`).join("L");
      const left = coords[0][0].toFixed(2);
      const right = coords[coords.length - 1][0].toFixed(2);
      line += `M${points}`;
      area += `M${left},${HEIGHT}L${points}L${right},${HEIGHT}Z`;
    }
    this.line.setAttribute("d", line);
    this.area.setAttribute("d", area);
    const lowest = values.length ? Math.min(...values) : null;
    const highest = values.length ? Math.max(...values) : null;
    this.svg.setAttribute(
      "aria-label",
      `${this.label} over the last ${formatDuration(t1 - t0)}: now ${this.format(last)}, ` +
        `lowest ${this.format(lowest)}, highest ${this.format(highest)}`,
    );
  }
}
