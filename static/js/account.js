// Sign out, share links, API tokens, and erase my data after a confirmation step.
import { api, busy, el, handleSignedOut, onSubmit, plural, showError, toast } from "./common.js";

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

onSubmit(confirmForm, async () => {
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

// API tokens: create one (shown once, with a copy button), list them, revoke one.
const tokenForm = document.getElementById("token-form");
const tokenList = document.getElementById("token-list");
const newToken = document.getElementById("new-token");
const newTokenValue = document.getElementById("new-token-value");

function tokenItem(token) {
  const item = document.createElement("li");
  item.dataset.tokenId = String(token.id);
  const label = document.createElement("span");
  const when = token.last_used_at ? "last used " + new Date(token.last_used_at).toLocaleString() : "never used";
  label.textContent = token.revoked_at ? `${token.name} (revoked)` : `${token.name} · ${when}`;
  item.append(label);
  if (!token.revoked_at) {
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "btn btn-sm";
    revoke.textContent = "Revoke";
    revoke.addEventListener("click", async () => {
      try {
        await busy(revoke, "Revoking…", () => api(`/api/auth/tokens/${token.id}`, { method: "DELETE" }));
      } catch (error) {
        if (!handleSignedOut(error)) toast(error.detail, "error");
        return;
      }
      toast(`Token “${token.name}” revoked.`);
      await loadTokens();
    });
    item.append(" ", revoke);
  }
  return item;
}

async function loadTokens() {
  let reply;
  try {
    reply = await api("/api/auth/tokens");
  } catch (error) {
    if (!handleSignedOut(error)) toast(error.detail, "error");
    return;
  }
  const live = reply.items.filter((token) => !token.revoked_at);
  tokenList.replaceChildren(...live.map(tokenItem));
  document.getElementById("no-tokens").hidden = live.length > 0;
}

onSubmit(tokenForm, async () => {
  const name = String(new FormData(tokenForm).get("name") || "").trim();
  if (!name) {
    showError(tokenForm, "Give the token a name, so you know later where it is used.");
    return;
  }
  showError(tokenForm, "");
  let created;
  try {
    created = await busy(tokenForm.querySelector("[type=submit]"), "Creating…", () =>
      api("/api/auth/tokens", { method: "POST", json: { name } }),
    );
  } catch (error) {
    if (!handleSignedOut(error)) showError(tokenForm, error.detail);
    return;
  }
  tokenForm.reset();
  newTokenValue.textContent = created.token;
  newToken.hidden = false;
  await loadTokens();
});

document.getElementById("copy-token").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(newTokenValue.textContent);
    toast("Token copied.");
  } catch {
    // No clipboard (an insecure origin, say): select it for a manual copy.
    const range = document.createRange();
    range.selectNodeContents(newTokenValue);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    toast("Press Ctrl+C (or ⌘C) to copy the selected token.");
  }
});

loadTokens();

// Share links: what each shows, how often it was opened, and "Turn off".
const shareList = document.getElementById("share-list");

const shortDate = (iso) => new Date(iso).toLocaleDateString(undefined, { dateStyle: "medium" });
const shortTime = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

function shareItem(link) {
  const opened = link.opened_count
    ? `Opened ${plural(link.opened_count, "time")}, last ${shortTime(link.last_opened_at)}`
    : "Not opened yet";
  const off = el("button", { class: "btn btn-sm", type: "button", text: "Turn off" });
  off.addEventListener("click", async () => {
    try {
      await busy(off, "Turning off…", () => api(`/api/share-links/${link.id}`, { method: "DELETE" }));
    } catch (error) {
      if (!handleSignedOut(error)) toast(error.detail, "error");
      return;
    }
    toast("Link turned off: it shows nothing any more.");
    await loadShares();
  });
  return el(
    "li",
    { "data-share-id": String(link.id) },
    el("img", { src: link.thumb_url, alt: "", width: "56", height: "56", loading: "lazy" }),
    el(
      "span",
      { class: "share-about" },
      el("strong", { text: link.event_name }),
      el("span", { class: "muted", text: `Made ${shortDate(link.created_at)}` }),
      el("span", { text: opened }),
    ),
    off,
  );
}

async function loadShares() {
  let reply;
  try {
    reply = await api("/api/share-links");
  } catch (error) {
    if (!handleSignedOut(error)) toast(error.detail, "error");
    return;
  }
  shareList.replaceChildren(...reply.items.map(shareItem));
  document.getElementById("no-shares").hidden = reply.items.length > 0;
}

loadShares();
