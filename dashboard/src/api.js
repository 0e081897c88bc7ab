// The admin API as the page calls it: every call carries the admin key the
// operator signed in with; a refusal becomes an Error carrying the API's
// own message and status.

const STORE = "edgegate.adminKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function savedKey() {
  return sessionStorage.getItem(STORE);
}

export function saveKey(key) {
  sessionStorage.setItem(STORE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(STORE);
}

/** GET `path` (with `params`) from the admin API as JSON. */
export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, value);
  }
  const url = query.size ? `${path}?${query}` : path;
  const response = await fetch(url, {
    headers: { authorization: `Bearer ${savedKey() ?? ""}`, accept: "application/json" },
    cache: "no-store",
  });
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // An answer that is not JSON: the status says enough.
  }
  if (!response.ok) {
    const message = body?.error?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return body;
}
