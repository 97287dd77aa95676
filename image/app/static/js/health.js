/**
 * The Health panel: quick health (GET /api/health/services: port open, health path, latency) of
 * every running model and service, read every 15 s; deep health (a real request through each,
 * judged, plus memory headroom per node) from GET /api/health/deep, and "Run deep check now"
 * (POST /api/health/deep/run).
 */

import { api, readableError } from "./api.js";
import { el, showMessage, slot } from "./dom.js";
import { formatClock, formatNumber } from "./format.js";

const QUICK_EVERY_MS = 15000;

/**
 * @typedef {{type: string, name: string, kind: string, node: string, ok: boolean, skipped?: boolean,
 *   latency_ms?: number|null, connect_ms?: number|null, check?: string, detail: string,
 *   health?: {latency_ms: number|null}|null}} CheckResult
 * @typedef {{node: string, status: string, available_gb: number|null, min_available_gb: number, detail: string}} Headroom
 */

/** @param {HTMLElement} panel  the <section> with data-quick-url, data-deep-url, data-run-url */
export function initHealthPanel(panel) {
  /** @type {number|undefined} */
  let timer;

  async function loadQuick() {
    const errorNode = slot(panel, "quick-error");
    try {
      const data = await api(/** @type {string} */ (panel.dataset.quickUrl));
      showMessage(errorNode, null);
      /** @type {CheckResult[]} */
      const targets = data.targets ?? [];
      slot(panel, "quick").replaceChildren(...targets.map((t) => checkItem(t, {
        verdict: t.ok ? "ok" : "fail",
        latency: t.health?.latency_ms ?? null,
        what: "",
        extra: t.connect_ms != null ? `connect ${formatNumber(t.connect_ms, "ms", 1)}` : "",
      })));
      slot(panel, "quick-empty").hidden = targets.length > 0;
      slot(panel, "quick-when").textContent = `checked ${formatClock(data.checked_at)}`;
    } catch (err) {
      showMessage(errorNode, `Could not run the quick health check: ${readableError(err)}`);
    } finally {
      clearTimeout(timer);
      timer = setTimeout(loadQuick, QUICK_EVERY_MS);
    }
  }

  /** @param {any} result  a deep health round */
  function renderDeep(result) {
    slot(panel, "deep-loading").hidden = true;
    showMessage(slot(panel, "deep-error"), null);
    const status = slot(panel, "deep-status");
    status.textContent = `deep: ${result.status}`;
    status.className = `pill health-${result.status}`;
    panel.dataset.deepStatus = result.status;
    /** @type {CheckResult[]} */
    const checks = result.checks ?? [];
    slot(panel, "deep").replaceChildren(...checks.map((c) => checkItem(c, {
      verdict: c.skipped ? "skipped" : c.ok ? "ok" : "fail",
      latency: c.latency_ms ?? null,
      what: c.check ?? "",
      extra: "",
    })));
    slot(panel, "deep-empty").hidden = checks.length > 0;
    /** @type {Headroom[]} */
    const memory = result.memory ?? [];
    slot(panel, "memory").replaceChildren(...memory.map(headroomItem));
    slot(panel, "deep-when").textContent =
      `ran ${formatClock(result.checked_at)} in ${formatNumber(result.duration_ms, "ms")}`;
  }

  api(/** @type {string} */ (panel.dataset.deepUrl))
    .then(renderDeep)
    .catch((err) => {
      slot(panel, "deep-loading").hidden = true;
      showMessage(slot(panel, "deep-error"), `Could not read the deep health: ${readableError(err)}`);
    });

  const button = /** @type {HTMLButtonElement} */ (slot(panel, "run"));
  const result = slot(panel, "result");
  button.addEventListener("click", async () => {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    result.dataset.kind = "pending";
    showMessage(result, "Sending a real request through everything that runs…");
    try {
      const round = await api(/** @type {string} */ (panel.dataset.runUrl), { method: "POST" });
      renderDeep(round);
      const failed = (round.checks ?? []).filter((/** @type {CheckResult} */ c) => !c.ok && !c.skipped).length;
      result.dataset.kind = round.status === "unhealthy" ? "error" : "ok";
      showMessage(result, `Deep check at ${formatClock(round.checked_at)}: ${round.status}, `
        + `${(round.checks ?? []).length} checked, ${failed} failed.`);
      loadQuick();
    } catch (err) {
      result.dataset.kind = "error";
      showMessage(result, `Deep check failed: ${readableError(err)}`);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  });

  loadQuick();
}

const VERDICT = /** @type {Record<string, string>} */ ({ ok: "pass", fail: "FAIL", skipped: "skipped" });

/**
 * One model or service with its verdict, latency and what the check found.
 * @param {CheckResult} c
 * @param {{verdict: string, latency: number|null, what: string, extra: string}} shown
 * @returns {HTMLElement}
 */
function checkItem(c, shown) {
  const digits = shown.latency !== null && shown.latency < 10 ? 1 : 0;
  return el("li", { class: "check-item", attrs: { "data-name": c.name, "data-verdict": shown.verdict } }, [
    el("span", { class: `pill verdict-${shown.verdict}`, text: VERDICT[shown.verdict] }),
    el("span", { class: "check-name" }, [
      el("strong", { class: "mono", text: c.name }),
      el("span", { class: "muted small", text: ` ${c.type} · ${c.kind || "model"} · ${c.node}` }),
    ]),
    el("span", { class: "check-latency", text: formatNumber(shown.latency, "ms", digits),
      attrs: { title: shown.what ? `latency of the ${shown.what} request` : "latency of the health path" } }),
    el("span", { class: "check-detail small", text: [shown.what, c.detail, shown.extra].filter(Boolean).join(": ") }),
  ]);
}

/**
 * @param {Headroom} m
 * @returns {HTMLElement}
 */
function headroomItem(m) {
  return el("li", { class: "memory-item", attrs: { "data-node": m.node, "data-status": m.status } }, [
    el("strong", { class: "mono", text: m.node }),
    el("span", { class: `pill health-${m.status === "ok" ? "healthy" : m.status}`, text: m.status }),
    el("span", { text: m.available_gb === null ? "–" : `${m.available_gb.toFixed(1)} GB available` }),
    el("span", { class: "muted small", text: m.status === "warning"
      ? `under the ${m.min_available_gb} GB minimum: ${m.detail}` : `warning under ${m.min_available_gb} GB` }),
  ]);
}
