// The selfie picker of templates/_selfie_fields.html: camera or file, a preview, the consent
// box, and the server's "no face" / "several faces" answers said plainly. The selfie page and
// the join page both use it.

/** Wire the picker inside `form`; returns what the form needs to send a selfie. */
export function selfiePicker(form) {
  const preview = form.querySelector("#preview");
  const nameLine = form.querySelector("[data-filename]");
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
    const box = form.querySelector("[data-error]");
    if (box) box.hidden = true;
  }

  // A file the browser cannot show (not an image, or HEIC on most browsers): no broken
  // picture, a sentence instead; the server still decides whether it can read it.
  preview.addEventListener("error", () => {
    preview.hidden = true;
    if (chosen) nameLine.textContent = `Chosen: ${chosen.name} (no preview in this browser)`;
  });
  for (const id of ["camera", "file"]) {
    const input = form.querySelector(`#${id}`);
    input.addEventListener("change", () => choose(input));
    // A photo chosen before this script ran (a slow phone, or a form the browser restored
    // on "back") fired its change event unheard: take it now.
    choose(input);
  }

  return {
    /** What is missing before sending, as a sentence; "" when the selfie can go. */
    missing() {
      if (!chosen) return "Take a selfie or choose a photo of your face first.";
      if (!form.elements.consent.checked) {
        return "Tick the box to agree to the processing of your selfie; without it FindMe cannot look for you.";
      }
      return "";
    },
    /** The selfie and the consent, added to a form body. */
    appendTo(body) {
      body.append("file", chosen, chosen.name || "selfie.jpg");
      body.append("consent", "true");
      return body;
    },
  };
}

/** The server's refusal of a selfie, in words that say what to do. */
export function selfieProblem(error) {
  if (error.code === "no_face") {
    return "We could not find a face in this photo. " + error.detail.replace(/^No face was found in this photo\.\s*/, "");
  }
  if (error.code === "several_faces") {
    return "We found several faces in this photo. " + error.detail.replace(/^This photo shows several faces\.\s*/, "");
  }
  return error.detail;
}
