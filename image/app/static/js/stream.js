/**
 * The live status feed: one EventSource on /api/status/stream shared by every panel.
 *
 * Panels `subscribe(fn)` and get each `status` event's payload
 * `{nodes: [...], connectivity: {...}, generated_at}`. The browser reconnects on its own after a
 * dropped connection; if it gives up (the app answered with an error), a new EventSource is
 * opened after a pause. The indicator element shows live / reconnecting / stale.
 */

import { setRelativeTime } from "./format.js";

const RETRY_AFTER_CLOSE_MS = 5000;
// The app sends an event after every probe round and at least every 15 s when rounds stall.
const STALE_AFTER_MS = 45000;

/**
 * @typedef {{nodes: object[], connectivity: object, generated_at: number}} StatusPayload
 * @typedef {(payload: StatusPayload) => void} Subscriber
 */

export class StatusStream {
  /**
   * @param {string} url  the SSE endpoint
   * @param {HTMLElement} indicator  shows the connection state (`data-state` + text)
   * @param {HTMLElement|null} updated  a <time> element: when the last event arrived
   */
  constructor(url, indicator, updated) {
    this.url = url;
    this.indicator = indicator;
    this.updated = updated;
    /** @type {Subscriber[]} */
    this.subscribers = [];
    /** @type {EventSource|null} */
    this.source = null;
    this.lastEventAt = 0;
  }

  /** @param {Subscriber} fn */
  subscribe(fn) {
    this.subscribers.push(fn);
  }

  start() {
    this.connect();
    setInterval(() => {
      if (this.indicator.dataset.state === "live" && Date.now() - this.lastEventAt > STALE_AFTER_MS) {
        this.show("stale", "stale: no update for a while");
      }
    }, 5000);
  }

  connect() {
    this.show("connecting", "connecting…");
    const source = new EventSource(this.url);
    this.source = source;
    source.addEventListener("open", () => this.show("live", "live"));
    source.addEventListener("status", (event) => this.deliver(/** @type {MessageEvent} */ (event)));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error instead of a stream): try again ourselves.
        this.show("down", "disconnected, retrying…");
        source.close();
        setTimeout(() => this.connect(), RETRY_AFTER_CLOSE_MS);
      } else {
        this.show("reconnecting", "reconnecting…");
      }
    });
  }

  /** @param {MessageEvent} event */
  deliver(event) {
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch {
      this.show("stale", "unreadable update");
      return;
    }
    this.lastEventAt = Date.now();
    this.show("live", "live");
    if (this.updated) setRelativeTime(this.updated, Date.now() / 1000);
    for (const fn of this.subscribers) {
      try {
        fn(payload);
      } catch (err) {
        console.error("a panel failed to render the live update", err);
      }
    }
  }

  /**
   * @param {string} state  live | connecting | reconnecting | stale | down
   * @param {string} text
   */
  show(state, text) {
    if (this.indicator.dataset.state === state && this.indicator.textContent === text) return;
    this.indicator.dataset.state = state;
    this.indicator.textContent = text;
  }
}
