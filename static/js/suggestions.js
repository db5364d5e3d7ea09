// "Is this you?" on My photos: faces FindMe is unsure of, each shown alone (never its photo)
// with Yes / No. Yes hands the photo to the grid (photos.js) at once; No removes the face.
import { api, el, handleSignedOut, toast } from "./common.js";

const card = document.getElementById("suggestions");

if (card) {
  const list = card.querySelector("[data-list]");
  const eventId = card.dataset.eventId;

  function show() {
    card.hidden = list.children.length === 0;
  }

  function itemFor(suggestion, index) {
    const face = el("img", {
      src: suggestion.face_url,
      alt: `Face ${index + 1} that may be you`,
      width: "180",
      height: "180",
      decoding: "async",
    });
    const yes = el("button", { class: "btn btn-primary btn-sm", type: "button", text: "Yes, it's me" });
    const no = el("button", { class: "btn btn-sm", type: "button", text: "No", "aria-label": "No, it is not me" });
    const item = el(
      "li",
      { class: "suggestion", "data-suggestion-id": String(suggestion.id) },
      face,
      el("div", { class: "btn-row" }, yes, no),
    );
    yes.addEventListener("click", () => answer(item, suggestion, "yes", [yes, no]));
    no.addEventListener("click", () => answer(item, suggestion, "no", [yes, no]));
    return item;
  }

  async function answer(item, suggestion, choice, buttons) {
    for (const button of buttons) button.disabled = true;
    let reply;
    try {
      reply = await api(`/api/suggestions/${suggestion.id}`, { method: "POST", json: { answer: choice } });
    } catch (error) {
      if (handleSignedOut(error)) return;
      // Answered elsewhere (another tab): the face goes all the same.
      if (error.status !== 404) {
        for (const button of buttons) button.disabled = false;
        toast(error.detail, "error");
        return;
      }
    }
    // Keyboard users keep their place: focus moves to the next face's first button.
    const next = item.nextElementSibling || item.previousElementSibling;
    item.classList.add("leaving");
    setTimeout(() => {
      item.remove();
      show();
    }, 250);
    if (next) next.querySelector("button").focus();
    if (reply && reply.photo) {
      document.dispatchEvent(new CustomEvent("findme:matched", { detail: reply.photo }));
      toast("Added to your photos.");
    } else if (choice === "no") {
      toast("Thanks. This photo will not be suggested to you again.");
    }
  }

  async function load() {
    try {
      const { items } = await api(`/api/events/${eventId}/suggestions`);
      list.replaceChildren(...items.map(itemFor));
    } catch (error) {
      // Not a member (an organiser looking at the page): there is nothing to ask.
      if (handleSignedOut(error)) return;
    }
    show();
  }

  // Matching that finishes while the page is open (a new selfie, new photos) may bring faces
  // to ask about; photos.js says when.
  let working = false;
  document.addEventListener("findme:work", (event) => {
    if (working && !event.detail.working) load();
    working = event.detail.working;
  });

  load();
}
