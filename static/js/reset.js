// Forgotten password: ask for a link by email, then choose a new password with it.
import { api, busy, onSubmit, showError } from "./common.js";

const forgot = document.getElementById("forgot-form");
if (forgot) {
  onSubmit(forgot, async () => {
    const email = String(new FormData(forgot).get("email") || "").trim();
    if (!email) {
      showError(forgot, "Enter the email of your account.");
      return;
    }
    showError(forgot, "");
    try {
      const reply = await busy(forgot.querySelector("[type=submit]"), "Sending…", () =>
        api("/api/auth/password-reset", { method: "POST", json: { email } }),
      );
      const sent = document.getElementById("forgot-sent");
      sent.textContent = reply.detail;
      sent.hidden = false;
      forgot.hidden = true;
    } catch (error) {
      showError(forgot, error.detail);
    }
  });
}

const reset = document.getElementById("reset-form");
if (reset) {
  onSubmit(reset, async () => {
    const password = String(new FormData(reset).get("password") || "");
    if (password.length < 8) {
      showError(reset, "Choose a password of at least 8 characters.");
      return;
    }
    showError(reset, "");
    try {
      const reply = await busy(reset.querySelector("[type=submit]"), "Changing…", () =>
        api("/api/auth/password-reset/confirm", {
          method: "POST",
          json: { token: reset.dataset.token, password },
        }),
      );
      const done = document.getElementById("reset-done");
      done.textContent = reply.detail;
      done.hidden = false;
      reset.hidden = true;
    } catch (error) {
      showError(reset, error.detail);
    }
  });
}
