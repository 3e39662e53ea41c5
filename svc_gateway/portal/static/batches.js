// CSV batches: upload with progress (XMLHttpRequest), the batch's progress until it is done,
// and its report downloaded as CSV.
"use strict";

(() => {
  const { call, el, stateLabel, when, showError } = Portal;
  let current = "";
  let timer = null;

  function upload(form) {
    const file = form.elements.file.files[0];
    const params = new URLSearchParams({ policy: form.elements.policy.value });
    if (form.elements.allowDuplicateContent.checked) params.set("allowDuplicateContent", "true");
    const data = new FormData();
    data.append("file", file, file.name);
    const progress = document.getElementById("progress");
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/portal/api/v1/batches?${params}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("Idempotency-Key", Portal.newKey());
      xhr.setRequestHeader("X-CSRF-Token", Portal.session().csrfToken);
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) {
          const pct = Math.round((event.loaded / event.total) * 100);
          progress.value = pct;
          progress.textContent = `${pct}%`;
        }
      });
      xhr.addEventListener("load", () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText || "{}"); } catch (_) { body = {}; }
        if (xhr.status >= 200 && xhr.status < 300) {
          progress.value = 100;
          resolve(body);
        } else {
          reject(new Portal.ApiError(xhr.status, body));
        }
      });
      xhr.addEventListener("error", () => reject(new Error("The upload failed: network error.")));
      xhr.send(data);
    });
  }

  function detail(label, value) {
    return [el("dt", {}, label), el("dd", {}, value === "" || value === undefined ? "—" : value)];
  }

  function render(batch) {
    document.getElementById("batch").hidden = false;
    const counts = (batch.stateCounts || []).map((c) => `${c.state.replace("STATE_", "")}: ${c.count}`).join(", ");
    const totals = (batch.tokenTotals || []).map((t) => `${t.amount} ${t.token}`).join(", ");
    const dl = document.getElementById("batch-details");
    dl.replaceChildren(
      ...detail("Batch", el("span", { class: "mono" }, batch.name)),
      ...detail("State", stateLabel(batch.state)),
      ...detail("Rows", String(batch.rowCount || 0)),
      ...detail("Accepted", String(batch.acceptedCount || 0)),
      ...detail("Rows with problems", String(batch.problemRowCount || 0)),
      ...detail("Withdrawals by state", counts),
      ...detail("Totals", totals),
      ...detail("Created", when(batch.createTime)));
    dl.dataset.state = batch.state;
  }

  async function follow(name) {
    clearTimeout(timer);
    current = name;
    try {
      const batch = await call("partner", "GET", `/v1/${name}`);
      render(batch);
      const open = (batch.stateCounts || []).some((c) => !Portal.TERMINAL.has(c.state));
      const status = document.getElementById("status");
      status.textContent = batch.state === "BATCH_STATE_PROCESSING" || open
        ? `${name}: processing; this page updates by itself.`
        : `${name}: ${batch.state.replace("BATCH_STATE_", "").toLowerCase()}.`;
      if (batch.state === "BATCH_STATE_PROCESSING" || open) timer = setTimeout(() => follow(name), 2000);
    } catch (err) {
      showError("error", err);
    }
  }

  async function downloadReport(name) {
    showError("error", null);
    try {
      const response = await call("partner", "GET", `/v1/${name}/report`, { accept: "text/csv", raw: true });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: `${name.replace("/", "-")}-report.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      showError("error", err);
    }
  }

  async function loadList() {
    try {
      const data = await call("partner", "GET", "/v1/batches?pageSize=20");
      const rows = (data.batches || []).map((b) => el("tr", {},
        el("td", { class: "mono" }, b.name.split("/")[1]),
        el("td", {}, stateLabel(b.state)),
        el("td", { class: "num" }, String(b.rowCount || 0)),
        el("td", { class: "num" }, String(b.acceptedCount || 0)),
        el("td", { class: "num" }, String(b.problemRowCount || 0)),
        el("td", {}, when(b.createTime)),
        el("td", {}, reportButton(b.name))));
      document.querySelector("#batches tbody").replaceChildren(...rows);
    } catch (err) {
      showError("error", err);
    }
  }

  function reportButton(name) {
    const button = el("button", { type: "button", class: "secondary", "aria-label": `Download CSV report of ${name}` }, "Download CSV");
    button.addEventListener("click", () => downloadReport(name));
    return button;
  }

  document.addEventListener("DOMContentLoaded", async () => {
    if (!(await Portal.loadSession("partner"))) return;
    document.getElementById("upload").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      showError("error", null);
      if (!form.elements.file.files.length) {
        showError("error", new Error("Choose a CSV file to upload."));
        return;
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      document.getElementById("status").textContent = "Uploading…";
      try {
        const batch = await upload(form);
        document.getElementById("status").textContent = `Uploaded as ${batch.name}.`;
        await follow(batch.name);
        loadList();
      } catch (err) {
        document.getElementById("status").textContent = "The upload was refused.";
        showError("error", err);
      } finally {
        button.disabled = false;
      }
    });
    document.getElementById("report").addEventListener("click", () => downloadReport(current));
    loadList();
    Portal.ready();
  });
})();
