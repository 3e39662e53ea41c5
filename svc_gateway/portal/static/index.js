// Partner sign-in: the key goes to the gateway once, is exchanged for an HttpOnly session
// cookie, and is cleared from the form; it is never stored in the browser.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const form = document.getElementById("sign-in");
  const input = document.getElementById("api-key");
  if (await Portal.loadSession("partner", { redirect: false }).catch(() => null)) {
    window.location.replace("/portal/withdrawals");
    return;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Portal.showError("error", null);
    const key = input.value.trim();
    input.value = "";
    if (!key) {
      Portal.showError("error", new Error("Enter your API key."));
      input.focus();
      return;
    }
    try {
      await Portal.signIn("partner", key);
      window.location.assign("/portal/withdrawals");
    } catch (err) {
      Portal.showError("error", err);
    }
  });
  Portal.ready();
});
