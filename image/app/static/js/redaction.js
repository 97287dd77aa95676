/**
 * The Redaction playground: what the redaction gateway would send a model (POST /api/redact),
 * with the placeholders highlighted and the count of distinct values per entity type, and the
 * way back (POST /api/unredact) on an answer the user may edit as a model would. Both through
 * their dashboard twins (/api/dashboard/...): same handlers, no API key, same origin only.
 */

import { api, readableError } from "./api.js";
import { el, showMessage, slot } from "./dom.js";

// The detector's entity types (docs/REDACTION_GATEWAY.md, app/redaction/detect.py).
const ENTITIES = ["PERSON", "EMAIL", "PHONE", "ADDRESS", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS",
  "MAC_ADDRESS", "DATE_OF_BIRTH", "URL_CREDENTIALS", "SECRET"];
// A placeholder as the gateway issues it: [PERSON_1], [CREDIT_CARD_2].
const PLACEHOLDER = /\[([A-Z][A-Z_]*?)_(\d+)\]/g;

/** @param {HTMLElement} panel  the <section> with data-redact-url and data-unredact-url */
export function initRedactionPanel(panel) {
  const form = /** @type {HTMLFormElement} */ (slot(panel, "form"));
  const redactButton = /** @type {HTMLButtonElement} */ (form.querySelector('button[type="submit"]'));
  const restoreButton = /** @type {HTMLButtonElement} */ (slot(panel, "restore"));
  const answer = /** @type {HTMLTextAreaElement} */ (slot(panel, "answer"));
  let conversation = "";

  slot(panel, "entities").replaceChildren(...ENTITIES.map((name) => el("label", { class: "check small" }, [
    el("input", { attrs: { type: "checkbox", name: "entity", value: name } }),
    el("span", { class: "mono", text: name }),
  ])));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    /** @type {Record<string, unknown>} */
    const body = { text: String(fields.get("text") ?? "") };
    const entities = fields.getAll("entity").map(String);
    if (entities.length) body.entities = entities;
    const id = String(fields.get("conversation_id") ?? "").trim();
    if (id) body.conversation_id = id;
    redactButton.disabled = true;
    showMessage(slot(panel, "error"), null);
    try {
      const result = await api(/** @type {string} */ (panel.dataset.redactUrl), { method: "POST", body });
      conversation = result.conversation_id;
      slot(panel, "conversation").textContent = conversation;
      slot(panel, "redacted").replaceChildren(...highlighted(result.text));
      const counts = Object.entries(/** @type {Record<string, number>} */ (result.entities ?? {}));
      slot(panel, "counts").replaceChildren(...(counts.length
        ? counts.map(([name, count]) => el("li", { class: "tag entity-count", text: `${name} × ${count}`,
          attrs: { "data-entity": name } }))
        : [el("li", { class: "muted small", text: "Nothing personal found: the text goes out as it is." })]));
      answer.value = result.text;
      slot(panel, "restored-block").hidden = true;
      showMessage(slot(panel, "restore-error"), null);
      slot(panel, "redacted-block").hidden = false;
    } catch (err) {
      showMessage(slot(panel, "error"), `Could not redact: ${readableError(err)}`);
    } finally {
      redactButton.disabled = false;
    }
  });

  restoreButton.addEventListener("click", async () => {
    restoreButton.disabled = true;
    showMessage(slot(panel, "restore-error"), null);
    try {
      const result = await api(/** @type {string} */ (panel.dataset.unredactUrl), { method: "POST",
        body: { text: answer.value, conversation_id: conversation } });
      slot(panel, "restored").textContent = result.text;
      slot(panel, "restored-block").hidden = false;
    } catch (err) {
      showMessage(slot(panel, "restore-error"), `Could not restore: ${readableError(err)}`);
    } finally {
      restoreButton.disabled = false;
    }
  });
}

/**
 * The redacted text as text nodes with each placeholder in a <mark>.
 * @param {string} text
 * @returns {Node[]}
 */
function highlighted(text) {
  /** @type {Node[]} */
  const parts = [];
  let at = 0;
  for (const match of text.matchAll(PLACEHOLDER)) {
    const start = match.index ?? 0;
    if (start > at) parts.push(document.createTextNode(text.slice(at, start)));
    parts.push(el("mark", { class: "placeholder", text: match[0], attrs: { "data-entity": match[1] } }));
    at = start + match[0].length;
  }
  if (at < text.length) parts.push(document.createTextNode(text.slice(at)));
  return parts;
}
