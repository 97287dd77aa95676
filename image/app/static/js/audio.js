/**
 * The Audio panel: upload a recording to the app's own OpenAI transcription handler (multipart,
 * at the dashboard's same-origin twin of POST /v1/audio/transcriptions, which needs no API key
 * when PROXY_API_KEYS is set), with an upload progress bar, and show the transcript, as speaker
 * turns (colored label, times) when speakers were asked for.
 *
 * XMLHttpRequest rather than api()/fetch: only it reports upload progress. Its errors become the
 * same ApiError with the app's readable message (a 503 names the service to start).
 */

import { ApiError, errorMessage, parseJson, readableError } from "./api.js";
import { el, showMessage, slot } from "./dom.js";
import { formatDuration } from "./format.js";

/** @param {HTMLElement} panel  the <section> with data-transcribe-url */
export function initAudioPanel(panel) {
  const form = /** @type {HTMLFormElement} */ (slot(panel, "form"));
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector('button[type="submit"]'));
  const bar = /** @type {HTMLProgressElement} */ (slot(panel, "upload-bar"));
  const status = slot(panel, "upload-status");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(form);
    const file = /** @type {File} */ (fields.get("file"));
    const diarize = Boolean(fields.get("diarize"));
    const body = new FormData();
    body.append("file", file, file.name);
    body.append("model", "whisper-1");
    body.append("response_format", diarize ? "diarized_json" : "verbose_json");
    const speakers = String(fields.get("num_speakers") ?? "").trim();
    if (diarize && speakers) body.append("num_speakers", speakers);

    submit.disabled = true;
    panel.setAttribute("aria-busy", "true");
    showMessage(slot(panel, "error"), null);
    slot(panel, "result").hidden = true;
    slot(panel, "upload").hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${file.name}…`;
    try {
      const result = await upload(/** @type {string} */ (panel.dataset.transcribeUrl), body, (sent, total) => {
        bar.value = total ? (sent / total) * 100 : 0;
        status.textContent = `Uploading ${file.name}: ${Math.round(bar.value)} %`;
      }, () => {
        bar.removeAttribute("value"); // indeterminate while the services work
        status.textContent = diarize ? "Uploaded; transcribing and telling the speakers apart…" : "Uploaded; transcribing…";
      });
      render(panel, result, file.name);
      slot(panel, "upload").hidden = true;
    } catch (err) {
      slot(panel, "upload").hidden = true;
      const hint = err instanceof ApiError && err.status === 503 ? " Start one in the Services panel." : "";
      showMessage(slot(panel, "error"), `Transcription failed: ${readableError(err)}${hint}`);
    } finally {
      submit.disabled = false;
      panel.removeAttribute("aria-busy");
    }
  });
}

/**
 * POST a multipart body, reporting upload progress; resolves with the JSON answer.
 * @param {string} url
 * @param {FormData} body
 * @param {(sent: number, total: number) => void} onProgress
 * @param {() => void} onUploaded
 * @returns {Promise<any>}
 */
function upload(url, body, onProgress, onUploaded) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0));
    xhr.upload.addEventListener("load", onUploaded);
    xhr.addEventListener("error", () => reject(new ApiError(
      "Cannot reach spark-control: the app is not answering (network error).", 0)));
    xhr.addEventListener("load", () => {
      const data = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300 && data) {
        resolve(data);
        return;
      }
      reject(new ApiError(errorMessage(data, xhr), xhr.status, data?.error?.code ?? null));
    });
    xhr.send(body);
  });
}

/**
 * @param {HTMLElement} panel
 * @param {{text: string, duration?: number, segments?: {speaker?: string, start: number, end: number, text: string}[]}} result
 * @param {string} name
 */
function render(panel, result, name) {
  const segments = result.segments ?? [];
  const speakers = [...new Set(segments.map((s) => s.speaker).filter(Boolean))];
  const turns = segments.length ? segments : [{ start: 0, end: result.duration ?? 0, text: result.text }];
  slot(panel, "turns").replaceChildren(...turns.map((s) => {
    const index = s.speaker ? speakers.indexOf(s.speaker) : -1;
    return el("li", { class: "turn", attrs: { "data-speaker": s.speaker ?? "" } }, [
      el("span", { class: `speaker speaker-${index >= 0 ? index % 6 : "none"}`, text: s.speaker ?? "–",
        attrs: { title: s.speaker ? `Speaker ${s.speaker}` : "no speaker" } }),
      el("span", { class: "turn-time mono small", text: `${clock(s.start)}–${clock(s.end)}` }),
      el("span", { class: "turn-text", text: s.text }),
    ]);
  }));
  const who = speakers.length ? ` · ${speakers.length} speaker${speakers.length > 1 ? "s" : ""}` : "";
  slot(panel, "summary").textContent =
    `${name} · ${formatDuration(result.duration ?? null)}${who} · ${turns.length} turn${turns.length === 1 ? "" : "s"}`;
  slot(panel, "result").hidden = false;
}

/**
 * @param {number} seconds
 * @returns {string}  e.g. "1:05.3"
 */
function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = seconds - m * 60;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}
