// New-photo emails: the switch on "My photos", and the button of an unsubscribe link's page.
import { api, busy, handleSignedOut, onSubmit, showError, toast } from "./common.js";

const toggle = document.getElementById("notify-new-photos");
if (toggle) {
  toggle.addEventListener("change", async () => {
    const wanted = toggle.checked;
    toggle.disabled = true;
    try {
      const reply = await api(`/api/events/${toggle.dataset.eventId}/notifications`, {
        method: "PUT",
        json: { new_photos: wanted },
      });
      toggle.checked = reply.new_photos;
      toast(
        reply.new_photos
          ? "We will email you when new photos of you arrive."
          : "You will get no more emails about new photos of this event.",
      );
    } catch (error) {
      if (handleSignedOut(error)) return;
      toggle.checked = !wanted;
      toast(error.detail, "error");
    } finally {
      toggle.disabled = false;
    }
  });
}

const unsubscribe = document.getElementById("unsubscribe-form");
if (unsubscribe) {
  onSubmit(unsubscribe, async () => {
    showError(unsubscribe, "");
    try {
      const reply = await busy(unsubscribe.querySelector("[type=submit]"), "Stopping…", () =>
        api("/api/unsubscribe", { method: "POST", json: { token: unsubscribe.dataset.token } }),
      );
      const done = document.getElementById("unsubscribed");
      done.textContent = reply.detail;
      done.hidden = false;
      unsubscribe.hidden = true;
    } catch (error) {
      showError(unsubscribe, error.detail);
    }
  });
}
