// Operators: sign-in with the operator credential, the approval queue (approve / reject) and
// the kill switch (pause / resume), through the admin API as the operator's session.
"use strict";

(() => {
  const { call, el, when, showError } = Portal;

  function notice(text) {
    document.getElementById("notice").textContent = text;
  }

  function decide(item, verb) {
    return async () => {
      showError("error", null);
      const reason = document.getElementById("decision-reason").value.trim();
      try {
        const out = await call("operator", "POST", `/v1/admin/${item.withdrawal}:${verb}`, { json: reason ? { reason } : {} });
        notice(verb === "approve"
          ? `Approved ${item.withdrawal}: ${out.approvals} of ${out.approvalsRequired} approvals; now ${String(out.state).replace("STATE_", "")}.`
          : `Rejected ${item.withdrawal}; now ${String(out.state).replace("STATE_", "")}.`);
        loadApprovals();
      } catch (err) {
        showError("error", err);
      }
    };
  }

  function decisionButtons(item) {
    const approve = el("button", { type: "button", "aria-label": `Approve ${item.withdrawal}` }, "Approve");
    approve.addEventListener("click", decide(item, "approve"));
    const reject = el("button", { type: "button", class: "danger", "aria-label": `Reject ${item.withdrawal}` }, "Reject");
    reject.addEventListener("click", decide(item, "reject"));
    return el("div", { class: "actions" }, approve, reject);
  }

  async function loadApprovals() {
    try {
      const data = await call("operator", "GET", "/v1/admin/pendingApprovals?pageSize=100");
      const items = data.pendingApprovals || [];
      const rows = items.map((a) => el("tr", { "data-withdrawal": a.withdrawal },
        el("td", { class: "mono" }, a.withdrawal.split("/")[1]),
        el("td", {}, a.partner),
        el("td", { class: "num" }, `${a.amount} ${a.token}`),
        el("td", { class: "mono" }, a.recipientAddress),
        el("td", {}, a.rule),
        el("td", {}, `${(a.approvers || []).length} of ${a.approvalsRequired}`, (a.approvers || []).length ? ` (${a.approvers.join(", ")})` : ""),
        el("td", {}, when(a.requestTime || a.createTime)),
        el("td", {}, decisionButtons(a))));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "8" }, "Nothing waits for approval.")));
      document.querySelector("#approvals tbody").replaceChildren(...rows);
    } catch (err) {
      showError("error", err);
    }
  }

  function scopeText(scope) {
    if (!scope || (!scope.chain && !scope.token)) return "every chain and token";
    return scope.token ? `${scope.token} on ${scope.chain}` : `chain ${scope.chain}`;
  }

  async function loadPauses() {
    try {
      const data = await call("operator", "GET", "/v1/admin/payoutPauses");
      const rows = (data.payoutPauses || []).filter((p) => p.paused).map((p) => {
        const resume = el("button", { type: "button", class: "secondary", "aria-label": `Resume payouts on ${scopeText(p.scope)}` }, "Resume");
        resume.addEventListener("click", async () => {
          showError("error", null);
          try {
            await call("operator", "POST", "/v1/admin/payoutPauses:resume", { json: { scope: p.scope || {} } });
            notice(`Payouts resumed on ${scopeText(p.scope)}.`);
            loadPauses();
          } catch (err) {
            showError("error", err);
          }
        });
        return el("tr", {},
          el("td", {}, scopeText(p.scope)),
          el("td", {}, p.reason || ""),
          el("td", {}, p.actor || ""),
          el("td", {}, when(p.updateTime)),
          el("td", {}, resume));
      });
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5" }, "Nothing is paused: payouts run.")));
      document.querySelector("#pauses tbody").replaceChildren(...rows);
    } catch (err) {
      showError("error", err);
    }
  }

  function showConsole() {
    document.getElementById("signin").hidden = true;
    document.getElementById("console").hidden = false;
    loadApprovals();
    loadPauses();
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const signedIn = await Portal.loadSession("operator", { redirect: false }).catch((err) => {
      showError("error", err);
      return null;
    });
    if (signedIn) {
      showConsole();
    } else {
      document.getElementById("signin").hidden = false;
    }
    document.getElementById("sign-in").addEventListener("submit", async (event) => {
      event.preventDefault();
      showError("error", null);
      const input = document.getElementById("credential");
      const credential = input.value.trim();
      input.value = "";
      if (!credential) {
        showError("error", new Error("Enter your operator credential."));
        return;
      }
      try {
        await Portal.signIn("operator", credential);
        window.location.reload();
      } catch (err) {
        showError("error", err);
      }
    });
    document.getElementById("refresh").addEventListener("click", () => { loadApprovals(); loadPauses(); });
    document.getElementById("pause").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      showError("error", null);
      const scope = {};
      if (form.elements.chain.value.trim()) scope.chain = form.elements.chain.value.trim();
      if (form.elements.token.value.trim()) scope.token = form.elements.token.value.trim();
      try {
        await call("operator", "POST", "/v1/admin/payoutPauses:pause", { json: { scope, reason: form.elements.reason.value.trim() } });
        notice(`Payouts paused on ${scopeText(scope)}.`);
        form.reset();
        loadPauses();
      } catch (err) {
        showError("error", err);
      }
    });
    Portal.ready();
  });
})();
