// Shared helpers: API calls with the CSRF token, messages, and small DOM utilities.

export class ApiError extends Error {
  constructor(status, code, detail, body) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.body = body;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

export function loginUrl() {
  return "/login?next=" + encodeURIComponent(location.pathname + location.search);
}

/** Call the JSON API; throws ApiError with the server's `detail` sentence. */
export async function api(path, { method = "GET", json, body, signal } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrfToken();
  if (json !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: json !== undefined ? JSON.stringify(json) : body,
      credentials: "same-origin",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "FindMe could not be reached. Check your connection and try again.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = (data && data.detail) || `Something went wrong (error ${response.status}). Try again.`;
    throw new ApiError(response.status, (data && data.error) || "error", detail, data);
  }
  return data;
}

/** Send the person to sign in when their session ended; true if it did. */
export function handleSignedOut(error) {
  if (error instanceof ApiError && error.status === 401 && error.code === "not_signed_in") {
    location.href = loginUrl();
    return true;
  }
  return false;
}

let toastTimer = 0;

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = message;
  box.className = "toast" + (kind === "error" ? " error" : "");
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, kind === "error" ? 6000 : 3500);
}

export function showError(form, message) {
  const box = form.querySelector("[data-error]");
  if (!box) {
    toast(message, "error");
    return;
  }
  box.textContent = message;
  box.hidden = !message;
  if (message) box.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

/**
 * Handle a form's submission in the page. The server renders such a form's submit buttons
 * disabled, so that a tap before this script ran cannot send the form natively, as a GET
 * with every field (a password among them) in the address; they are enabled here, once the
 * handler is in place.
 */
export function onSubmit(form, handler) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    handler();
  });
  for (const button of form.querySelectorAll("[type=submit]")) button.disabled = false;
}

/** Disable a button while `work` runs, with a spinner and a label. */
export async function busy(button, label, work) {
  const original = button.innerHTML;
  button.disabled = true;
  button.innerHTML = "";
  const spin = document.createElement("span");
  spin.className = "spinner";
  spin.setAttribute("aria-hidden", "true");
  button.append(spin, document.createTextNode(" " + label));
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.innerHTML = original;
  }
}

/** Only same-site relative paths are followed after signing in. */
export function safeNext(raw, fallback = "/") {
  if (!raw || !raw.startsWith("/") || raw.startsWith("//") || raw.includes("\\")) return fallback;
  if (/[\u0000-\u001f\u007f]/.test(raw)) return fallback;
  return raw;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function plural(count, one, many = one + "s") {
  return `${count} ${count === 1 ? one : many}`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GB`;
}
