/**
 * The Disk panel: per node, each filesystem's use as a bar (df) and every Hugging Face cache
 * directory as a horizontal bar chart of its size (du, one scale for all nodes, so the biggest
 * caches stand out), with Delete behind a confirm step (DELETE /api/disk/cache). A cache in use
 * by a running model is refused (409) and the reason shown on its row.
 * Measured again on Refresh, after a delete, and when a download ends.
 */

import { api, readableError } from "./api.js";
import { el, fromTemplate, setSlot, showMessage, slot } from "./dom.js";
import { CACHES_CHANGED } from "./downloads.js";
import { formatBytes, formatPercent } from "./format.js";

/**
 * @typedef {{filesystem: string, mountpoint: string, size_bytes: number, used_bytes: number,
 *   available_bytes: number, holds: string[]}} Filesystem
 * @typedef {{dirname: string, repo_id: string, size_bytes: number, in_use_by: string[]}} Cache
 * @typedef {{node: string, error: string|null, filesystems: Filesystem[], caches: Cache[],
 *   nim_cache: {path: string, size_bytes: number}|null}} NodeDisk
 */

/** Each cache row's way back from its confirm step (the row is rebuilt on every measure). */
const resets = /** @type {WeakMap<HTMLElement, () => void>} */ (new WeakMap());

/** @param {HTMLElement} panel  the <section> with data-disk-url */
export function initDiskPanel(panel) {
  const url = /** @type {string} */ (panel.dataset.diskUrl);
  const root = slot(panel, "nodes");
  const errorNode = slot(panel, "error");
  const refresh = /** @type {HTMLButtonElement} */ (slot(panel, "refresh"));
  let loading = false;

  async function load() {
    if (loading) return;
    loading = true;
    refresh.disabled = true;
    panel.setAttribute("aria-busy", "true");
    try {
      const data = await api(url);
      showMessage(errorNode, null);
      /** @type {NodeDisk[]} */
      const nodes = data.nodes ?? [];
      const largest = Math.max(1, ...nodes.flatMap((n) => n.caches.map((c) => c.size_bytes)));
      root.replaceChildren(...nodes.map((n) => nodeCard(n, largest, deleteCache)));
      const total = nodes.reduce((sum, n) => sum + n.caches.reduce((s, c) => s + c.size_bytes, 0), 0);
      slot(panel, "summary").textContent = `${formatBytes(total)} of model caches on ${nodes.length} nodes`;
    } catch (err) {
      showMessage(errorNode, `Could not measure the disks: ${readableError(err)}`);
    } finally {
      slot(panel, "loading").hidden = true;
      loading = false;
      refresh.disabled = false;
      panel.removeAttribute("aria-busy");
    }
  }

  /**
   * @param {string} node
   * @param {Cache} cache
   * @param {HTMLElement} item  the cache's row, where the outcome is shown
   */
  async function deleteCache(node, cache, item) {
    const message = /** @type {HTMLElement} */ (item.querySelector(".cache-message"));
    try {
      const done = await api("/api/disk/cache", { method: "DELETE", body: { node, dirname: cache.dirname } });
      message.className = "cache-message check-result";
      message.dataset.kind = "ok";
      showMessage(message, `Deleted ${cache.dirname} on ${node}: ${formatBytes(done.freed_bytes)} freed.`);
      setTimeout(load, 800);
    } catch (err) {
      message.className = "cache-message error";
      showMessage(message, `Not deleted: ${readableError(err)}`);
      resetActions(item);
    }
  }

  refresh.addEventListener("click", load);
  document.addEventListener(CACHES_CHANGED, () => load());
  load();
}

/**
 * @param {NodeDisk} n
 * @param {number} largest  the largest cache on any node: the chart's full width
 * @param {(node: string, cache: Cache, item: HTMLElement) => void} onDelete
 * @returns {HTMLElement}
 */
function nodeCard(n, largest, onDelete) {
  const children = [el("header", { class: "card-head" }, [el("h3", { class: "node-name", text: n.node })])];
  if (n.error) {
    children.push(el("p", { class: "error", text: `Cannot measure ${n.node}: ${n.error}` }));
    return el("article", { class: "card disk-card", attrs: { "data-node": n.node, "data-state": "down" } }, children);
  }
  const filesystems = el("div", { class: "block" }, [el("h4", { text: "Filesystems" }),
    ...n.filesystems.map(filesystemRow)]);
  const chart = el("ul", { class: "cache-chart", attrs: { "aria-label": `Model caches on ${n.node}, largest first` } },
    n.caches.map((c) => cacheRow(n.node, c, largest, onDelete)));
  const caches = el("div", { class: "block" }, [el("h4", { text: "Hugging Face caches" }),
    n.caches.length ? chart : el("p", { class: "muted", text: "No model in the cache." })]);
  children.push(filesystems, caches);
  if (n.nim_cache) {
    children.push(el("p", { class: "small muted", text: `NIM cache ${n.nim_cache.path}: ${formatBytes(n.nim_cache.size_bytes)}` }));
  }
  return el("article", { class: "card disk-card", attrs: { "data-node": n.node, "data-state": "up" } }, children);
}

/**
 * @param {Filesystem} fs
 * @returns {HTMLElement}
 */
function filesystemRow(fs) {
  const row = fromTemplate("tpl-usage");
  const ratio = fs.size_bytes ? fs.used_bytes / fs.size_bytes : 0;
  row.dataset.mount = fs.mountpoint;
  setSlot(row, "label", fs.mountpoint);
  setSlot(row, "numbers", `${formatBytes(fs.used_bytes)} of ${formatBytes(fs.size_bytes)} used (${formatPercent(ratio, 0)})`);
  setSlot(row, "extra", `${formatBytes(fs.available_bytes)} free · ${fs.filesystem} · holds ${fs.holds.join(", ")}`);
  slot(row, "fill").style.width = `${(ratio * 100).toFixed(1)}%`;
  const bar = /** @type {HTMLElement} */ (row.querySelector(".bar"));
  bar.setAttribute("aria-valuenow", (ratio * 100).toFixed(0));
  bar.setAttribute("aria-label", `${fs.mountpoint} used`);
  if (ratio >= 0.9) bar.dataset.level = "high";
  else if (ratio >= 0.75) bar.dataset.level = "mid";
  return row;
}

/**
 * One bar of the chart: the repo, its size as a bar, who uses it, Delete (then confirm).
 * @param {string} node
 * @param {Cache} cache
 * @param {number} largest
 * @param {(node: string, cache: Cache, item: HTMLElement) => void} onDelete
 * @returns {HTMLElement}
 */
function cacheRow(node, cache, largest, onDelete) {
  const share = Math.max(0.5, (cache.size_bytes / largest) * 100);
  const inUse = cache.in_use_by.length > 0;
  const actions = el("div", { class: "cache-actions" });
  const item = el("li", { class: "cache", attrs: { "data-dirname": cache.dirname, "data-in-use": String(inUse) } }, [
    el("p", { class: "cache-name" }, [
      el("span", { class: "mono", text: cache.repo_id, attrs: { title: cache.dirname } }),
      el("strong", { class: "cache-size", text: formatBytes(cache.size_bytes) }),
    ]),
    el("div", { class: "cache-bar", attrs: { "aria-hidden": "true" } },
      [el("div", { class: "cache-bar-fill", attrs: { style: `width: ${share.toFixed(1)}%` } })]),
    ...(inUse ? [el("p", { class: "small in-use", text: `in use by ${cache.in_use_by.join(", ")}` })] : []),
    actions,
    el("p", { class: "cache-message", attrs: { role: "status" } }),
  ]);
  /** @type {HTMLElement} */ (item.lastElementChild).hidden = true;
  item.dataset.node = node;
  const del = el("button", { class: "button small danger", text: "Delete",
    attrs: { type: "button", "aria-label": `Delete ${cache.repo_id} on ${node}` } });
  const confirm = el("button", { class: "button small danger", text: `Yes, delete ${formatBytes(cache.size_bytes)}`,
    attrs: { type: "button", "data-action": "confirm", "aria-label": `Confirm: delete ${cache.repo_id} on ${node}` } });
  const keep = el("button", { class: "button small", text: "Keep it", attrs: { type: "button" } });
  const question = el("span", { class: "small", text: `Delete ${cache.dirname} on ${node}?` });
  del.addEventListener("click", () => {
    showMessage(/** @type {HTMLElement} */ (item.querySelector(".cache-message")), null);
    actions.replaceChildren(question, confirm, keep);
    confirm.focus();
  });
  keep.addEventListener("click", () => resetActions(item));
  confirm.addEventListener("click", () => {
    /** @type {HTMLButtonElement} */ (confirm).disabled = true;
    /** @type {HTMLButtonElement} */ (keep).disabled = true;
    onDelete(node, cache, item);
  });
  resets.set(item, () => {
    /** @type {HTMLButtonElement} */ (confirm).disabled = false;
    /** @type {HTMLButtonElement} */ (keep).disabled = false;
    actions.replaceChildren(del);
    del.focus();
  });
  actions.replaceChildren(del);
  return item;
}

/** @param {HTMLElement} item  back from the confirm step to the Delete button */
function resetActions(item) {
  resets.get(item)?.();
}
