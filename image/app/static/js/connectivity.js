/**
 * The Connectivity panel: per-node reachability (state, since, uptime, checks), the list of
 * transitions, and "Check now" (POST /api/connectivity/check).
 */

import { api, readableError } from "./api.js";
import { el, showMessage, slot } from "./dom.js";
import { formatClock, formatNumber, formatPercent, setRelativeTime } from "./format.js";

/**
 * @typedef {{state: "up"|"down"|"unknown", since: number|null, last_check: number|null,
 *   latency_ms: number|null, reason: string|null, checks: number, failures: number,
 *   uptime_ratio: number|null}} NodeConnectivity
 * @typedef {{ts: number, node: string, state: string, reason: string|null}} Transition
 * @typedef {{nodes: Record<string, NodeConnectivity>, transitions: Transition[],
 *   log_problem: string|null, interval_s?: number}} ConnectivitySummary
 */

const MAX_TRANSITIONS = 50;

/**
 * @param {HTMLElement} panel  the <section> with data-connectivity-url
 * @param {import("./stream.js").StatusStream} stream
 */
export function initConnectivityPanel(panel, stream) {
  const rows = slot(panel, "rows");
  const transitions = slot(panel, "transitions");
  const errorNode = slot(panel, "error");
  let transitionsKey = "";

  /** @param {ConnectivitySummary} summary */
  function render(summary) {
    showMessage(slot(panel, "log-problem"), summary.log_problem
      ? `The connectivity log has a problem: ${summary.log_problem}` : null);
    if (summary.interval_s) {
      slot(panel, "interval").textContent = `Every node is probed every ${summary.interval_s} s.`;
    }
    renderRows(rows, summary.nodes ?? {});
    const list = (summary.transitions ?? []).slice(0, MAX_TRANSITIONS);
    const key = JSON.stringify(list.map((t) => [t.ts, t.node, t.state]));
    if (key !== transitionsKey) {
      transitionsKey = key;
      transitions.replaceChildren(...list.map(transitionItem));
      slot(panel, "no-transitions").hidden = list.length > 0;
    }
  }

  stream.subscribe((payload) => {
    if (payload.connectivity) {
      showMessage(errorNode, null);
      render(payload.connectivity);
    }
  });

  api(panel.dataset.connectivityUrl)
    .then(render)
    .catch((err) => showMessage(errorNode, `Could not load the connectivity log: ${readableError(err)}`));

  initCheckNow(panel, render);
}

/**
 * The "Check now" button: probe every node now, show what came back (or why it failed).
 * @param {HTMLElement} panel
 * @param {(summary: ConnectivitySummary) => void} render
 */
function initCheckNow(panel, render) {
  const button = /** @type {HTMLButtonElement} */ (slot(panel, "check"));
  const result = slot(panel, "result");
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    result.dataset.kind = "pending";
    showMessage(result, "Checking every node…");
    try {
      /** @type {ConnectivitySummary} */
      const summary = await api(button.dataset.checkUrl, { method: "POST" });
      render(summary);
      const words = Object.entries(summary.nodes).map(([name, n]) => n.state === "up"
        ? `${name} up (${formatNumber(n.latency_ms, "ms")})`
        : `${name} ${PILL[n.state] ?? n.state} (${n.reason ?? "no reason given"})`);
      result.dataset.kind = "ok";
      showMessage(result, `Checked at ${formatClock(Date.now() / 1000)}: ${words.join(", ")}.`);
    } catch (err) {
      result.dataset.kind = "error";
      showMessage(result, `Check failed: ${readableError(err)}`);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  });
}

/** What the state pill says; "unknown" is a node whose first probe has not answered yet. */
const PILL = /** @type {Record<string, string>} */ ({ up: "up", down: "DOWN", unknown: "checking" });

/**
 * Update the per-node table in place (one row per node, keyed by `data-node`).
 * @param {HTMLElement} tbody
 * @param {Record<string, NodeConnectivity>} nodes
 */
function renderRows(tbody, nodes) {
  const names = Object.keys(nodes);
  for (const row of [...tbody.children]) {
    if (!names.includes(/** @type {HTMLElement} */ (row).dataset.node)) row.remove();
  }
  names.forEach((name, index) => {
    let row = /** @type {HTMLElement|null} */ (tbody.querySelector(`tr[data-node="${CSS.escape(name)}"]`));
    if (!row) row = newRow(name);
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] ?? null);
    const n = nodes[name];
    const cell = (/** @type {string} */ key) => /** @type {HTMLElement} */ (row.querySelector(`[data-cell="${key}"]`));
    row.dataset.state = n.state;
    const pill = /** @type {HTMLElement} */ (cell("state").firstElementChild);
    pill.textContent = PILL[n.state] ?? n.state;
    pill.className = `pill state-${n.state}`;
    const reason = /** @type {HTMLElement} */ (cell("state").lastElementChild);
    showMessage(reason, n.state === "up" ? null : n.reason);
    setRelativeTime(/** @type {HTMLElement} */ (cell("since").firstElementChild), n.since);
    cell("uptime").textContent = formatPercent(n.uptime_ratio, 2);
    cell("checks").textContent = `${n.checks} / ${n.failures}`;
    cell("latency").textContent = formatNumber(n.latency_ms, "ms", n.latency_ms !== null && n.latency_ms < 10 ? 1 : 0);
  });
}

/**
 * @param {string} name
 * @returns {HTMLElement}
 */
function newRow(name) {
  const td = (/** @type {string} */ key, /** @type {string} */ label, /** @type {Node[]} */ children = []) =>
    el("td", { attrs: { "data-cell": key, "data-label": label } }, children);
  return el("tr", { attrs: { "data-node": name } }, [
    el("th", { text: name, attrs: { scope: "row", "data-label": "Node" } }),
    td("state", "State", [el("span", { class: "pill" }), el("span", { class: "reason small" })]),
    td("since", "Since", [el("time")]),
    td("uptime", "Uptime"),
    td("checks", "Checks / failures"),
    td("latency", "Last latency"),
  ]);
}

/**
 * @param {Transition} t
 * @returns {HTMLElement}
 */
function transitionItem(t) {
  const when = el("time", { text: formatClock(t.ts),
    attrs: { datetime: new Date(t.ts * 1000).toISOString(), title: new Date(t.ts * 1000).toLocaleString() } });
  return el("li", { attrs: { "data-node": t.node, "data-state": t.state } }, [
    when,
    el("span", { class: "mono", text: t.node }),
    el("span", { class: `pill state-${t.state}`, text: t.state === "up" ? "up" : "DOWN" }),
    el("span", { class: "reason", text: t.reason ?? "" }),
  ]);
}
