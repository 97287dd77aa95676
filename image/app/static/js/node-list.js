/**
 * The configured node names, as the live status stream lists them, for panels that offer a node
 * choice (services, downloads). Panels get the list again only when it changes.
 */

/**
 * Call `fn(names)` with the node names now known and whenever they change.
 * @param {import("./stream.js").StatusStream} stream
 * @param {(names: string[]) => void} fn
 */
export function onNodeNames(stream, fn) {
  let key = "";
  stream.subscribe((payload) => {
    const names = (payload.nodes ?? []).map((/** @type {{name: string}} */ n) => n.name);
    const next = names.join("\n");
    if (!names.length || next === key) return;
    key = next;
    fn(names);
  });
}

/**
 * Fill a <select> with node names, keeping the user's choice when it is still offered.
 * @param {HTMLSelectElement} select
 * @param {string[]} names
 * @param {{value: string, label: string}|null} [first]  an extra first option, e.g. "first node"
 * @param {string} [preferred]  chosen when the user has not picked anything yet
 */
export function fillNodeSelect(select, names, first = null, preferred = "") {
  const previous = select.dataset.picked === "true" ? select.value : preferred || select.value;
  const options = first ? [[first.value, first.label], ...names.map((n) => [n, n])] : names.map((n) => [n, n]);
  select.replaceChildren(...options.map(([value, label]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    return option;
  }));
  if (options.some(([value]) => value === previous)) select.value = previous;
  if (!select.dataset.watched) {
    select.dataset.watched = "true";
    select.addEventListener("change", () => { select.dataset.picked = "true"; });
  }
}
