// The dashboard: create an event.
import { api, busy, handleSignedOut, onSubmit, showError } from "./common.js";

const form = document.getElementById("create-event");
if (form) {
  onSubmit(form, async () => {
    const name = form.elements.name.value.trim();
    const date = form.elements.date.value;
    if (!name) {
      showError(form, "Give the event a name, like “Summer gala 2026”.");
      return;
    }
    showError(form, "");
    try {
      const created = await busy(form.querySelector("[type=submit]"), "Creating…", () =>
        api("/api/events", { method: "POST", json: date ? { name, date } : { name } }),
      );
      location.assign(`/events/${created.id}`);
    } catch (error) {
      if (!handleSignedOut(error)) showError(form, error.detail);
    }
  });
}
