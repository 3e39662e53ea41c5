// One withdrawal: its status, refreshed every 2 s until it is final, and its audit trail
// (ListStateChanges).
"use strict";

(() => {
  const { call, el, stateLabel, when, showError } = Portal;
  const POLL_MS = 2000;
  let name = "";
  let timer = null;
  let lastVersion = null;

  function detail(label, value, mono = false) {
    return [el("dt", {}, label), el("dd", mono ? { class: "mono" } : {}, value === "" || value === undefined ? "—" : value)];
  }

  // The hash, linked to the block explorer's page when the gateway names one
  // (GATEWAY_PORTAL_EXPLORER_TX_URL).
  function transactionLink(hash) {
    const template = (Portal.session() || {}).explorerTxUrl || "";
    if (!hash || !template || !/^0x[0-9a-fA-F]{64}$/.test(hash)) return hash;
    return el("a", { href: template.replace("{hash}", hash), rel: "noopener noreferrer", target: "_blank" }, hash);
  }

  function render(w) {
    const dl = document.getElementById("details");
    const block = w.blockNumber && w.blockNumber !== "0" ? w.blockNumber : "";
    dl.replaceChildren(
      ...detail("State", stateLabel(w.state)),
      ...detail("Reason", w.stateReason),
      ...detail("What happens next", w.stateMessage),
      ...detail("Amount", `${w.amount} ${w.token}`),
      ...detail("Recipient", w.recipientAddress, true),
      ...detail("Chain", w.chain),
      ...detail("Transaction hash", transactionLink(w.transactionHash), true),
      ...detail("Block", block),
      ...detail("Confirmations", String(w.confirmations || 0)),
      ...detail("Fee", w.fee ? `${w.fee} ${w.feeCurrency}` : ""),
      ...detail("Client reference", w.clientReference),
      ...detail("User reference", w.userRef),
      ...detail("Batch", w.batch, true),
      ...detail("Created", when(w.createTime)),
      ...detail("Last change", when(w.updateTime)),
      ...detail("Version", w.version));
    dl.dataset.state = w.state;
    const final = Portal.TERMINAL.has(w.state);
    document.getElementById("live").textContent = final
      ? `Final state: ${w.state.replace("STATE_", "")}.`
      : `Now ${w.state.replace("STATE_", "")}; this page updates by itself.`;
    document.getElementById("cancel").hidden = !["STATE_RECEIVED", "STATE_VALIDATED", "STATE_QUEUED", "STATE_PENDING_APPROVAL", "STATE_ON_HOLD"].includes(w.state);
    return final;
  }

  async function loadAudit() {
    const rows = [];
    let pageToken = "";
    do {
      const params = new URLSearchParams({ pageSize: "100" });
      if (pageToken) params.set("pageToken", pageToken);
      const data = await call("partner", "GET", `/v1/${name}/stateChanges?${params}`);
      for (const c of data.stateChanges || []) {
        rows.push(el("tr", {},
          el("td", { class: "num" }, c.version),
          el("td", {}, when(c.occurTime)),
          el("td", {}, c.fromState && c.fromState !== "STATE_UNSPECIFIED" ? stateLabel(c.fromState) : "—"),
          el("td", {}, stateLabel(c.toState)),
          el("td", {}, c.reason || ""),
          el("td", {}, c.message || ""),
          el("td", { class: "mono" }, c.transactionHash || "")));
      }
      pageToken = data.nextPageToken || "";
    } while (pageToken);
    document.querySelector("#audit tbody").replaceChildren(...rows);
  }

  async function refresh() {
    try {
      const w = await call("partner", "GET", `/v1/${name}`);
      const final = render(w);
      if (w.version !== lastVersion) {
        lastVersion = w.version;
        await loadAudit();
      }
      showError("error", null);
      if (!final) timer = setTimeout(refresh, POLL_MS);
    } catch (err) {
      showError("error", err);
      if (err.status >= 500 || err.status === 429) timer = setTimeout(refresh, POLL_MS * 2);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    if (!(await Portal.loadSession("partner"))) return;
    name = new URLSearchParams(window.location.search).get("name") || "";
    if (!/^withdrawals\/[0-9a-z]{1,64}$/.test(name)) {
      showError("error", new Error("This link does not name a withdrawal (withdrawals/<id>). Find it in the withdrawal history."));
      Portal.ready();
      return;
    }
    document.getElementById("title").textContent = `Withdrawal ${name.split("/")[1]}`;
    document.getElementById("cancel").addEventListener("click", async () => {
      try {
        await call("partner", "POST", `/v1/${name}:cancel`, { json: { reason: "cancelled in the portal" } });
        clearTimeout(timer);
        refresh();
      } catch (err) {
        showError("error", err);
      }
    });
    refresh();
    Portal.ready();
  });
})();
