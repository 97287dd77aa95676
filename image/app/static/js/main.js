/**
 * The dashboard's entry point: one live status stream, one init function per panel.
 * A new panel is a new module with an `initXPanel(section, stream)` and one line here.
 */

import { initConnectivityPanel } from "./connectivity.js";
import { startRelativeClock } from "./format.js";
import { initModelsPanel } from "./models.js";
import { initNodesPanel } from "./nodes.js";
import { StatusStream } from "./stream.js";

function main() {
  const indicator = /** @type {HTMLElement} */ (document.getElementById("live"));
  const stream = new StatusStream(indicator.dataset.streamUrl, indicator, document.getElementById("updated"));
  initNodesPanel(/** @type {HTMLElement} */ (document.getElementById("nodes")), stream);
  initModelsPanel(/** @type {HTMLElement} */ (document.getElementById("models")));
  initConnectivityPanel(/** @type {HTMLElement} */ (document.getElementById("connectivity")), stream);
  startRelativeClock();
  stream.start();
}

main();
