// The selfie form: camera or file, consent, and clear messages when no face or several are found.
import { api, busy, handleSignedOut, safeNext, showError } from "./common.js";

const form = document.getElementById("selfie-form");
const preview = document.getElementById("preview");
const nameLine = form.querySelector("[data-filename]");
const success = form.querySelector("[data-success]");
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
  try {
    await busy(form.querySelector("[type=submit]"), "Looking for your face…", () =>
      api("/api/me/selfie", { method: "PUT", body }),
    );
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
  success.textContent = "Your selfie is saved. FindMe is now looking for you in the photos of your events.";
  success.hidden = false;
});
