// Sign-in and sign-up forms, and the emailed link that finishes a sign-up.
import { api, busy, onSubmit, safeNext, showError } from "./common.js";

function values(form) {
  return Object.fromEntries(new FormData(form).entries());
}

const login = document.getElementById("login-form");
if (login) {
  onSubmit(login, async () => {
    const { email, password } = values(login);
    if (!email || !password) {
      showError(login, "Enter your email and password.");
      return;
    }
    showError(login, "");
    try {
      await busy(login.querySelector("[type=submit]"), "Signing in…", () =>
        api("/api/auth/login", { method: "POST", json: { email, password } }),
      );
      location.assign(safeNext(login.dataset.next));
    } catch (error) {
      showError(login, error.status === 401 ? "The email or password is wrong. Check them and try again." : error.detail);
    }
  });
}

const register = document.getElementById("register-form");
if (register) {
  onSubmit(register, async () => {
    const { name, email, password } = values(register);
    if (!name || !email || !password) {
      showError(register, "Fill in your name, email and a password.");
      return;
    }
    if (password.length < 8) {
      showError(register, "Choose a password of at least 8 characters.");
      return;
    }
    showError(register, "");
    const next = safeNext(register.dataset.next);
    try {
      const reply = await busy(register.querySelector("[type=submit]"), "Creating your account…", () =>
        api("/api/auth/register", { method: "POST", json: { name, email, password, next } }),
      );
      if (!reply.user) {
        // 202: with email configured, the emailed link finishes the sign-up.
        const sent = document.getElementById("register-sent");
        sent.textContent = reply.detail;
        sent.hidden = false;
        register.hidden = true;
        return;
      }
      goToSelfie(next);
    } catch (error) {
      showError(register, error.detail);
    }
  });
}

// An emailed link's page: its button spends the token (a GET never does: mail scanners open
// links), then the person goes on where the answer says.
function spendOnSubmit(form, label, path, goOn) {
  if (!form) return;
  onSubmit(form, async () => {
    showError(form, "");
    try {
      const reply = await busy(form.querySelector("[type=submit]"), label, () =>
        api(path, { method: "POST", json: { token: form.dataset.token } }),
      );
      goOn(safeNext(reply.next));
    } catch (error) {
      showError(form, error.detail);
    }
  });
}

// A new account's next stop: the selfie, then back to where the person was going.
function goToSelfie(next) {
  location.assign(next.startsWith("/selfie") ? next : "/selfie?next=" + encodeURIComponent(next));
}

spendOnSubmit(document.getElementById("signup-confirm-form"), "Creating your account…", "/api/auth/register/confirm", goToSelfie);
spendOnSubmit(document.getElementById("link-sign-in-form"), "Signing in…", "/api/auth/sign-in-link/confirm", (next) =>
  location.assign(next),
);
