// The pages' one way to the API: keys from the URL fragment or localStorage, JSON calls.
//
// A key arrives in the fragment (`/demo#key=...`, as `reelrank demo` prints it), which the
// browser never sends to the server; the page keeps it in localStorage under its role and
// drops it from the address bar.

const STORE = "reelrank.key.";

export function fragmentParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

/** The key for `role` ("ingest" or "admin"): from the fragment (then stored), else stored. */
export function takeKey(role) {
  const params = fragmentParams();
  const given = params.get("key");
  if (given) {
    localStorage.setItem(STORE + role, given);
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  return localStorage.getItem(STORE + role) || "";
}

export function storedKey(role) {
  return localStorage.getItem(STORE + role) || "";
}

export function saveKey(role, key) {
  if (key) localStorage.setItem(STORE + role, key);
  else localStorage.removeItem(STORE + role);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

/** A JSON call; `key` is sent as a Bearer token when given. */
export async function api(path, { key = "", method = "GET", body = undefined } = {}) {
  const headers = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.detail) || resp.statusText);
  return data;
}

/** document.createElement with attributes, properties and children in one call. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function fmt(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (typeof x !== "number") return String(x);
  if (Math.abs(x) >= 10000) return Math.round(x).toLocaleString("en");
  return x.toFixed(digits);
}

export function pct(x, digits = 1) {
  return x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + "%";
}
