/**
 * The Services & NIMs panel: the services catalog from GET /api/services with each service's live
 * state (read from `docker ps` on the nodes and its health path), start on a chosen node, stop,
 * restart, and the container's logs (followed, with the Models panel's LogsPanel).
 *
 * The API has no event stream for services: the list is read again every few seconds while a
 * service is pulling its image or starting, and every 15 s otherwise. A pull shows a <progress>
 * bar of its layers (docker prints no byte counts without a terminal).
 */

import { api, readableError } from "./api.js";
import { el, fromTemplate, keepFocus, setSlot, showMessage, slot } from "./dom.js";
import { formatDuration, formatNumber } from "./format.js";
import { LogsPanel } from "./model-logs.js";
import { fillNodeSelect, onNodeNames } from "./node-list.js";

const FAST_MS = 2000;
const SLOW_MS = 15000;
const PENDING = /** @type {Record<string, string>} */ ({ Start: "starting…", Restart: "restarting…", Stop: "stopping…" });
const BUSY_STATES = new Set(["pulling", "starting"]);

/**
 * @typedef {{name: string, kind: string, description: string, image: string, port: number, node: string,
 *   state: string, running_on: string|null, url: string|null, container: string|null,
 *   health: {ok: boolean, status_code: number|null, latency_ms: number|null, detail: string}|null,
 *   detail: string, pull: Pull|null}} Service
 */

/**
 * @typedef {{image: string, node: string, state: string, elapsed_s: number, layers_total: number,
 *   layers_downloaded: number, layers_done: number, fraction: number, message: string}} Pull
 */

/**
 * @param {HTMLElement} panel  the <section> with data-services-url
 * @param {import("./stream.js").StatusStream} stream
 */
export function initServicesPanel(panel, stream) {
  const url = /** @type {string} */ (panel.dataset.servicesUrl);
  const list = slot(panel, "list");
  const errorNode = slot(panel, "error");
  /** @type {Map<string, ServiceRow>} */
  const rows = new Map();
  /** @type {string[]} */
  let nodeNames = [];
  /** @type {number|undefined} */
  let timer;

  async function load() {
    const data = await api(url);
    slot(panel, "loading").hidden = true;
    showMessage(errorNode, null);
    /** @type {Service[]} */
    const services = data.services ?? [];
    slot(panel, "empty").hidden = services.length > 0;
    services.forEach((service, index) => {
      let row = rows.get(service.name);
      if (!row) {
        row = new ServiceRow(service.name, `${url}/${encodeURIComponent(service.name)}`, reloadSoon);
        rows.set(service.name, row);
      }
      if (list.children[index] !== row.element) list.insertBefore(row.element, list.children[index] ?? null);
      row.update(service, nodeNames);
    });
    for (const [name, row] of rows) {
      if (!services.some((s) => s.name === name)) {
        row.element.remove();
        rows.delete(name);
      }
    }
    const running = services.filter((s) => s.state === "running").length;
    slot(panel, "summary").textContent = `${services.length} in the catalog · ${running} running`;
  }

  function reload() {
    clearTimeout(timer);
    load()
      .catch((err) => {
        slot(panel, "loading").hidden = true;
        showMessage(errorNode, `Could not read the services: ${readableError(err)}`);
      })
      .finally(() => {
        const busy = [...rows.values()].some((r) => BUSY_STATES.has(r.state) || r.inFlight);
        clearTimeout(timer);
        timer = setTimeout(reload, busy ? FAST_MS : SLOW_MS);
      });
  }

  function reloadSoon() {
    clearTimeout(timer);
    timer = setTimeout(reload, 300);
  }

  onNodeNames(stream, (names) => {
    nodeNames = names;
    for (const row of rows.values()) row.fillNodes(names);
  });
  slot(panel, "refresh").addEventListener("click", reload);
  reload();
}

/** One service: built from <template id="tpl-service">, updated in place. */
class ServiceRow {
  /**
   * @param {string} name
   * @param {string} base  /api/services/<name>
   * @param {() => void} onChange  read the list again soon
   */
  constructor(name, base, onChange) {
    this.name = name;
    this.base = base;
    this.onChange = onChange;
    this.state = "stopped";
    this.inFlight = false;
    /** @type {Service|null} */
    this.service = null;
    /** @type {string[]} */
    this.nodeNames = [];
    this.element = fromTemplate("tpl-service");
    this.element.dataset.service = name;
    this.element.id = `service-${name}`;
    setSlot(this.element, "name", name);
    slot(this.element, "actions").setAttribute("aria-label", `Actions for ${name}`);
    slot(this.element, "node").setAttribute("aria-label", `Node to start ${name} on`);
    // The same logs block as a model's (tpl-model), so LogsPanel follows a service's logs unchanged.
    const logsBlock = /** @type {HTMLElement} */ (fromTemplate("tpl-model").querySelector('[data-slot="logs"]'));
    slot(this.element, "logs").replaceWith(logsBlock);
    this.logs = new LogsPanel(logsBlock, `${base}/logs`, name);
    slot(this.element, "logs").id = `service-logs-${name}`;
    const labels = { start: `Start ${name}`, restart: `Restart ${name}`, stop: `Stop ${name}`, logs: `Logs of ${name}` };
    for (const [action, label] of Object.entries(labels)) this.button(action).setAttribute("aria-label", label);
    this.button("logs").setAttribute("aria-controls", `service-logs-${name}`);
    this.button("start").addEventListener("click", () => this.act("Start", "start", { node: this.chosenNode() }));
    this.button("restart").addEventListener("click", () => this.act("Restart", "restart", { node: this.chosenNode() }));
    this.button("stop").addEventListener("click", () => this.act("Stop", "stop", undefined));
    this.button("logs").addEventListener("click", () => this.toggleLogs());
  }

  /** @param {string} action */
  button(action) {
    return /** @type {HTMLButtonElement} */ (this.element.querySelector(`button[data-action="${action}"]`));
  }

  chosenNode() {
    return /** @type {HTMLSelectElement} */ (slot(this.element, "node")).value || undefined;
  }

  /** @param {string[]} names */
  fillNodes(names) {
    const select = /** @type {HTMLSelectElement} */ (slot(this.element, "node"));
    if (names.length) this.nodeNames = names;
    const known = this.nodeNames.length ? this.nodeNames : [this.service?.node ?? ""].filter(Boolean);
    fillNodeSelect(select, known, null, this.service?.running_on ?? this.service?.node ?? "");
  }

  /**
   * @param {Service} service
   * @param {string[]} nodeNames
   */
  update(service, nodeNames) {
    this.service = service;
    this.state = service.state;
    const row = this.element;
    row.dataset.state = service.state;
    row.dataset.kind = service.kind;
    const pill = slot(row, "state");
    pill.textContent = service.state;
    pill.className = `pill state-${service.state}`;
    setSlot(row, "kind", service.kind === "nim" ? "NIM" : service.kind);
    setSlot(row, "description", service.description || service.image);
    slot(row, "description").title = service.image;
    this.renderWhere(service);
    // While it pulls, the bar in "where" says it all.
    const shown = service.detail && service.detail !== "healthy" && service.state !== "pulling";
    const detail = shown ? service.detail : null;
    showMessage(slot(row, "detail"), detail);
    this.fillNodes(nodeNames);
    this.updateButtons();
  }

  /** @param {Service} s */
  renderWhere(s) {
    const where = slot(this.element, "where");
    if (s.state === "pulling" && s.pull) {
      where.replaceChildren(...pullParts(s.pull));
      return;
    }
    if (s.pull && !s.container) {  // a failed pull: its reason is in "detail"
      const text = `Not running · the pull of ${s.pull.image} onto ${s.pull.node} failed`;
      where.replaceChildren(el("span", { class: "muted", text }));
      return;
    }
    if (!s.running_on) {
      where.replaceChildren(el("span", { class: "muted", text: `Not running · starts on ${s.node} · port ${s.port}` }));
      return;
    }
    const parts = [el("span", { text: "On " }), el("strong", { class: "mono", text: s.running_on })];
    if (s.url) parts.push(el("span", { class: "muted", text: " at " }), el("span", { class: "mono", text: s.url }));
    if (s.health) {
      const words = s.health.ok ? `healthy, ${formatNumber(s.health.latency_ms, "ms", 1)}`
        : `not healthy${s.health.status_code ? ` (HTTP ${s.health.status_code})` : ""}`;
      parts.push(el("span", { class: `health-note ${s.health.ok ? "ok" : "bad"}`, text: ` · ${words}`,
        attrs: { "data-slot": "health" } }));
    }
    where.replaceChildren(...parts);
  }

  updateButtons() {
    const s = this.service;
    const hasContainer = Boolean(s?.container);
    const set = (/** @type {string} */ action, /** @type {boolean} */ enabled) => {
      this.button(action).disabled = this.inFlight || !enabled;
    };
    set("start", this.state === "stopped" || this.state === "failed");
    set("restart", hasContainer);
    set("stop", hasContainer || this.state === "pulling");  // a stop cancels the pull
    this.button("logs").disabled = !(hasContainer || this.logs.isOpen);
  }

  /**
   * @param {string} verb  Start | Restart | Stop
   * @param {string} action  the path after /api/services/<name>/
   * @param {object|undefined} body
   */
  async act(verb, action, body) {
    const errorNode = slot(this.element, "error");
    const hadFocus = this.element.contains(document.activeElement);
    showMessage(errorNode, null);
    this.inFlight = true;
    this.element.setAttribute("aria-busy", "true");
    this.updateButtons();
    const pill = slot(this.element, "state");
    const before = pill.textContent;
    pill.textContent = PENDING[verb] ?? before;
    try {
      const service = await api(`${this.base}/${action}`, { method: "POST", body });
      if (service?.name === this.name) this.update(service, []);
      if (this.logs.isOpen && verb !== "Stop") this.logs.open(this.logTarget());
    } catch (err) {
      pill.textContent = before;
      showMessage(errorNode, `${verb} refused: ${readableError(err)}`);
    } finally {
      this.inFlight = false;
      this.element.removeAttribute("aria-busy");
      this.updateButtons();
      keepFocus(hadFocus, this.element.querySelectorAll(".service-actions button"));
      this.onChange();
    }
  }

  logTarget() {
    const s = this.service;
    if (!s?.running_on || !s.container) return null;
    return { nodes: [s.running_on], containers: { [s.running_on]: s.container } };
  }

  toggleLogs() {
    if (this.logs.isOpen) this.logs.close();
    else this.logs.open(this.logTarget());
    this.button("logs").setAttribute("aria-expanded", String(this.logs.isOpen));
    this.updateButtons();
  }
}

/**
 * "Pulling <image> onto <node>", a <progress> of the layers, and the numbers.
 * @param {Pull} p
 */
function pullParts(p) {
  const bar = el("progress", { attrs: { max: "1", value: String(p.fraction ?? 0), "data-slot": "pull-bar",
    "aria-label": `Pulling ${p.image} onto ${p.node}` } });
  const layers = p.layers_total
    ? `${p.layers_done} of ${p.layers_total} layers done, ${p.layers_downloaded} downloaded`
    : "reading the image manifest";
  return [el("span", { text: "Pulling " }), el("span", { class: "mono", text: p.image }),
    el("span", { text: " onto " }), el("strong", { class: "mono", text: p.node }), bar,
    el("span", { class: "muted", text: `${layers} · ${formatDuration(p.elapsed_s)}`,
      attrs: { "data-slot": "pull-numbers" } })];
}
