/**
 * The one way the dashboard talks to the app: `api(path, options)` (JSON), and `apiStream()`
 * for a body read as it arrives.
 *
 * Every failure becomes an `ApiError` whose `message` is safe to show a user: the app's own
 * error body `{"error": {"message": ...}}`, FastAPI's `{"detail": ...}`, a non-JSON body (a
 * proxy's HTML page) or no answer at all. Never a stack trace.
 */

/** An API call that failed; `message` is readable, `status` is the HTTP status (0: no answer). */
export class ApiError extends Error {
  /**
   * @param {string} message
   * @param {number} status
   * @param {string|null} code  the app's error code, e.g. "node_unreachable"
   */
  constructor(message, status, code = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/**
 * Fetch `path` (same origin) and return its JSON body.
 * @param {string} path  e.g. "/api/status"
 * @param {{method?: string, body?: unknown, signal?: AbortSignal}} [options]
 * @returns {Promise<any>}
 * @throws {ApiError}
 */
export async function api(path, { method = "GET", body, signal } = {}) {
  /** @type {RequestInit} */
  const init = { method, signal, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError("Cannot reach spark-control: the app is not answering (network error).", 0);
  }
  const text = await response.text();
  const data = parseJson(text);
  if (response.ok) {
    if (data === null && text) throw new ApiError(`${method} ${path}: the answer was not JSON.`, response.status);
    return data;
  }
  throw new ApiError(errorMessage(data, response), response.status, data?.error?.code ?? null);
}

/**
 * GET `path` and return the Response for its body to be read as a stream (logs that follow).
 * Failures become an `ApiError` exactly as in `api()`; aborting via `signal` throws AbortError.
 * @param {string} path
 * @param {{signal?: AbortSignal}} [options]
 * @returns {Promise<Response>}  ok, with a readable `body`
 * @throws {ApiError}
 */
export async function apiStream(path, { signal } = {}) {
  let response;
  try {
    response = await fetch(path, { signal, headers: { Accept: "text/plain, application/json" } });
  } catch (err) {
    if (err instanceof DOMException && err.name === "AbortError") throw err;
    throw new ApiError("Cannot reach spark-control: the app is not answering (network error).", 0);
  }
  if (response.ok) return response;
  const data = parseJson(await response.text());
  throw new ApiError(errorMessage(data, response), response.status, data?.error?.code ?? null);
}

/**
 * @param {string} text
 * @returns {any}  the parsed body, or null when empty or not JSON
 */
export function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null; // an HTML error page from a proxy, say: fall through to the status line
  }
}

/**
 * The readable message in an error body, whatever its shape (also for XMLHttpRequest answers).
 * @param {any} data  the parsed body, or null
 * @param {{status: number, statusText: string}} response
 * @returns {string}
 */
export function errorMessage(data, response) {
  const message = data?.error?.message;
  if (typeof message === "string" && message) return message;
  const detail = data?.detail;
  if (typeof detail === "string" && detail) return `${detail} (HTTP ${response.status})`;
  if (Array.isArray(detail)) return detail.map((d) => d?.msg ?? String(d)).join("; ");
  const statusText = response.statusText ? ` ${response.statusText}` : "";
  return `The app answered HTTP ${response.status}${statusText}.`;
}

/**
 * The message to show for anything thrown, ApiError or not.
 * @param {unknown} err
 * @returns {string}
 */
export function readableError(err) {
  if (err instanceof ApiError) return err.message;
  return "Unexpected error in the dashboard: " + (err instanceof Error ? err.message : String(err));
}
