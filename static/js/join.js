// The event's link: a newcomer joins in one form (name, email, selfie, consent), a signed-in
// guest without a selfie joins with it, the others in one tap; or a sign-in link by email.
import { api, busy, handleSignedOut, onSubmit, showError } from "./common.js";
import { selfieProblem, selfiePicker } from "./selfie_picker.js";

const photosOf = (event) => `/my-photos?event_id=${event.id}`;

// Joining closed, or the code expired, since the page was shown: the page says so.
function refusedSince(error) {
  if (error.code === "joining_closed" || error.code === "code_expired") {
    location.reload();
    return true;
  }
  return false;
}

/** Join with the code, then open my photos; a refusal is said in `box` (or the page reloads to
 * say joining closed meanwhile). */
async function joinAndOpen(code, button, box) {
  try {
    const { event } = await busy(button, "Joining…", () =>
      api("/api/events/join", { method: "POST", json: { code } }),
    );
    location.assign(photosOf(event));
  } catch (error) {
    if (handleSignedOut(error) || refusedSince(error)) return;
    showError(box, error.detail);
  }
}

const button = document.getElementById("join");
if (button) {
  button.addEventListener("click", () => {
    const card = button.closest("section");
    showError(card, "");
    joinAndOpen(button.dataset.code, button, card);
  });
}

const newcomer = document.getElementById("newcomer-form");
if (newcomer) {
  const picker = selfiePicker(newcomer);
  onSubmit(newcomer, async () => {
    const { name, email, password } = newcomer.elements;
    let missing = "";
    if (!name.value.trim()) missing = "Type your name, so the organiser knows who you are.";
    else if (!email.checkValidity() || !email.value) missing = "Type your email address, like name@example.com.";
    else if (password.required && password.value.length < 8) missing = "Choose a password of at least 8 characters.";
    else if (password.value && password.value.length < 8) missing = "Choose a password of at least 8 characters, or leave it empty.";
    else missing = picker.missing();
    showError(newcomer, missing);
    if (missing) return;
    const body = new FormData();
    body.append("code", newcomer.dataset.code);
    body.append("name", name.value.trim());
    body.append("email", email.value.trim());
    if (password.value) body.append("password", password.value);
    picker.appendTo(body);
    try {
      const { event } = await busy(newcomer.querySelector("[type=submit]"), "Looking for your face…", () =>
        api("/api/events/join/new-guest", { method: "POST", body }),
      );
      location.assign(photosOf(event));
    } catch (error) {
      if (refusedSince(error)) return;
      if (error.status === 409) {
        showError(newcomer, "This email already has a FindMe account. Sign in below to join with it.");
        return;
      }
      showError(newcomer, selfieProblem(error));
    }
  });
}

const selfieJoin = document.getElementById("selfie-join-form");
if (selfieJoin) {
  const picker = selfiePicker(selfieJoin);
  onSubmit(selfieJoin, async () => {
    const missing = picker.missing();
    showError(selfieJoin, missing);
    if (missing) return;
    const submit = selfieJoin.querySelector("[type=submit]");
    try {
      await busy(submit, "Looking for your face…", () =>
        api("/api/me/selfie", { method: "PUT", body: picker.appendTo(new FormData()) }),
      );
    } catch (error) {
      if (!handleSignedOut(error)) showError(selfieJoin, selfieProblem(error));
      return;
    }
    await joinAndOpen(selfieJoin.dataset.code, submit, selfieJoin);
  });
}

const linkForm = document.getElementById("link-form");
if (linkForm) {
  onSubmit(linkForm, async () => {
    const sent = linkForm.querySelector("[data-sent]");
    const email = linkForm.elements.email;
    sent.hidden = true;
    if (!email.value || !email.checkValidity()) {
      showError(linkForm, "Type your email address, like name@example.com.");
      return;
    }
    showError(linkForm, "");
    try {
      const reply = await busy(linkForm.querySelector("[type=submit]"), "Sending…", () =>
        api("/api/auth/sign-in-link", { method: "POST", json: { email: email.value.trim(), code: linkForm.dataset.code } }),
      );
      sent.textContent = reply.detail;
      sent.hidden = false;
    } catch (error) {
      showError(linkForm, error.detail);
    }
  });
}
