/**
 * The Downloads panel: a form (POST /api/downloads) and the downloads, newest first, each with a
 * progress bar (bytes, files, rate, ETA) kept live by its own event stream
 * (GET /api/downloads/{id}/events) until it is done, failed or cancelled; Cancel on the way.
 * When a download ends, a `spark:caches-changed` event tells the Disk panel to measure again.
 */

import { api, readableError } from "./api.js";
import { el, fromTemplate, setSlot, showMessage, slot } from "./dom.js";
import { formatBytes, formatDuration } from "./format.js";
import { fillNodeSelect, onNodeNames } from "./node-list.js";

const FINISHED = new Set(["done", "failed", "cancelled"]);
const RESYNC_MS = 2000;
export const CACHES_CHANGED = "spark:caches-changed";

/**
 * @typedef {{phase?: string, where?: string, bytes_done?: number, bytes_total?: number|null,
 *   files_done?: number, files_total?: number|null, rate_bytes_per_s?: number|null, eta_s?: number|null}} Progress
 * @typedef {{id: string, repo_id: string, revision: string, include: string[], node: string, copy_to: string[],
 *   state: string, message: string, progress: Progress, verification: any[], partial_files: any[],
 *   created: number}} Download
 */

/**
 * @param {HTMLElement} panel  the <section> with data-downloads-url
 * @param {import("./stream.js").StatusStream} stream
 */
export function initDownloadsPanel(panel, stream) {
  const url = /** @type {string} */ (panel.dataset.downloadsUrl);
  const list = slot(panel, "list");
  const errorNode = slot(panel, "error");
  /** @type {Map<string, DownloadRow>} */
  const rows = new Map();
  /** @type {number|undefined} */
  let resyncTimer;

  /** @param {Download} d */
  function rowFor(d) {
    let row = rows.get(d.id);
    if (!row) {
      row = new DownloadRow(d, `${url}/${encodeURIComponent(d.id)}`, resyncSoon);
      rows.set(d.id, row);
    }
    return row;
  }

  function summarize() {
    const active = [...rows.values()].filter((r) => !FINISHED.has(r.state)).length;
    slot(panel, "summary").textContent = rows.size ? `${active} active · ${rows.size} listed` : "";
    slot(panel, "empty").hidden = rows.size > 0;
  }

  async function load() {
    const data = await api(url);
    slot(panel, "loading").hidden = true;
    showMessage(errorNode, null);
    /** @type {Download[]} */
    const downloads = data.downloads ?? [];
    downloads.forEach((d, index) => {
      const row = rowFor(d);
      if (list.children[index] !== row.element) list.insertBefore(row.element, list.children[index] ?? null);
      row.update(d);
      if (!FINISHED.has(d.state)) row.follow();
    });
    summarize();
  }

  function reload() {
    load().catch((err) => {
      slot(panel, "loading").hidden = true;
      showMessage(errorNode, `Could not read the downloads: ${readableError(err)}`);
    });
  }

  function resyncSoon() {
    summarize();
    clearTimeout(resyncTimer);
    resyncTimer = setTimeout(reload, RESYNC_MS);
  }

  initForm(panel, url, (d) => {
    const row = rowFor(d);
    list.prepend(row.element);
    row.update(d);
    row.follow();
    summarize();
  });
  onNodeNames(stream, (names) => fillNodeSelect(/** @type {HTMLSelectElement} */ (slot(panel, "node")), names,
    { value: "", label: `first node (${names[0]})` }));
  reload();
}

/**
 * @param {HTMLElement} panel
 * @param {string} url
 * @param {(d: Download) => void} onStarted
 */
function initForm(panel, url, onStarted) {
  const form = /** @type {HTMLFormElement} */ (slot(panel, "form"));
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector('button[type="submit"]'));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const text = (/** @type {string} */ name) => String(fields.get(name) ?? "").trim();
    /** @type {Record<string, unknown>} */
    const body = { repo_id: text("repo_id") };
    if (text("revision")) body.revision = text("revision");
    const include = text("include").split(/[\s,]+/).filter(Boolean);
    if (include.length) body.include = include;
    if (text("node")) body.node = text("node");
    if (!fields.get("copy")) body.copy_to = [];
    submit.disabled = true;
    showMessage(slot(panel, "error"), null);
    try {
      onStarted(await api(url, { method: "POST", body }));
      /** @type {HTMLInputElement} */ (form.elements.namedItem("repo_id")).value = "";
    } catch (err) {
      showMessage(slot(panel, "error"), `Download refused: ${readableError(err)}`);
    } finally {
      submit.disabled = false;
    }
  });
}

/** One download: built from <template id="tpl-download">, updated by its events. */
class DownloadRow {
  /**
   * @param {Download} d
   * @param {string} base  /api/downloads/<id>
   * @param {() => void} onSettled  something ended or the stream broke: read the list again
   */
  constructor(d, base, onSettled) {
    this.id = d.id;
    this.base = base;
    this.onSettled = onSettled;
    this.state = d.state;
    /** @type {EventSource|null} */
    this.source = null;
    this.element = fromTemplate("tpl-download");
    this.element.dataset.download = d.id;
    this.element.dataset.repo = d.repo_id;
    const cancel = /** @type {HTMLButtonElement} */ (this.element.querySelector('[data-action="cancel"]'));
    cancel.setAttribute("aria-label", `Cancel the download of ${d.repo_id}`);
    cancel.addEventListener("click", () => this.cancel(cancel));
    slot(this.element, "bar").setAttribute("aria-label", `Progress of ${d.repo_id}`);
  }

  /** @param {Download} d */
  update(d) {
    const row = this.element;
    const wasFinished = FINISHED.has(this.state);
    this.state = d.state;
    row.dataset.state = d.state;
    setSlot(row, "repo", d.revision && d.revision !== "main" ? `${d.repo_id} @ ${d.revision}` : d.repo_id);
    const pill = slot(row, "state");
    pill.textContent = d.state;
    pill.className = `pill dl-${d.state}`;
    const copy = d.copy_to.length ? `, then copied to ${d.copy_to.join(", ")}` : ", no copy";
    const include = d.include.length ? ` · only ${d.include.join(" ")}` : "";
    setSlot(row, "where", `onto ${d.node}${copy}${include}`);
    const message = slot(row, "message");
    const partial = d.state === "cancelled" && d.partial_files.length
      ? ` (${d.partial_files.length} partial file${d.partial_files.length > 1 ? "s" : ""} left in the cache; a new download resumes them)` : "";
    message.textContent = d.state === "failed" ? `Failed: ${d.message}` : `${d.message}${partial}`;
    message.className = d.state === "failed" ? "small error" : "small";
    if (d.state === "done") this.setProgress({ ...d.progress, phase: "done" });
    else this.setProgress(d.progress ?? {});
    slot(row, "verification").replaceChildren(...(d.verification ?? []).map(verificationTag));
    /** @type {HTMLButtonElement} */ (row.querySelector('[data-action="cancel"]')).hidden = FINISHED.has(d.state);
    if (FINISHED.has(d.state)) {
      this.stop();
      if (!wasFinished) {
        document.dispatchEvent(new CustomEvent(CACHES_CHANGED, { detail: { node: d.node } }));
        this.onSettled();
      }
    }
  }

  /** @param {Progress} p */
  setProgress(p) {
    const row = this.element;
    const done = this.state === "done";
    const verifying = this.state === "verifying";
    const total = p.bytes_total ?? 0;
    const ratio = done || verifying ? 1 : total > 0 ? Math.min(1, (p.bytes_done ?? 0) / total) : 0;
    slot(row, "fill").style.width = `${(ratio * 100).toFixed(1)}%`;
    const bar = slot(row, "bar");
    bar.setAttribute("aria-valuenow", (ratio * 100).toFixed(0));
    bar.dataset.phase = this.state;
    const phase = verifying ? "verifying every shard on every node"
      : p.phase === "copying" || (p.where ?? "").includes("->") ? `copying ${p.where ?? ""}`
      : p.phase === "downloading" ? `downloading on ${p.where ?? ""}` : this.state === "queued" ? "waiting for its turn" : "";
    setSlot(row, "phase", done ? "complete" : phase);
    const files = p.files_total ? ` · ${p.files_done ?? 0} / ${p.files_total} files` : "";
    setSlot(row, "numbers", total ? `${formatBytes(p.bytes_done ?? 0)} of ${formatBytes(total)}${files}` : files.slice(3));
    const active = this.state === "downloading" || this.state === "copying";
    const rate = active && p.rate_bytes_per_s != null
      ? `${formatBytes(p.rate_bytes_per_s)}/s · ETA ${p.eta_s != null ? formatDuration(p.eta_s) : "–"}` : "";
    setSlot(row, "rate", rate || (active ? "measuring the rate…" : ""));
    slot(row, "progress-block").hidden = this.state === "failed" || this.state === "cancelled";
  }

  /** Follow the download's events until it ends. */
  follow() {
    if (this.source || FINISHED.has(this.state)) return;
    const source = new EventSource(`${this.base}/events`);
    this.source = source;
    source.addEventListener("state", (message) => {
      const event = parse(/** @type {MessageEvent} */ (message));
      if (event?.download) this.update(event.download);
    });
    source.addEventListener("progress", (message) => {
      const event = parse(/** @type {MessageEvent} */ (message));
      if (event && !FINISHED.has(this.state)) this.setProgress(event);
    });
    source.addEventListener("error", () => {
      // The stream ends after the final state, or broke: either way the list is read again.
      this.stop();
      this.onSettled();
    });
  }

  stop() {
    this.source?.close();
    this.source = null;
  }

  /** @param {HTMLButtonElement} button */
  async cancel(button) {
    button.disabled = true;
    const message = slot(this.element, "message");
    try {
      this.update(await api(`${this.base}/cancel`, { method: "POST" }));
    } catch (err) {
      message.textContent = `Cancel refused: ${readableError(err)}`;
      message.className = "small error";
    } finally {
      button.disabled = false;
    }
  }
}

/**
 * @param {MessageEvent} message
 * @returns {any}
 */
function parse(message) {
  try {
    return JSON.parse(message.data);
  } catch {
    return null; // one unreadable event: the next one (or the list) corrects the row
  }
}

/**
 * @param {{node: string, complete: boolean, problem: string|null, note: string|null, shards: any[]}} v
 * @returns {HTMLElement}
 */
function verificationTag(v) {
  const words = v.complete ? `${v.shards?.length ?? 0} shards complete` : v.problem ?? "incomplete";
  return el("li", { class: `tag weight`, text: `${v.node} ${v.complete ? "✓" : "✗"} ${words}`,
    attrs: { "data-node": v.node, "data-present": String(Boolean(v.complete)), title: v.note ?? words } });
}
