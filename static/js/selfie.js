// The selfie page: up to three selfies, each removable; camera or file, consent, and clear
// messages when no face or several are found.
import { api, busy, handleSignedOut, onSubmit, safeNext, showError } from "./common.js";
import { selfieProblem, selfiePicker } from "./selfie_picker.js";

// Removing a selfie: the page reloads to show those left (and the form, if it was full).
for (const button of document.querySelectorAll("[data-remove]")) {
  button.addEventListener("click", async () => {
    const problem = document.querySelector("[data-remove-error]");
    problem.hidden = true;
    try {
      await busy(button, "Removing…", () =>
        api(`/api/me/selfies/${button.dataset.remove}`, { method: "DELETE" }),
      );
    } catch (error) {
      if (handleSignedOut(error)) return;
      problem.textContent = `${error.detail} Reload the page and try again.`;
      problem.hidden = false;
      return;
    }
    location.reload();
  });
}

const form = document.getElementById("selfie-form");
if (form) setUpForm(form);

function setUpForm(form) {
  const picker = selfiePicker(form);
  const success = form.querySelector("[data-success]");
  // With a selfie on file, this form adds one more; without, it sets the first.
  const adding = form.dataset.mode === "add";

  onSubmit(form, async () => {
    success.hidden = true;
    const missing = picker.missing();
    showError(form, missing);
    if (missing) return;
    const body = picker.appendTo(new FormData());
    const send = adding
      ? () => api("/api/me/selfies", { method: "POST", body })
      : () => api("/api/me/selfie", { method: "PUT", body });
    try {
      await busy(form.querySelector("[type=submit]"), "Looking for your face…", send);
    } catch (error) {
      if (handleSignedOut(error)) return;
      showError(form, selfieProblem(error));
      return;
    }
    const next = safeNext(form.dataset.next, "");
    if (next) {
      location.assign(next);
      return;
    }
    if (adding) {
      location.reload();
      return;
    }
    success.textContent = "Your selfie is saved. FindMe is now looking for you in the photos of your events.";
    success.hidden = false;
  });
}
