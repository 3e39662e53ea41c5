// Webhook endpoints: list, add (the signing secret is shown once), disable and enable.
"use strict";

(() => {
  const { call, el, stateLabel, when, showError } = Portal;

  function actions(endpoint) {
    const enabled = endpoint.state === "ENDPOINT_STATE_ENABLED";
    const verb = enabled ? "disable" : "enable";
    const button = el("button", {
      type: "button", class: enabled ? "danger" : "secondary", "aria-label": `${enabled ? "Disable" : "Enable"} ${endpoint.url}`,
    }, enabled ? "Disable" : "Enable");
    button.addEventListener("click", async () => {
      showError("error", null);
      try {
        await call("partner", "POST", `/v1/${endpoint.name}:${verb}`, { json: {} });
        document.getElementById("notice").textContent = `${endpoint.url} ${enabled ? "disabled" : "enabled"}.`;
        load();
      } catch (err) {
        showError("error", err);
      }
    });
    return button;
  }

  async function load() {
    try {
      const data = await call("partner", "GET", "/v1/webhookEndpoints?pageSize=100");
      const rows = (data.webhookEndpoints || []).map((e) => el("tr", {},
        el("td", { class: "mono" }, e.url),
        el("td", {}, (e.eventTypes || []).join(", ") || "every withdrawal event"),
        el("td", {}, stateLabel(e.state), e.stateReason ? ` (${e.stateReason})` : ""),
        el("td", {}, e.description || ""),
        el("td", {}, when(e.createTime)),
        el("td", {}, actions(e))));
      document.querySelector("#endpoints tbody").replaceChildren(...rows);
    } catch (err) {
      showError("error", err);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    if (!(await Portal.loadSession("partner"))) return;
    document.getElementById("create").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      showError("create-error", null);
      const endpoint = { url: form.elements.url.value.trim() };
      const events = form.elements.eventTypes.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (events.length) endpoint.eventTypes = events;
      const description = form.elements.description.value.trim();
      if (description) endpoint.description = description;
      try {
        const made = await call("partner", "POST", "/v1/webhookEndpoints", {
          json: endpoint, headers: { "Idempotency-Key": Portal.newKey() },
        });
        form.reset();
        document.getElementById("notice").textContent =
          `Endpoint added. Its signing secret, shown only now: ${made.secret}`;
        load();
      } catch (err) {
        showError("create-error", err);
      }
    });
    load();
    Portal.ready();
  });
})();
