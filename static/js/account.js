// Sign out, and erase my data after a confirmation step.
import { api, busy, handleSignedOut, showError, toast } from "./common.js";

document.getElementById("sign-out").addEventListener("click", async (event) => {
  try {
    await busy(event.currentTarget, "Signing out…", () => api("/api/auth/logout", { method: "POST" }));
  } catch (error) {
    if (!handleSignedOut(error)) toast(error.detail, "error");
    return;
  }
  location.assign("/");
});

const start = document.getElementById("erase-start");
const confirmForm = document.getElementById("erase-confirm");

start.addEventListener("click", () => {
  start.hidden = true;
  confirmForm.hidden = false;
  confirmForm.querySelector("input").focus();
});

document.getElementById("erase-cancel").addEventListener("click", () => {
  confirmForm.hidden = true;
  confirmForm.reset();
  showError(confirmForm, "");
  start.hidden = false;
});

confirmForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!confirmForm.elements.sure.checked) {
    showError(confirmForm, "Tick the box to confirm that you want everything deleted.");
    return;
  }
  try {
    await busy(confirmForm.querySelector("[type=submit]"), "Erasing…", () => api("/api/me", { method: "DELETE" }));
  } catch (error) {
    if (!handleSignedOut(error)) showError(confirmForm, error.detail);
    return;
  }
  location.assign("/?erased=1");
});
