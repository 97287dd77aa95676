/**
 * DOM helpers: elements from tags or <template>s, text only (never innerHTML with data).
 */

/**
 * Create an element.
 * @param {string} tag
 * @param {{class?: string, text?: string|number|null, attrs?: Record<string, string>}} [props]
 * @param {Node[]} [children]
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [name, value] of Object.entries(props.attrs ?? {})) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/**
 * A deep copy of the first element inside `<template id=...>`.
 * @param {string} id
 * @returns {HTMLElement}
 */
export function fromTemplate(id) {
  const template = /** @type {HTMLTemplateElement} */ (document.getElementById(id));
  return /** @type {HTMLElement} */ (template.content.firstElementChild.cloneNode(true));
}

/**
 * The element marked `data-slot=name` inside `root`.
 * @param {ParentNode} root
 * @param {string} name
 * @returns {HTMLElement}
 */
export function slot(root, name) {
  const found = root.querySelector(`[data-slot="${name}"]`);
  if (!found) throw new Error(`no data-slot="${name}" in the template`);
  return /** @type {HTMLElement} */ (found);
}

/**
 * Set the text of a slot; `null`/`undefined` shows a dash.
 * @param {ParentNode} root
 * @param {string} name
 * @param {string|number|null|undefined} value
 */
export function setSlot(root, name, value) {
  slot(root, name).textContent = value === null || value === undefined ? "–" : String(value);
}

/**
 * Show a message (or nothing, when `message` is empty) in an element that is hidden when empty.
 * @param {HTMLElement} node
 * @param {string|null} message
 */
export function showMessage(node, message) {
  node.textContent = message ?? "";
  node.hidden = !message;
}

/**
 * A keyboard user whose button just became disabled (an action in flight) lands on the next
 * usable button among `buttons` instead of the page body.
 * @param {boolean} hadFocus  whether focus was in the row when the action started
 * @param {Iterable<Element>} buttons  the row's buttons, in order
 */
export function keepFocus(hadFocus, buttons) {
  const active = document.activeElement;
  const lost = !active || active === document.body || (active instanceof HTMLButtonElement && active.disabled);
  if (!hadFocus || !lost) return;
  /** @type {HTMLButtonElement[]} */ ([...buttons]).find((b) => !b.disabled)?.focus();
}
