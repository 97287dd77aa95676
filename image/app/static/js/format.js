/**
 * Numbers and times as people read them. Every function accepts null (shown as a dash).
 */

const DASH = "–";
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/**
 * @param {number|null|undefined} bytes
 * @returns {string}  e.g. "8.6 GiB"
 */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return DASH;
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 || value >= 100 ? 0 : 1)} ${UNITS[unit]}`;
}

/**
 * @param {number|null|undefined} ratio  0..1
 * @param {number} [digits]
 * @returns {string}  e.g. "99.5 %"
 */
export function formatPercent(ratio, digits = 1) {
  if (ratio === null || ratio === undefined) return DASH;
  return `${(ratio * 100).toFixed(digits)} %`;
}

/**
 * @param {number|null|undefined} value
 * @param {string} unit
 * @param {number} [digits]
 * @returns {string}  e.g. "42 W"
 */
export function formatNumber(value, unit, digits = 0) {
  if (value === null || value === undefined) return DASH;
  return `${value.toFixed(digits)} ${unit}`;
}

/**
 * @param {number|null|undefined} seconds
 * @returns {string}  e.g. "3 d 4 h", "12 min", "40 s"
 */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  const s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min`;
  return `${s} s`;
}

/**
 * @param {number|null|undefined} ts  Unix seconds
 * @param {number} [now]  Unix seconds
 * @returns {string}  e.g. "5 min ago"
 */
export function formatRelative(ts, now = Date.now() / 1000) {
  if (ts === null || ts === undefined) return DASH;
  const delta = now - ts;
  if (delta < 2) return "just now";
  return `${formatDuration(delta)} ago`;
}

/**
 * @param {number|null|undefined} ts  Unix seconds
 * @returns {string}  local time, e.g. "14:03:27" (with the date when not today)
 */
export function formatClock(ts) {
  if (ts === null || ts === undefined) return DASH;
  const date = new Date(ts * 1000);
  const time = date.toLocaleTimeString([], { hour12: false });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString()} ${time}`;
}

/**
 * Keep every `<time data-relative>` element's text current ("5 s ago"); call once.
 * @param {ParentNode} root
 */
export function startRelativeClock(root = document) {
  const tick = () => {
    const now = Date.now() / 1000;
    for (const node of root.querySelectorAll("time[data-relative]")) {
      const ts = Number(/** @type {HTMLElement} */ (node).dataset.relative);
      if (ts) node.textContent = formatRelative(ts, now);
    }
  };
  tick();
  setInterval(tick, 1000);
}

/**
 * Point a `<time>` element at a Unix timestamp (kept current by startRelativeClock).
 * @param {HTMLElement} node
 * @param {number|null|undefined} ts
 */
export function setRelativeTime(node, ts) {
  if (ts === null || ts === undefined) {
    delete node.dataset.relative;
    node.removeAttribute("datetime");
    node.textContent = DASH;
    node.title = "";
    return;
  }
  node.dataset.relative = String(ts);
  node.setAttribute("datetime", new Date(ts * 1000).toISOString());
  node.title = new Date(ts * 1000).toLocaleString();
  node.textContent = formatRelative(ts);
}
