/**
 * A model's dry run: GET /api/models/{name}/command?placement=... shown as the exact command per
 * node (in a <pre> with a Copy button) and the pre-flight verdict with its problems in words.
 */

import { api, readableError } from "./api.js";
import { el } from "./dom.js";

/**
 * @typedef {{check: string, node: string|null, message: string}} Problem
 * @typedef {{ok: boolean, vllm_version: string, checked: string[], problems: Problem[], warnings: Problem[]}} Verdict
 * @typedef {{node: string, role: string, container: string, command: string}} NodeCommand
 * @typedef {{commands: NodeCommand[], preflight: Verdict, endpoint: string, node_check_error?: string}} DryRun
 */

export class DryRunView {
  /** @param {HTMLElement} container  the row's `data-slot="dry-run"` element */
  constructor(container) {
    this.container = container;
    /** @type {AbortController|null} */
    this.pending = null;
  }

  get isOpen() {
    return !this.container.hidden;
  }

  /**
   * Ask for the commands and show them (a newer call replaces an unfinished one).
   * @param {string} url  the command URL with its placement
   * @param {string} model
   */
  async show(url, model) {
    this.pending?.abort();
    const pending = new AbortController();
    this.pending = pending;
    this.container.hidden = false;
    this.container.setAttribute("aria-busy", "true");
    this.container.replaceChildren(el("p", { class: "muted",
      text: `Building the command for ${model} and checking the nodes…` }));
    try {
      /** @type {DryRun} */
      const plan = await api(url, { signal: pending.signal });
      this.container.replaceChildren(...renderDryRun(plan));
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") return;
      this.container.replaceChildren(el("p", { class: "verdict", text: `Dry run refused: ${readableError(err)}`,
        attrs: { "data-kind": "refused" } }));
    } finally {
      if (this.pending === pending) {
        this.pending = null;
        this.container.removeAttribute("aria-busy");
      }
    }
  }

  hide() {
    this.pending?.abort();
    this.pending = null;
    this.container.hidden = true;
    this.container.replaceChildren();
  }
}

/**
 * @param {DryRun} plan
 * @returns {HTMLElement[]}
 */
function renderDryRun(plan) {
  const verdict = plan.preflight;
  const count = verdict.problems.length;
  const headline = verdict.ok
    ? "Pre-flight ok: the launch would be accepted."
    : `Pre-flight refused the launch (${count} problem${count === 1 ? "" : "s"}):`;
  const checked = [verdict.vllm_version && `flags of vLLM ${verdict.vllm_version}`, ...verdict.checked].filter(Boolean);
  const parts = [
    el("p", { class: "verdict", attrs: { "data-kind": verdict.ok ? "ok" : "refused" } }, [
      el("strong", { text: headline }),
      el("span", { class: "muted small", text: ` Checked: ${checked.join(", ")}.` }),
    ]),
  ];
  if (count) parts.push(problemList(verdict.problems, "problem"));
  if (verdict.warnings.length) parts.push(problemList(verdict.warnings, "warning"));
  if (plan.node_check_error) {
    parts.push(el("p", { class: "warning", text: `The nodes could not be checked: ${plan.node_check_error}` }));
  }
  parts.push(el("p", { class: "muted small",
    text: `${plan.commands.length === 1 ? "The command" : "The commands"} spark-control would run over SSH` +
      ` (the model answers at ${plan.endpoint}):` }));
  parts.push(...plan.commands.map(commandBlock));
  return parts;
}

/**
 * @param {Problem[]} items
 * @param {"problem"|"warning"} kind
 * @returns {HTMLElement}
 */
function problemList(items, kind) {
  const label = kind === "problem" ? "Problems" : "Warnings";
  return el("ul", { class: "findings", attrs: { "data-kind": kind, "aria-label": label } },
    items.map((p) => el("li", { attrs: { "data-check": p.check } }, [
      el("span", { class: "finding-check", text: p.check }),
      el("span", { text: p.message }),
    ])));
}

/**
 * One node's command: a caption, a Copy button and the command itself.
 * @param {NodeCommand} command
 * @returns {HTMLElement}
 */
function commandBlock(command) {
  const pre = el("pre", { class: "command mono", text: command.command,
    attrs: { tabindex: "0", "data-node": command.node, "aria-label": `Command for ${command.node}` } });
  const status = el("span", { class: "muted small copy-status", attrs: { role: "status" } });
  const copy = el("button", { class: "button small", text: "Copy",
    attrs: { type: "button", "aria-label": `Copy the command for ${command.node}` } });
  copy.addEventListener("click", () => copyText(command.command, pre, status));
  return el("figure", { class: "command-block" }, [
    el("figcaption", {}, [
      el("span", {}, [
        el("strong", { class: "mono", text: command.node }),
        el("span", { class: "muted", text: ` · ${command.role} · ` }),
        el("span", { class: "mono", text: command.container }),
      ]),
      status,
      copy,
    ]),
    pre,
  ]);
}

/**
 * Copy to the clipboard where the browser allows it (https or localhost); elsewhere select the
 * text so the user can press Ctrl+C.
 * @param {string} text
 * @param {HTMLElement} pre
 * @param {HTMLElement} status
 */
async function copyText(text, pre, status) {
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
      return;
    } catch {
      // Permission refused: fall back to selecting.
    }
  }
  const range = document.createRange();
  range.selectNodeContents(pre);
  const selection = window.getSelection();
  selection?.removeAllRanges();
  selection?.addRange(range);
  pre.focus();
  status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
}
