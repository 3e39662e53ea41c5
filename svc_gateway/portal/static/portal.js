// Shared by every portal page: the session (and its CSRF token, kept in memory only), JSON
// calls to the portal API with the API's error details, and small DOM helpers.
"use strict";

// No form of the portal is ever submitted by the browser itself (which would put its fields,
// a key among them, in a URL): each page's script sends it. Registered before anything else.
document.addEventListener("submit", (event) => event.preventDefault(), true);

const Portal = (() => {
  let session = null;

  function apiBase(kind) {
    return kind === "operator" ? "/portal/admin/api" : "/portal/api";
  }

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || `Request failed (HTTP ${status}).`);
      this.status = status;
      this.error = err;
      this.violations = [];
      this.reason = "";
      for (const detail of err.details || []) {
        if (detail.fieldViolations) this.violations.push(...detail.fieldViolations);
        if (detail.reason) this.reason = detail.reason;
      }
    }
  }

  async function call(kind, method, path, options = {}) {
    const headers = { Accept: options.accept || "application/json" };
    if (session && method !== "GET") headers["X-CSRF-Token"] = session.csrfToken;
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    Object.assign(headers, options.headers || {});
    const response = await fetch(apiBase(kind) + path, {
      method, headers, body, credentials: "same-origin", cache: "no-store",
    });
    if (options.raw && response.ok) return response;
    const text = await response.text();
    let data = {};
    try { data = text ? JSON.parse(text) : {}; } catch (_) { data = {}; }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  async function loadSession(kind, { redirect = true } = {}) {
    try {
      session = await call(kind, "GET", "/session");
    } catch (err) {
      session = null;
      if (redirect && err.status === 401) {
        window.location.assign(kind === "operator" ? "/portal/admin/" : "/portal/");
        return null;
      }
      if (err.status !== 401) throw err;
      return null;
    }
    const who = document.getElementById("who");
    if (who) who.textContent = kind === "operator"
      ? `Operator ${session.operator} (${session.roles.join(", ") || "no role"})`
      : `Partner ${session.partner}`;
    const out = document.getElementById("sign-out");
    if (out) {
      out.hidden = false;
      out.addEventListener("click", () => signOut(kind));
    }
    return session;
  }

  async function signIn(kind, secret) {
    const field = kind === "operator" ? "credential" : "apiKey";
    session = await call(kind, "POST", "/session", { json: { [field]: secret } });
    return session;
  }

  async function signOut(kind) {
    try { await call(kind, "DELETE", "/session"); } catch (_) { /* ended already */ }
    session = null;
    window.location.assign(kind === "operator" ? "/portal/admin/" : "/portal/");
  }

  function showError(target, err) {
    const box = typeof target === "string" ? document.getElementById(target) : target;
    box.replaceChildren();
    if (!err) return;
    const head = document.createElement("p");
    head.textContent = err.message || String(err);
    box.append(head);
    if (err.reason) {
      const reason = document.createElement("p");
      reason.textContent = `Reason: ${err.reason}`;
      box.append(reason);
    }
    if (err.violations && err.violations.length) {
      const list = document.createElement("ul");
      for (const v of err.violations) {
        const item = document.createElement("li");
        item.textContent = `${v.field}: ${v.description}`;
        list.append(item);
      }
      box.append(list);
    }
    box.focus();
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const TERMINAL = new Set(["STATE_COMPLETED", "STATE_REJECTED", "STATE_CANCELLED", "STATE_FAILED"]);

  function stateLabel(state) {
    const text = (state || "").replace(/^STATE_/, "").replace(/^BATCH_STATE_/, "").replace(/^ENDPOINT_STATE_/, "");
    const cls = ["COMPLETED", "DONE", "ENABLED"].includes(text) ? "state done"
      : ["REJECTED", "CANCELLED", "FAILED", "DISABLED"].includes(text) ? "state bad" : "state";
    return el("span", { class: cls, text: text.replace(/_/g, " ") });
  }

  function when(value) {
    if (!value) return "";
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? value : date.toLocaleString();
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const current = () => session;

  // Tells that the page's script has set itself up (tests wait for it).
  function ready() {
    document.body.dataset.ready = "1";
  }

  return { session: current, ready, call, loadSession, signIn, signOut, showError, el, stateLabel, when, newKey, TERMINAL, ApiError };
})();
