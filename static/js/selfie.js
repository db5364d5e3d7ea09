// The selfie page: up to three selfies, each removable; camera or file, consent, and clear
// messages when no face or several are found.
import { api, busy, handleSignedOut, safeNext, showError } from "./common.js";

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
  const preview = document.getElementById("preview");
  const nameLine = form.querySelector("[data-filename]");
  const success = form.querySelector("[data-success]");
  // With a selfie on file, this form adds one more; without, it sets the first.
  const adding = form.dataset.mode === "add";
  let chosen = null;

  function choose(input) {
    const file = input.files && input.files[0];
    if (!file) return;
    chosen = file;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    nameLine.textContent = `Chosen: ${file.name}`;
    form.querySelector("[data-camera-label]").textContent = "Take another selfie";
    showError(form, "");
  }

  // A file the browser cannot show (not an image, or HEIC on most browsers): no broken
  // picture, a sentence instead; the server still decides whether it can read it.
  preview.addEventListener("error", () => {
    preview.hidden = true;
    if (chosen) nameLine.textContent = `Chosen: ${chosen.name} (no preview in this browser)`;
  });

  for (const id of ["camera", "file"]) {
    const input = document.getElementById(id);
    input.addEventListener("change", () => choose(input));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    success.hidden = true;
    if (!chosen) {
      showError(form, "Take a selfie or choose a photo of your face first.");
      return;
    }
    if (!form.elements.consent.checked) {
      showError(form, "Tick the box to agree to the processing of your selfie; without it FindMe cannot look for you.");
      return;
    }
    showError(form, "");
    const body = new FormData();
    body.append("file", chosen, chosen.name || "selfie.jpg");
    body.append("consent", "true");
    const send = adding
      ? () => api("/api/me/selfies", { method: "POST", body })
      : () => api("/api/me/selfie", { method: "PUT", body });
    try {
      await busy(form.querySelector("[type=submit]"), "Looking for your face…", send);
    } catch (error) {
      if (handleSignedOut(error)) return;
      let message = error.detail;
      if (error.code === "no_face") message = "We could not find a face in this photo. " + error.detail.replace(/^No face was found in this photo\.\s*/, "");
      if (error.code === "several_faces") message = "We found several faces in this photo. " + error.detail.replace(/^This photo shows several faces\.\s*/, "");
      showError(form, message);
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
