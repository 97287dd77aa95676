/**
 * The Nodes panel: a card per node, first from GET /api/status, then live from the stream,
 * with a rolling history of GPU and memory numbers drawn as sparklines.
 */

import { api, readableError } from "./api.js";
import { showMessage, slot } from "./dom.js";
import { MetricHistory } from "./history.js";
import { NodeCard, chartedMetrics } from "./node-card.js";

/**
 * @param {HTMLElement} panel  the <section> with data-status-url
 * @param {import("./stream.js").StatusStream} stream
 */
export function initNodesPanel(panel, stream) {
  const cardsRoot = slot(panel, "cards");
  const errorNode = slot(panel, "error");
  const loading = slot(panel, "loading");
  const history = new MetricHistory();
  /** @type {Map<string, NodeCard>} */
  const cards = new Map();
  let gotStream = false;

  /**
   * @param {any[]} nodes
   * @param {any|null} connectivity  the connectivity summary, when the update carries one
   */
  function render(nodes, connectivity) {
    loading.hidden = true;
    const seen = new Set();
    nodes.forEach((node, index) => {
      seen.add(node.name);
      let card = cards.get(node.name);
      if (!card) {
        card = new NodeCard(node.name);
        cards.set(node.name, card);
      }
      if (cardsRoot.children[index] !== card.element) {
        cardsRoot.insertBefore(card.element, cardsRoot.children[index] ?? null); // the API's node order
      }
      card.update(node, connectivity?.nodes?.[node.name] ?? null);
      history.record(node.name, node.checked_at, chartedMetrics(node));
      card.updateCharts(history);
    });
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.element.remove();
        cards.delete(name);
      }
    }
  }

  stream.subscribe((payload) => {
    gotStream = true;
    showMessage(errorNode, null);
    // Right after the app starts, the first event may come before any probe finished.
    if (payload.nodes?.length) render(payload.nodes, payload.connectivity);
  });

  api(panel.dataset.statusUrl)
    .then((data) => {
      if (!gotStream) render(data.nodes, null);
    })
    .catch((err) => {
      loading.hidden = true;
      if (!gotStream) showMessage(errorNode, `Could not load node status: ${readableError(err)}`);
    });
}
