/**
 * The Models panel: the catalog from GET /api/models, one ModelRow per model, kept live by the
 * deployment events of GET /api/swap/events (each updates its row in place). When a model
 * settles (ready, stopped, failed) the catalog is read again for what events do not carry
 * (weights on each node).
 */

import { api, readableError } from "./api.js";
import { showMessage, slot } from "./dom.js";
import { ModelRow } from "./model-row.js";

const SETTLED = new Set(["ready", "stopped", "failed"]);
const REFETCH_DELAY_MS = 300;
const RECONNECT_MS = 2000;
const RETRY_MS = 5000;

/** @param {HTMLElement} panel  the <section> with data-models-url, data-swap-url, data-events-url */
export function initModelsPanel(panel) {
  const list = slot(panel, "list");
  const errorNode = slot(panel, "error");
  const loading = slot(panel, "loading");
  const modelsUrl = /** @type {string} */ (panel.dataset.modelsUrl);
  /** @type {Map<string, ModelRow>} */
  const rows = new Map();
  // Which model had an event, and when (a counter): a catalog fetched before that is older.
  let eventCount = 0;
  /** @type {Map<string, number>} */
  const lastEventAt = new Map();
  /** @type {number|undefined} */
  let refetchTimer;

  const options = { modelsUrl, swapUrl: /** @type {string} */ (panel.dataset.swapUrl), onChange: summarize };

  function summarize() {
    const counts = new Map();
    for (const row of rows.values()) counts.set(row.state, (counts.get(row.state) ?? 0) + 1);
    const parts = ["ready", "loading", "starting", "stopping", "failed"]
      .filter((s) => counts.get(s)).map((s) => `${counts.get(s)} ${s}`);
    slot(panel, "summary").textContent = [`${rows.size} in the catalog`, ...parts].join(" · ");
  }

  async function load() {
    const startedAt = eventCount;
    const data = await api(modelsUrl);
    loading.hidden = true;
    showMessage(errorNode, null);
    /** @type {import("./model-row.js").CatalogModel[]} */
    const models = data.models ?? [];
    const nodeNames = [...new Set(models.flatMap((m) => Object.keys(m.weights ?? {})))];
    const seen = new Set();
    models.forEach((model, index) => {
      seen.add(model.name);
      let row = rows.get(model.name);
      if (!row) {
        row = new ModelRow(model.name, options);
        rows.set(model.name, row);
      }
      if (list.children[index] !== row.element) list.insertBefore(row.element, list.children[index] ?? null);
      row.setCatalog(model, nodeNames, (lastEventAt.get(model.name) ?? -1) > startedAt);
    });
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.element.remove();
        rows.delete(name);
      }
    }
    summarize();
  }

  function reload() {
    load().catch((err) => {
      loading.hidden = true;
      showMessage(errorNode, `Could not read the model catalog: ${readableError(err)}`);
      clearTimeout(refetchTimer);
      refetchTimer = setTimeout(reload, RETRY_MS);
    });
  }

  function scheduleReload() {
    clearTimeout(refetchTimer);
    refetchTimer = setTimeout(reload, REFETCH_DELAY_MS);
  }

  /** @param {any} event  a Deployment dict (with its deployment_id) plus the event's id, ts and kind */
  function onDeployment(event) {
    eventCount += 1;
    lastEventAt.set(event.model, eventCount);
    const row = rows.get(event.model);
    if (row) {
      const { id: _id, ts: _ts, kind: _kind, ...deployment } = event;
      row.setDeployment(deployment);
    }
    if (!row || SETTLED.has(event.state)) scheduleReload();
  }

  followEvents(/** @type {string} */ (panel.dataset.eventsUrl), slot(panel, "feed"), onDeployment, reload);
  reload();
}

/**
 * Follow the deployment events. On any break a fresh EventSource is opened (not the browser's
 * own retry: its Last-Event-ID would skip the first events of a restarted app, whose ids start
 * again at 1) and the catalog is read again, so nothing missed stays on screen. A fresh stream
 * starts with the app's recent events: those already shown (by their server time `ts`) are skipped.
 * @param {string} url
 * @param {HTMLElement} indicator
 * @param {(event: any) => void} onDeployment
 * @param {() => void} resync
 */
function followEvents(url, indicator, onDeployment, resync) {
  const show = (/** @type {string} */ state, /** @type {string} */ text) => {
    indicator.dataset.state = state;
    indicator.textContent = text;
  };
  let broken = false;
  let lastTs = 0;

  function connect() {
    show("connecting", "connecting…");
    const source = new EventSource(url);
    source.addEventListener("open", () => {
      show("live", "live progress");
      if (broken) resync();
      broken = false;
    });
    source.addEventListener("deployment", (message) => {
      let event;
      try {
        event = JSON.parse(/** @type {MessageEvent} */ (message).data);
      } catch {
        return; // one unreadable event: the next catalog read corrects the row
      }
      if (typeof event.ts === "number") {
        if (event.ts <= lastTs) return;
        lastTs = event.ts;
      }
      try {
        onDeployment(event);
      } catch (err) {
        console.error("the Models panel failed to show a deployment event", err);
      }
    });
    source.addEventListener("error", () => {
      source.close();
      broken = true;
      show("reconnecting", "progress: reconnecting…");
      setTimeout(connect, RECONNECT_MS);
    });
  }

  connect();
}
