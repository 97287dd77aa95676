/**
 * A running model's logs, followed: GET /api/models/{name}/logs?follow=true&tail=200 read with a
 * ReadableStream into a <pre> that scrolls by itself while the user is at its end. Closing it
 * aborts the request (AbortController), which ends `docker logs --follow` on the node.
 */

import { apiStream, readableError } from "./api.js";

// Enough for the loading story of a model; older text is dropped so a chatty model cannot
// make the page slow.
const KEEP_CHARS = 200_000;
const TRIM_TO_CHARS = 150_000;
const AT_END_PX = 24;

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
