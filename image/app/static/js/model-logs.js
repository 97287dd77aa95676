/**
 * A running model's logs, followed: GET /api/models/{name}/logs?follow=true&tail=200 read with a
 * ReadableStream into a <pre> that scrolls by itself while the user is at its end. Closing it
 * aborts the request (AbortController), which ends `docker logs --follow` on the node.
 */

import { apiStream, readableError } from "./api.js";
import { el, setSlot, slot } from "./dom.js";

// Enough for the loading story of a model; older text is dropped so a chatty model cannot
// make the page slow.
const KEEP_CHARS = 200_000;
const TRIM_TO_CHARS = 150_000;
const AT_END_PX = 24;
const TAIL_LINES = 200;

/**
 * The row's logs block (`data-slot="logs"`): a title, a node choice for two-node models, a
 * status line and the <pre>.
 */
export class LogsPanel {
  /**
   * @param {HTMLElement} root
   * @param {string} url  the model's logs endpoint, without query
   * @param {string} model
   */
  constructor(root, url, model) {
    this.root = root;
    this.url = url;
    this.model = model;
    /** @type {Record<string, string>} node -> container */
    this.containers = {};
    this.view = new LogView(slot(root, "log"), slot(root, "logs-status"));
    this.nodeSelect = /** @type {HTMLSelectElement} */ (slot(root, "logs-node"));
    this.nodeSelect.setAttribute("aria-label", `Node whose logs of ${model} to show`);
    this.nodeSelect.addEventListener("change", () => this.follow());
  }

  get isOpen() {
    return !this.root.hidden;
  }

  /** @param {{nodes: string[], containers: Record<string, string>}|null} deployment  where the model runs */
  open(deployment) {
    const nodes = deployment?.nodes ?? [];
    this.containers = deployment?.containers ?? {};
    this.nodeSelect.replaceChildren(...nodes.map((n) => el("option", { text: n, attrs: { value: n } })));
    slot(this.root, "logs-node-wrap").hidden = nodes.length < 2;
    this.root.hidden = false;
    this.follow();
  }

  close() {
    this.view.stop();
    this.root.hidden = true;
  }

  follow() {
    const node = this.nodeSelect.value;
    const container = node ? this.containers[node] : null;
    setSlot(this.root, "logs-title", container ? `Logs of ${container} on ${node}` : `Logs of ${this.model}`);
    this.view.pre.setAttribute("aria-label", `Logs of ${this.model}${node ? ` on ${node}` : ""}`);
    const query = new URLSearchParams({ follow: "true", tail: String(TAIL_LINES) });
    if (node) query.set("node", node);
    this.view.follow(`${this.url}?${query}`);
  }
}

export class LogView {
  /**
   * @param {HTMLPreElement|HTMLElement} pre  where the text goes
   * @param {HTMLElement} status  a short line: following, ended, or why it failed
   */
  constructor(pre, status) {
    this.pre = pre;
    this.status = status;
    /** @type {AbortController|null} */
    this.controller = null;
  }

  get following() {
    return this.controller !== null;
  }

  /**
   * Start following `url` (whatever was followed before stops first).
   * @param {string} url
   */
  async follow(url) {
    this.stop();
    const controller = new AbortController();
    this.controller = controller;
    this.pre.textContent = "";
    this.status.textContent = "connecting…";
    try {
      const response = await apiStream(url, { signal: controller.signal });
      this.status.textContent = "following";
      const reader = /** @type {ReadableStream<Uint8Array>} */ (response.body).getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.append(decoder.decode(value, { stream: true }));
      }
      this.append(decoder.decode());
      if (this.controller === controller) this.status.textContent = "ended: the container stopped or its log closed";
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") return;
      if (this.controller === controller) this.status.textContent = `Cannot follow the logs: ${readableError(err)}`;
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }

  /** Stop following (keeps the text on screen). */
  stop() {
    if (!this.controller) return;
    this.controller.abort();
    this.controller = null;
    this.status.textContent = "stopped following";
  }

  /** @param {string} text */
  append(text) {
    if (!text) return;
    const pre = this.pre;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - AT_END_PX;
    // Progress bars redraw a line with \r: show each redraw on its own line.
    pre.append(text.replace(/\r\n?/g, "\n"));
    if ((pre.textContent ?? "").length > KEEP_CHARS) {
      const kept = (pre.textContent ?? "").slice(-TRIM_TO_CHARS);
      pre.textContent = kept.slice(kept.indexOf("\n") + 1);
    }
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
}
