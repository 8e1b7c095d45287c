// The public REST API with the signed-in key. Errors are ApiError carrying the server's problem+json.

const KEY = "agentplane.console.key";
let onUnauthorized = () => {};

export const auth = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
  onUnauthorized(fn) { onUnauthorized = fn; },
};

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status; // 0: the server could not be reached
    this.problem = problem || {};
  }
}

export function apiUrl(path, query) {
  const url = new URL(`/api/v1${path}`, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${auth.key || ""}`, ...extra };
}

export async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { title: response.statusText, detail: `HTTP ${response.status}` };
  }
}

export async function api(path, { method = "GET", query, body, signal } = {}) {
  const headers = authHeaders({ Accept: "application/json" });
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method, headers, signal, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new ApiError(0, { title: "Server unreachable", detail: "the server could not be reached" });
  }
  if (response.status === 204) return null;
  if (!response.ok) {
    const error = new ApiError(response.status, await problemOf(response));
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  return response.json();
}

// Every page of a cursor-paginated list up to `max` items (for small lists such as a task's candidates).
export async function firstItems(path, query, max = 500) {
  const page = await api(path, { query: { ...query, limit: Math.min(max, 500) } });
  return page.items;
}
