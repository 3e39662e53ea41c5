// Withdrawal history: the ListWithdrawals filter built from the form, page by page; search;
// and a form to create one.
"use strict";

(() => {
  const { call, el, stateLabel, when, showError } = Portal;
  let tokens = [""];  // page tokens of the pages seen: tokens[i] starts page i
  let page = 0;
  let filter = "";

  const quote = (text) => JSON.stringify(text);

  function localToUtc(value) {
    if (!value) return "";
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function buildFilter(form) {
    const terms = [];
    const get = (name) => form.elements[name].value.trim();
    if (get("state")) terms.push(`state = ${get("state")}`);
    const from = localToUtc(get("from"));
    const to = localToUtc(get("to"));
    if (from) terms.push(`create_time >= ${quote(from)}`);
    if (to) terms.push(`create_time < ${quote(to)}`);
    if (get("token")) terms.push(`token = ${quote(get("token").toUpperCase())}`);
    if (get("min")) terms.push(`amount >= ${quote(get("min"))}`);
    if (get("max")) terms.push(`amount <= ${quote(get("max"))}`);
    if (get("recipient")) terms.push(`recipient_address = ${quote(get("recipient"))}`);
    if (get("userRef")) terms.push(`user_ref = ${quote(get("userRef"))}`);
    return terms.join(" AND ");
  }

  function row(w) {
    const id = w.name.split("/")[1];
    return el("tr", {},
      el("td", {}, el("a", { href: `/portal/withdrawal?name=${encodeURIComponent(w.name)}`, class: "mono" }, id)),
      el("td", {}, stateLabel(w.state)),
      el("td", { class: "num" }, w.amount),
      el("td", {}, w.token),
      el("td", { class: "mono" }, w.recipientAddress),
      el("td", {}, w.userRef || ""),
      el("td", {}, w.clientReference || ""),
      el("td", {}, when(w.createTime)));
  }

  async function load() {
    const form = document.getElementById("filters");
    const params = new URLSearchParams({ pageSize: form.elements.pageSize.value });
    if (filter) params.set("filter", filter);
    if (tokens[page]) params.set("pageToken", tokens[page]);
    showError("error", null);
    const status = document.getElementById("status");
    status.textContent = "Loading…";
    try {
      const data = await call("partner", "GET", `/v1/withdrawals?${params}`);
      const body = document.querySelector("#results tbody");
      body.replaceChildren(...(data.withdrawals || []).map(row));
      tokens[page + 1] = data.nextPageToken || "";
      document.getElementById("next").disabled = !data.nextPageToken;
      document.getElementById("first").disabled = page === 0;
      const count = (data.withdrawals || []).length;
      status.textContent = count
        ? `Page ${page + 1}: ${count} withdrawal${count === 1 ? "" : "s"}${filter ? " matching the filters" : ""}.`
        : `No withdrawals${filter ? " match the filters" : " yet"}.`;
    } catch (err) {
      status.textContent = "";
      showError("error", err);
    }
  }

  function restart() {
    tokens = [""];
    page = 0;
    return load();
  }

  document.addEventListener("DOMContentLoaded", async () => {
    if (!(await Portal.loadSession("partner"))) return;
    const form = document.getElementById("filters");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      filter = buildFilter(form);
      restart();
    });
    form.addEventListener("reset", () => {
      setTimeout(() => { filter = ""; restart(); }, 0);
    });
    document.getElementById("next").addEventListener("click", () => { page += 1; load(); });
    document.getElementById("first").addEventListener("click", () => restart());
    document.getElementById("search").addEventListener("submit", (event) => {
      event.preventDefault();
      const q = document.getElementById("q").value.trim();
      if (!q) { filter = buildFilter(form); restart(); return; }
      if (/^(withdrawals\/)?[0-9a-z]{26}$/.test(q)) {
        const name = q.startsWith("withdrawals/") ? q : `withdrawals/${q}`;
        window.location.assign(`/portal/withdrawal?name=${encodeURIComponent(name)}`);
        return;
      }
      filter = /^0x[0-9a-fA-F]{40}$/.test(q)
        ? `recipient_address = ${quote(q.toLowerCase())}`
        : `client_reference = ${quote(q)}`;
      restart();
    });
    document.getElementById("create").addEventListener("submit", async (event) => {
      event.preventDefault();
      const create = event.target;
      showError("create-error", null);
      const withdrawal = {};
      for (const name of ["recipientAddress", "amount", "token", "clientReference", "userRef"]) {
        const value = create.elements[name].value.trim();
        if (value) withdrawal[name] = value;
      }
      const button = create.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const made = await call("partner", "POST", "/v1/withdrawals", {
          json: withdrawal, headers: { "Idempotency-Key": Portal.newKey() },
        });
        window.location.assign(`/portal/withdrawal?name=${encodeURIComponent(made.name)}`);
      } catch (err) {
        showError("create-error", err);
      } finally {
        button.disabled = false;
      }
    });
    load();
    Portal.ready();
  });
})();
