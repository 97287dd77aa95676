/**
 * One node's card: built once from <template id="tpl-node-card">, then updated in place.
 */

import { el, fromTemplate, setSlot, slot } from "./dom.js";
import { formatBytes, formatDuration, formatNumber, setRelativeTime } from "./format.js";
import { Sparkline } from "./sparkline.js";

/** The charted metrics: history key -> sparkline options. */
export const CHARTS = {
  gpu_util: { label: "GPU utilization", unit: "%", min: 0, max: 100 },
  gpu_temp: { label: "GPU temperature", unit: "°C", min: 20, max: 100 },
  gpu_power: { label: "GPU power", unit: "W", min: 0, digits: 1 },
  mem_used: { label: "Memory used", unit: "%", min: 0, max: 100 },
};

/**
 * The numbers charted for one status (null when the node or the metric is missing).
 * @param {any} node  one entry of /api/status `nodes`
 * @returns {Record<string, number|null>}
 */
export function chartedMetrics(node) {
  const gpu = node.reachable ? node.gpus?.[0] : null;
  const mem = node.reachable ? node.memory : null;
  return {
    gpu_util: gpu?.utilization_percent ?? null,
    gpu_temp: gpu?.temperature_c ?? null,
    gpu_power: gpu?.power_draw_w ?? null,
    mem_used: mem && mem.total_bytes ? (mem.used_bytes / mem.total_bytes) * 100 : null,
  };
}

export class NodeCard {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    this.element = fromTemplate("tpl-node-card");
    this.element.dataset.node = name;
    this.element.setAttribute("aria-label", `Node ${name}`);
    setSlot(this.element, "name", name);
    /** @type {Map<string, string>} what each list was last built from */
    this.builtFrom = new Map();
    /** @type {Record<string, Sparkline>} */
    this.charts = {};
    for (const [key, options] of Object.entries(CHARTS)) {
      this.charts[key] = new Sparkline(options);
      this.charts[key].element.dataset.chart = key;
      slot(this.element, "charts").append(this.charts[key].element);
    }
  }

  /**
   * @param {any} node  one entry of /api/status `nodes`
   * @param {any|null} conn  this node's entry in the connectivity summary, if known
   */
  update(node, conn) {
    const card = this.element;
    const up = Boolean(node.reachable);
    card.dataset.state = up ? "up" : "down";
    setSlot(card, "address", `${node.user}@${node.host}:${node.port}`);
    setSlot(card, "state", up ? "reachable" : "DOWN");
    slot(card, "down").hidden = up;
    slot(card, "details").hidden = !up;
    setSlot(card, "reason", node.reason || "no reason given");
    const downSince = !up && conn?.state === "down" ? conn.since : null;
    slot(card, "down-since-wrap").hidden = downSince === null;
    setRelativeTime(slot(card, "down-since"), downSince);
    setRelativeTime(slot(card, "checked"), node.checked_at);
    this.rebuild("problems", node.problems ?? [], (v) => this.renderProblems(v));
    if (!up) return;

    setSlot(card, "latency", formatNumber(node.latency_ms, "ms", node.latency_ms < 10 ? 1 : 0));
    const load = node.load;
    setSlot(card, "load", load ? [load.one_minute, load.five_minutes, load.fifteen_minutes]
      .map((v) => v.toFixed(2)).join(" / ") : null);
    setSlot(card, "uptime", formatDuration(node.uptime_seconds));
    setSlot(card, "hostname", `${node.hostname ?? "–"} / ${node.cpu_count ?? "–"} CPUs`);
    this.rebuild("gpus", node.gpus ?? [], (v) => this.renderGpus(v));
    this.rebuild("memory", node.memory ?? null, (v) => this.renderMemory(v));
    this.rebuild("disks", node.disks ?? [], (v) => this.renderDisks(v));
    this.rebuild("containers", node.containers ?? [], (v) => this.renderContainers(v));
  }

  /**
   * Re-render a part only when its data changed: keeps text selection and screen readers calm.
   * @template T
   * @param {string} part
   * @param {T} value
   * @param {(value: T) => void} render
   */
  rebuild(part, value, render) {
    const key = JSON.stringify(value);
    if (this.builtFrom.get(part) === key) return;
    this.builtFrom.set(part, key);
    render(value);
  }

  /** @param {import("./history.js").MetricHistory} history */
  updateCharts(history) {
    for (const [key, chart] of Object.entries(this.charts)) chart.update(history.get(this.name, key));
  }

  /** @param {any[]} gpus */
  renderGpus(gpus) {
    const target = slot(this.element, "gpus");
    if (!gpus.length) {
      target.replaceChildren(el("p", { class: "muted", text: "No GPU reported." }));
      return;
    }
    target.replaceChildren(...gpus.map((gpu) => {
      const block = fromTemplate("tpl-gpu");
      setSlot(block, "name", gpu.name ?? "unknown GPU");
      setSlot(block, "util", formatNumber(gpu.utilization_percent, "%"));
      setSlot(block, "temp", formatNumber(gpu.temperature_c, "°C"));
      setSlot(block, "power", formatNumber(gpu.power_draw_w, "W", 1));
      setSlot(block, "clock", formatNumber(gpu.sm_clock_mhz, "MHz"));
      setSlot(block, "clock-max", gpu.sm_clock_max_mhz ? `max ${gpu.sm_clock_max_mhz} MHz` : "");
      setSlot(block, "pstate", gpu.pstate ? `state ${gpu.pstate}` : "");
      return block;
    }));
  }

  /** @param {any|null} mem */
  renderMemory(mem) {
    const target = slot(this.element, "memory");
    if (!mem) {
      target.replaceChildren(el("p", { class: "muted", text: "Not reported." }));
      return;
    }
    const swap = mem.swap_total_bytes
      ? ` · swap ${formatBytes(mem.swap_used_bytes)} of ${formatBytes(mem.swap_total_bytes)}` : "";
    target.replaceChildren(usageRow("RAM", mem.used_bytes, mem.total_bytes,
      `${formatBytes(mem.available_bytes)} available${swap}`));
  }

  /** @param {any[]} disks */
  renderDisks(disks) {
    const target = slot(this.element, "disks");
    if (!disks.length) {
      target.replaceChildren(el("p", { class: "muted", text: "Not reported." }));
      return;
    }
    target.replaceChildren(...disks.map((d) => usageRow(d.mountpoint, d.used_bytes, d.size_bytes,
      `${formatBytes(d.available_bytes)} free · ${d.filesystem}`)));
  }

  /** @param {any[]} containers */
  renderContainers(containers) {
    const target = slot(this.element, "containers");
    if (!containers.length) {
      target.replaceChildren(el("li", { class: "muted", text: "No containers." }));
      return;
    }
    target.replaceChildren(...containers.map((c) => el("li", { attrs: { "data-container": c.name } }, [
      el("span", { class: "container-name mono", text: c.name }),
      el("span", { class: `pill state-${c.state}`, text: c.state }),
      el("span", { class: "muted container-image mono", text: c.image }),
      el("span", { class: "muted small", text: c.status }),
    ])));
  }

  /** @param {{section: string, message: string}[]} problems */
  renderProblems(problems) {
    slot(this.element, "problems-block").hidden = problems.length === 0;
    slot(this.element, "problems").replaceChildren(...problems.map((p) => el("li", {}, [
      el("span", { class: "problem-section mono", text: p.section }),
      el("span", { text: p.message }),
    ])));
  }
}

/**
 * A labelled usage bar: "used of total (percent)".
 * @param {string} label
 * @param {number} used
 * @param {number} total
 * @param {string} extra  the line under the bar
 * @returns {HTMLElement}
 */
function usageRow(label, used, total, extra) {
  const row = fromTemplate("tpl-usage");
  const percent = total > 0 ? (used / total) * 100 : 0;
  setSlot(row, "label", label);
  setSlot(row, "numbers", `${formatBytes(used)} of ${formatBytes(total)} (${percent.toFixed(0)} %)`);
  setSlot(row, "extra", extra);
  const bar = /** @type {HTMLElement} */ (row.querySelector(".bar"));
  bar.setAttribute("aria-valuenow", percent.toFixed(0));
  bar.setAttribute("aria-label", `${label} used`);
  bar.dataset.level = percent >= 90 ? "high" : percent >= 75 ? "mid" : "low";
  slot(row, "fill").style.width = `${Math.min(100, percent).toFixed(1)}%`;
  return row;
}
