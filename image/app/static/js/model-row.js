/**
 * One catalog model in the Models panel: built once from <template id="tpl-model">, then
 * updated in place from GET /api/models and from each `deployment` event. It owns the model's
 * actions (launch, swap, stop), its dry run and its logs.
 */

import { api, readableError } from "./api.js";
import { el, fromTemplate, keepFocus, setSlot, showMessage, slot } from "./dom.js";
import { formatClock } from "./format.js";
import { DryRunView } from "./model-dryrun.js";
import { LogsPanel } from "./model-logs.js";

/**
 * @typedef {{deployment_id: string, model: string, nodes: string[], endpoint: string,
 *   containers: Record<string, string>, state: string, detail: string, since: number}} Deployment
 * @typedef {{name: string, description: string, hf_repo: string, size_gb: number,
 *   nodes: {min: number, max: number}, capabilities: string[], aliases: string[], state: string,
 *   deployment: Deployment|null, replicas: Deployment[], weights: Record<string, boolean|null>}} CatalogModel
 * @typedef {{modelsUrl: string, swapUrl: string, onChange: () => void}} RowOptions
 */

/** States in which containers exist and the model holds its nodes. */
const RUNNING = new Set(["starting", "loading", "ready", "stopping"]);
const VERB = { starting: "Starting on", loading: "Loading on", ready: "Serving on", stopping: "Stopping on",
  failed: "Failed on" };

export class ModelRow {
  /**
   * @param {string} name
   * @param {RowOptions} options
   */
  constructor(name, options) {
    this.name = name;
    this.options = options;
    this.base = `${options.modelsUrl}/${encodeURIComponent(name)}`;
    /** @type {Deployment|null} the replica shown: a ready one first, else the latest */
    this.deployment = null;
    /** @type {Map<string, Deployment>} every replica of the model, by deployment_id */
    this.replicas = new Map();
    this.state = "stopped";
    this.inFlight = false;
    this.placementKey = "";
    this.bothNodes = "";
    this.placementPicked = false;  // once the user chose, the selector stays as they left it
    this.lastSince = 0;  // server time of the newest state shown
    this.element = fromTemplate("tpl-model");
    this.element.dataset.model = name;
    this.element.id = `model-${name}`;
    setSlot(this.element, "name", name);
    slot(this.element, "actions").setAttribute("aria-label", `Actions for ${name}`);
    this.dryRun = new DryRunView(slot(this.element, "dry-run"));
    this.logs = new LogsPanel(slot(this.element, "logs"), `${this.base}/logs`, name);
    this.initActions();
  }

  /** @param {string} action */
  button(action) {
    return /** @type {HTMLButtonElement} */ (this.element.querySelector(`button[data-action="${action}"]`));
  }

  get placement() {
    return /** @type {HTMLSelectElement} */ (slot(this.element, "placement")).value || "auto";
  }

  /**
   * Everything GET /api/models says about the model.
   * @param {CatalogModel} model
   * @param {string[]} nodeNames
   * @param {boolean} keepDeployment  a deployment event arrived while the catalog was fetched: it is newer
   */
  setCatalog(model, nodeNames, keepDeployment) {
    const row = this.element;
    setSlot(row, "description", model.description || "No description.");
    setSlot(row, "size", `${model.size_gb} GB`);
    const { min, max } = model.nodes;
    setSlot(row, "span", min === max ? `${min} node${min === 1 ? "" : "s"}` : `${min}–${max} nodes`);
    setSlot(row, "repo", model.hf_repo);
    slot(row, "repo").title = model.aliases.length ? `Also called ${model.aliases.join(", ")}` : "";
    slot(row, "capabilities").replaceChildren(...model.capabilities.map((c) =>
      el("li", { class: "tag", text: c, attrs: { "data-capability": c } })));
    this.renderWeights(model.weights, nodeNames);
    this.renderPlacements(model.nodes, nodeNames);
    if (!keepDeployment) {
      this.replicas = new Map((model.replicas ?? []).map((d) => [d.deployment_id, d]));
      this.setDeployment(model.deployment);
    }
  }

  /**
   * One replica's state now, from the catalog or an event (null: the model runs nowhere).
   * @param {Deployment|null} deployment
   */
  setDeployment(deployment) {
    if (deployment?.since) this.lastSince = deployment.since;
    if (deployment?.state === "stopped") this.replicas.delete(deployment.deployment_id);
    else if (deployment) this.replicas.set(deployment.deployment_id, deployment);
    const all = [...this.replicas.values()];
    this.deployment = all.find((d) => d.state === "ready") ?? all.sort((a, b) => b.since - a.since)[0] ?? null;
    const state = this.deployment?.state ?? "stopped";
    const row = this.element;
    const changed = state !== this.state;
    this.state = state;
    row.dataset.state = state;
    const badge = slot(row, "badge");
    badge.textContent = state;
    badge.className = `pill model-badge badge-${state}`;
    this.renderWhere();
    const d = this.deployment;
    const detail = slot(row, "detail");
    showMessage(detail, d?.detail ? (state === "failed" ? `Reason: ${d.detail}` : d.detail) : null);
    detail.classList.toggle("mono", state !== "failed");
    detail.title = d?.detail ?? "";  // the box shows a few lines; the whole line on hover
    slot(row, "progress").hidden = !(state === "starting" || state === "loading" || state === "stopping");
    slot(row, "since-wrap").hidden = !d;
    if (d) {
      setSlot(row, "since-label", `${state} since`);
      const time = slot(row, "since");
      time.textContent = formatClock(d.since);
      time.setAttribute("datetime", new Date(d.since * 1000).toISOString());
    }
    if (d && !this.placementPicked) this.selectPlacement(d.nodes);
    this.updateButtons();
    if (changed) this.options.onChange();
  }

  /**
   * Show where the model runs in the (untouched) placement selector, so a dry run shows its command.
   * @param {string[]} nodes
   */
  selectPlacement(nodes) {
    const select = /** @type {HTMLSelectElement} */ (slot(this.element, "placement"));
    const value = nodes.length === 1 ? nodes[0] : "both";
    const option = [...select.options].find((o) => o.value === value && !o.disabled);
    const sameNodes = value !== "both" || nodes.join("+") === this.bothNodes;
    if (option && sameNodes) select.value = value;
  }

  renderWhere() {
    const where = slot(this.element, "where");
    const d = this.deployment;
    if (!d) {
      where.replaceChildren(el("span", { class: "muted", text: "Not running" }));
      return;
    }
    const parts = [
      el("span", { text: `${VERB[d.state] ?? d.state} ` }),
      el("strong", { class: "mono", text: d.nodes.join(" + ") }),
    ];
    if (d.state === "ready") {
      parts.push(el("span", { class: "muted", text: " at " }), el("span", { class: "mono", text: d.endpoint }));
    }
    const others = [...this.replicas.values()].filter((r) => r !== d);
    if (others.length) {
      parts.push(el("span", { class: "replicas", attrs: { "data-slot": "replicas" }, text:
        `; replica${others.length > 1 ? "s" : ""}: ${others.map((r) => `${r.nodes.join(" + ")} (${r.state})`).join(", ")}` }));
    }
    where.replaceChildren(...parts);
  }

  /**
   * @param {Record<string, boolean|null>} weights
   * @param {string[]} nodeNames
   */
  renderWeights(weights, nodeNames) {
    const list = slot(this.element, "weights");
    list.setAttribute("aria-label", `Weights of ${this.name} in each node's Hugging Face cache`);
    list.replaceChildren(...nodeNames.map((node) => {
      const present = weights[node];
      const [mark, words] = present === true ? ["✓", "weights present"]
        : present === false ? ["✗", "no weights yet (downloaded at launch)"] : ["?", "node did not answer"];
      const attrs = { "data-node": node, "data-present": String(present), title: words };
      return el("li", { class: "tag weight", attrs }, [
        el("span", { class: "mono", text: node }),
        el("span", { text: ` ${mark}`, attrs: { "aria-hidden": "true" } }),
        el("span", { class: "visually-hidden", text: `: ${words}` }),
      ]);
    }));
  }

  /**
   * The placement choices: auto, each node, both; those the model cannot use are disabled.
   * @param {{min: number, max: number}} span
   * @param {string[]} nodeNames
   */
  renderPlacements(span, nodeNames) {
    const key = JSON.stringify([span, nodeNames]);
    if (key === this.placementKey) return;
    this.placementKey = key;
    const select = /** @type {HTMLSelectElement} */ (slot(this.element, "placement"));
    const previous = select.value;
    const fits = (/** @type {number} */ count) => count >= span.min && count <= span.max;
    const needs = span.min === span.max
      ? `needs ${span.min} node${span.min === 1 ? "" : "s"}` : `needs ${span.min}–${span.max} nodes`;
    const autoCount = Math.max(1, span.min);  // what the app picks: as few nodes as the model needs
    /** @type {[string, string, number][]} value, label, node count */
    const choices = [["auto", `auto (${nodeNames.slice(0, autoCount).join(" + ")})`, autoCount]];
    for (const node of nodeNames) choices.push([node, node, 1]);
    this.bothNodes = nodeNames.slice(0, 2).join("+");
    if (nodeNames.length >= 2) choices.push(["both", `both (${nodeNames.slice(0, 2).join(" + ")})`, 2]);
    select.replaceChildren(...choices.map(([value, label, count]) => {
      const option = /** @type {HTMLOptionElement} */ (el("option", { text: fits(count) ? label : `${label}: ${needs}`,
        attrs: { value } }));
      option.disabled = !fits(count);
      return option;
    }));
    const usable = choices.find(([value, , count]) => value === previous && fits(count));
    select.value = usable ? previous : "auto";
  }

  /** Nodes the chosen placement names explicitly ([] for auto). */
  placementNodes() {
    const value = this.placement;
    if (value === "auto") return [];
    return value === "both" ? this.bothNodes.split("+") : [value];
  }

  updateButtons() {
    const running = RUNNING.has(this.state);
    const stoppable = (running && this.state !== "stopping") || this.state === "failed";
    const set = (/** @type {string} */ action, /** @type {boolean} */ enabled) => {
      this.button(action).disabled = this.inFlight || !enabled;
    };
    // A running model can get a replica on nodes it does not use yet (the gateway spreads requests).
    const used = new Set([...this.replicas.values()].filter((r) => RUNNING.has(r.state)).flatMap((r) => r.nodes));
    const chosen = this.placementNodes();
    const replicaFits = running && chosen.length > 0 && chosen.every((n) => !used.has(n));
    set("launch", !running || replicaFits);
    const addsReplica = running && replicaFits;
    this.button("launch").textContent = addsReplica ? "Add replica" : "Launch";
    this.button("launch").setAttribute("aria-label", `${addsReplica ? "Add replica of" : "Launch"} ${this.name}`);
    set("swap", !running);
    set("stop", stoppable);
    set("dry-run", true);
    this.button("logs").disabled = !(running || this.logs.isOpen);
  }

  initActions() {
    const name = this.name;
    this.button("launch").setAttribute("aria-label", `Launch ${name}`);
    this.button("swap").setAttribute("aria-label", `Swap to ${name}`);
    this.button("swap").title = "Stop whatever runs on the chosen nodes, then launch this model";
    this.button("stop").setAttribute("aria-label", `Stop ${name}`);
    this.button("dry-run").setAttribute("aria-label", `Dry run ${name}`);
    slot(this.element, "dry-run").id = `dry-run-${name}`;
    this.button("dry-run").setAttribute("aria-controls", `dry-run-${name}`);
    this.button("logs").setAttribute("aria-label", `Logs of ${name}`);
    slot(this.element, "logs").id = `logs-${name}`;
    this.button("logs").setAttribute("aria-controls", `logs-${name}`);
    slot(this.element, "placement").setAttribute("aria-label", `Placement of ${name}`);

    this.button("launch").addEventListener("click", () => this.act("Launch", `${this.base}/launch`,
      { placement: this.placement }));
    this.button("swap").addEventListener("click", () => this.act("Swap", this.options.swapUrl,
      { model: name, placement: this.placement }));
    this.button("stop").addEventListener("click", () => this.act("Stop", `${this.base}/stop`, undefined));
    this.button("dry-run").addEventListener("click", () => this.toggleDryRun());
    this.button("logs").addEventListener("click", () => this.toggleLogs());
    slot(this.element, "placement").addEventListener("change", () => {
      this.placementPicked = true;
      this.updateButtons();
      if (this.dryRun.isOpen) this.showDryRun();
    });
  }

  /**
   * POST an action; its answer (a deployment) is shown at once, the events carry the rest.
   * @param {string} verb  Launch | Swap | Stop
   * @param {string} url
   * @param {object|undefined} body
   */
  async act(verb, url, body) {
    const errorNode = slot(this.element, "error");
    const hadFocus = this.element.contains(document.activeElement);
    showMessage(errorNode, null);
    this.inFlight = true;
    this.element.setAttribute("aria-busy", "true");
    this.updateButtons();
    try {
      const deployment = await api(url, { method: "POST", body });
      // The answer (launch, swap and stop all answer with this model's deployment) may come after
      // newer events about it: only a state at least as recent is shown.
      if (deployment?.model === this.name && !(deployment.since < this.lastSince)) this.setDeployment(deployment);
    } catch (err) {
      let message = readableError(err);
      if (verb === "Launch" && /already (runs|listening)/.test(message)) {
        message = `${message.replace(/[.\s]*$/, "")}. Swap replaces what runs there.`;
      }
      showMessage(errorNode, `${verb} refused: ${message}`);
    } finally {
      this.inFlight = false;
      this.element.removeAttribute("aria-busy");
      this.updateButtons();
      keepFocus(hadFocus, this.element.querySelectorAll(".model-actions button"));
    }
  }

  toggleDryRun() {
    const button = this.button("dry-run");
    if (this.dryRun.isOpen) {
      this.dryRun.hide();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.setAttribute("aria-expanded", "true");
    this.showDryRun();
  }

  showDryRun() {
    this.dryRun.show(`${this.base}/command?placement=${encodeURIComponent(this.placement)}`, this.name);
  }

  toggleLogs() {
    const button = this.button("logs");
    if (this.logs.isOpen) {
      this.logs.close();
    } else {
      this.logs.open(this.deployment);
    }
    button.setAttribute("aria-expanded", String(this.logs.isOpen));
    this.updateButtons();
  }
}
