/**
 * Rolling in-browser history of node metrics (the last hour), fed by the live stream.
 */

const WINDOW_S = 3600;

export class MetricHistory {
  constructor(windowS = WINDOW_S) {
    this.windowS = windowS;
    /** @type {Map<string, {t: number, v: number|null}[]>} key "node/metric" */
    this.series = new Map();
    /** @type {Map<string, number>} node -> checked_at of the last sample taken */
    this.lastChecked = new Map();
  }

  /**
   * Record one status of one node once (the stream repeats a status until the next probe).
   * @param {string} node
   * @param {number} checkedAt  the probe's Unix time
   * @param {Record<string, number|null>} metrics  null: no value (node down, metric missing)
   * @returns {boolean}  whether it was new
   */
  record(node, checkedAt, metrics) {
    if (this.lastChecked.get(node) === checkedAt) return false;
    this.lastChecked.set(node, checkedAt);
    for (const [metric, v] of Object.entries(metrics)) {
      const key = `${node}/${metric}`;
      const samples = this.series.get(key) ?? [];
      samples.push({ t: checkedAt, v });
      const oldest = checkedAt - this.windowS;
      let drop = 0;
      while (drop < samples.length && samples[drop].t < oldest) drop += 1;
      if (drop) samples.splice(0, drop);
      this.series.set(key, samples);
    }
    return true;
  }

  /**
   * @param {string} node
   * @param {string} metric
   * @returns {{t: number, v: number|null}[]}  oldest first
   */
  get(node, metric) {
    return this.series.get(`${node}/${metric}`) ?? [];
  }
}
