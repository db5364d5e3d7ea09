// Join an event in one tap.
import { api, busy, handleSignedOut, showError } from "./common.js";

const button = document.getElementById("join");
if (button) {
  button.addEventListener("click", async () => {
    const card = button.closest("section");
    showError(card, "");
    try {
      const { event } = await busy(button, "Joining…", () =>
        api("/api/events/join", { method: "POST", json: { code: button.dataset.code } }),
      );
      location.assign(`/my-photos?event_id=${event.id}`);
    } catch (error) {
      if (handleSignedOut(error)) return;
      // Joining closed, or the code expired, since the page was shown: the page says so.
      if (error.code === "joining_closed" || error.code === "code_expired") location.reload();
      else showError(card, error.detail);
    }
  });
}
