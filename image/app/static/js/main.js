/**
 * The dashboard's entry point: one live status stream, one init function per panel.
 * A new panel is a new module with an `initXPanel(section, stream)` and one line here.
 */

import { initAudioPanel } from "./audio.js";
import { initConnectivityPanel } from "./connectivity.js";
import { initDiskPanel } from "./disk.js";
import { initDownloadsPanel } from "./downloads.js";
import { initHealthPanel } from "./health.js";
import { startRelativeClock } from "./format.js";
import { initModelsPanel } from "./models.js";
import { initNodesPanel } from "./nodes.js";
import { initRedactionPanel } from "./redaction.js";
import { initServicesPanel } from "./services.js";
import { StatusStream } from "./stream.js";

function main() {
  const indicator = /** @type {HTMLElement} */ (document.getElementById("live"));
  const stream = new StatusStream(indicator.dataset.streamUrl, indicator, document.getElementById("updated"));
  initNodesPanel(/** @type {HTMLElement} */ (document.getElementById("nodes")), stream);
  initModelsPanel(/** @type {HTMLElement} */ (document.getElementById("models")));
  initConnectivityPanel(/** @type {HTMLElement} */ (document.getElementById("connectivity")), stream);
  initServicesPanel(/** @type {HTMLElement} */ (document.getElementById("services")), stream);
  initHealthPanel(/** @type {HTMLElement} */ (document.getElementById("health")));
  initDownloadsPanel(/** @type {HTMLElement} */ (document.getElementById("downloads")), stream);
  initDiskPanel(/** @type {HTMLElement} */ (document.getElementById("disk")));
  initRedactionPanel(/** @type {HTMLElement} */ (document.getElementById("redaction")));
  initAudioPanel(/** @type {HTMLElement} */ (document.getElementById("audio")));
  startRelativeClock();
  stream.start();
}

main();
