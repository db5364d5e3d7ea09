// The photo grid of "My photos" and the gallery: paged as you scroll, live (SSE) for my photos,
// a full-size viewer, downloads, and "not me".
import { api, el, handleSignedOut, plural, toast } from "./common.js";

// ?limit= on the page's address sets the page size (1-200), e.g. for slow connections.
const PAGE = Math.min(200, Math.max(1, Number(new URLSearchParams(location.search).get("limit")) || 30));
const grid = document.getElementById("photos");

if (grid) {
  const mode = grid.dataset.mode;
  const eventId = grid.dataset.eventId;
  const sentinel = document.getElementById("sentinel");
  const empty = document.getElementById("empty");
  const count = document.getElementById("count");
  const zip = document.getElementById("zip");
  const live = document.getElementById("live");
  const viewer = document.getElementById("viewer");
  const hasSelfie = grid.dataset.hasSelfie !== "false";

  const items = new Map(); // photo id -> item, for the tiles on the page
  let cursor = null;
  let exhausted = false;
  let loading = false;
  let highest = 0; // the highest photo id loaded by paging
  const waiting = new Map(); // live photos beyond what paging reached, kept until it does

  function updateCounts() {
    const total = items.size;
    count.textContent = exhausted || total ? plural(total, "photo") : "";
    empty.hidden = !(exhausted && total === 0);
    if (!empty.hidden) describeEmpty();
    if (zip) zip.hidden = total === 0;
    sentinel.textContent = !exhausted && total ? "Loading more photos…" : "";
  }

  // Is there still work that could bring photos? "My photos" asks while the page is open, so
  // that an empty page says when everything is processed and nothing was found.
  const processing = document.getElementById("processing");
  const WORKING_POLL_MS = 3000;
  const IDLE_POLL_MS = 15000;
  let work = null; // {working, left, photos, matchingFailed}
  let workTimer = 0;

  async function checkWork() {
    clearTimeout(workTimer);
    try {
      const status = await api("/api/me/status");
      if (eventId) {
        const progress = await api(`/api/events/${eventId}/progress`);
        const mine = status.events.find((entry) => String(entry.event_id) === eventId);
        // A member's own figures are exact; anyone else (the organiser) sees the event's.
        const matching = mine ? ["queued", "running"].includes(mine.matching) : false;
        const left = mine ? mine.photos_pending : progress.queued + progress.running;
        work = {
          working: matching || left > 0,
          left,
          photos: progress.photos,
          matchingFailed: Boolean(mine) && mine.matching === "failed",
        };
      } else {
        const left = status.events.reduce((sum, entry) => sum + entry.photos_pending, 0);
        work = {
          working: status.pending > 0,
          left,
          photos: null,
          matchingFailed: status.events.some((entry) => entry.matching === "failed"),
        };
      }
    } catch (error) {
      if (handleSignedOut(error)) return;
    }
    showWork();
    updateCounts();
    // "Is this you?" (suggestions.js) asks again once matching has finished.
    if (work) document.dispatchEvent(new CustomEvent("findme:work", { detail: work }));
    workTimer = setTimeout(checkWork, work && work.working ? WORKING_POLL_MS : IDLE_POLL_MS);
  }

  function showWork() {
    if (!processing || !work) return;
    processing.hidden = false;
    processing.dataset.state = work.working ? "working" : "finished";
    if (work.working) {
      processing.textContent = work.left ? `Processing: ${plural(work.left, "photo")} to go` : "Matching your selfie…";
    } else if (work.photos === 0) {
      processing.textContent = "No photos uploaded yet";
    } else {
      processing.textContent = "Every photo is processed";
    }
  }

  function describeEmpty() {
    const title = empty.querySelector("[data-title]");
    const text = empty.querySelector("[data-text]");
    const line = empty.querySelector("[data-progress]");
    const advice = empty.querySelector("[data-advice]");
    const browse = empty.querySelector("[data-browse]");
    const finished = Boolean(work) && !work.working && work.photos !== 0 && hasSelfie;
    empty.dataset.state = finished ? "finished" : "waiting";
    empty.querySelector('[data-icon="waiting"]').hidden = finished;
    empty.querySelector('[data-icon="finished"]').hidden = !finished;
    advice.hidden = !finished;
    // Offered only where the caller may see every photo (the page leaves it out otherwise).
    if (browse) browse.hidden = finished;
    line.textContent = "";
    if (!hasSelfie) {
      title.textContent = "No photos of you yet";
      text.textContent = "Add your selfie first: FindMe needs it to recognise you. Your photos appear here right after.";
    } else if (finished) {
      const where = eventId ? `All ${plural(work.photos, "photo")} of ${empty.dataset.eventName} are` : "Every photo of your events is";
      title.textContent = "No photos of you were found";
      text.textContent =
        `${where} processed, and FindMe did not recognise you in any of them.` +
        (work.matchingFailed ? " Matching your selfie failed, though: ask the organiser or an admin to retry it." : " Here is what you can do:");
    } else {
      title.textContent = "No photos of you yet";
      text.textContent =
        work && work.photos === 0
          ? "The photographer has not uploaded any photos yet. Keep this page open: your photos appear here by themselves as soon as they are processed."
          : "Keep this page open: your photos appear here by themselves as soon as the photographer's uploads are processed.";
      if (work && work.working) {
        line.textContent = work.left ? `${plural(work.left, "photo")} still being processed…` : "Your selfie is being matched with the photos…";
      }
    }
  }

  function tileFor(item) {
    const image = el("img", {
      src: item.thumb_url,
      alt: item.filename,
      loading: "lazy",
      decoding: "async",
      width: "240",
      height: "240",
    });
    const open = el("button", { class: "tile-open", type: "button", "aria-label": `Open ${item.filename}` }, image);
    open.addEventListener("click", () => openViewer(item.id));
    const tile = el("figure", { class: "tile", "data-photo-id": String(item.id), "data-filename": item.filename }, open);
    if (mode === "mine") {
      const notMe = el("button", { class: "tile-notme", type: "button", text: "Not me", title: "This is not me: remove it" });
      notMe.addEventListener("click", () => confirmNotMe(tile, item));
      tile.append(notMe);
    }
    return tile;
  }

  function addItem(item, { live: isLive = false } = {}) {
    if (items.has(item.id)) return;
    // A live photo beyond what paging reached waits, so the grid stays in order.
    if (isLive && !exhausted && item.id > highest) {
      waiting.set(item.id, item);
      return;
    }
    items.set(item.id, item);
    const tile = tileFor(item);
    if (isLive) tile.classList.add("new");
    const after = [...grid.children].find((node) => Number(node.dataset.photoId) > item.id);
    grid.insertBefore(tile, after || null);
  }

  function removeItem(photoId) {
    items.delete(photoId);
    const tile = grid.querySelector(`[data-photo-id="${photoId}"]`);
    if (tile) {
      tile.classList.add("leaving");
      setTimeout(() => tile.remove(), 250);
    }
    updateCounts();
  }

  async function loadMore() {
    if (loading || exhausted) return;
    loading = true;
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (eventId) params.set("event_id", eventId);
    if (cursor) params.set("cursor", cursor);
    try {
      const page = await api(`${grid.dataset.source}?${params}`);
      for (const item of page.items) {
        highest = Math.max(highest, item.id);
        addItem(item);
      }
      cursor = page.next_cursor;
      exhausted = !cursor;
      for (const [id, item] of waiting) {
        if (exhausted || id <= highest) {
          waiting.delete(id);
          addItem(item, { live: true });
        }
      }
    } catch (error) {
      if (handleSignedOut(error)) return;
      sentinel.textContent = "";
      toast(error.detail, "error");
      loading = false;
      return;
    }
    loading = false;
    updateCounts();
    if (!exhausted) {
      // Re-observe: if the sentinel is still on screen, this fires again at once.
      observer.unobserve(sentinel);
      observer.observe(sentinel);
    }
  }

  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((entry) => entry.isIntersecting)) loadMore();
    },
    { rootMargin: "800px 0px" },
  );
  observer.observe(sentinel);

  // Live: the server pushes each new match. EventSource retries by itself only when a stream
  // that answered 200 drops; a refusal (503 when the server is full, a proxy's 502) closes it
  // for good. So every failure closes it, and a new one opens after a jittered, doubling delay
  // (a crowd of phones must not come back in step), resuming after the last match received.
  function setLive(state, text) {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  if (grid.dataset.stream) {
    const RETRY_FIRST_MS = 1000;
    // Low enough that after a restart every page is back within 8 s of the server answering;
    // a crowd of phones retrying at 4-8 s costs the server only refused connections meanwhile.
    const RETRY_MAX_MS = 8000;
    let stream = null;
    let lastId = null;
    let failures = 0;
    let retryTimer = null;
    let stopped = false;

    const streamUrl = () => {
      const url = new URL(grid.dataset.stream, location.href);
      if (lastId !== null) url.searchParams.set("after", lastId);
      return url.href;
    };

    const reconnecting = () =>
      setLive("retry", navigator.onLine ? "Reconnecting…" : "Offline — reconnecting…");

    const stop = () => {
      stopped = true;
      clearTimeout(retryTimer);
      if (stream) stream.close();
    };

    const retryLater = () => {
      if (stopped || retryTimer !== null) return;
      // "Equal jitter": between half and all of a ceiling that doubles with each failure.
      const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** failures);
      failures += 1;
      reconnecting();
      retryTimer = setTimeout(connect, ceiling / 2 + (Math.random() * ceiling) / 2);
    };

    const connect = () => {
      retryTimer = null;
      stream = new EventSource(streamUrl());
      // Reset on "ready", not "open": a server that accepts and then fails still backs off.
      stream.addEventListener("ready", () => {
        failures = 0;
        setLive("live", "Live");
      });
      stream.addEventListener("message", (message) => {
        if (message.lastEventId) lastId = message.lastEventId;
        const item = JSON.parse(message.data);
        const before = items.size;
        addItem(item, { live: true });
        if (items.size > before) updateCounts();
      });
      // The session ended (signed out elsewhere, expired): reconnecting would only get a 401.
      stream.addEventListener("end", () => {
        stop();
        setLive("off", "Live updates stopped — reload the page");
      });
      stream.addEventListener("error", () => {
        stream.close();
        retryLater();
      });
    };

    window.addEventListener("offline", () => {
      if (!stopped) setLive("retry", "Offline — reconnecting…");
    });
    // Back online: no need to sit out the rest of a long backoff.
    window.addEventListener("online", () => {
      if (stopped) return;
      if (retryTimer === null) {
        // The stream outlived the outage: it is live again as it is.
        if (stream && stream.readyState === EventSource.OPEN) setLive("live", "Live");
        return;
      }
      clearTimeout(retryTimer);
      connect();
    });
    window.addEventListener("pagehide", stop);
    connect();
  }

  // "Not me": a confirmation on the tile, then the photo leaves my photos for good.
  function confirmNotMe(tile, item) {
    if (tile.querySelector(".tile-confirm")) return;
    const keep = el("button", { class: "btn btn-sm", type: "button", text: "Keep" });
    const remove = el("button", { class: "btn btn-sm btn-danger", type: "button", text: "Remove" });
    const panel = el(
      "div",
      { class: "tile-confirm", role: "group", "aria-label": "Not me?" },
      el("strong", { text: "Not you?" }),
      el("span", { class: "confirm-more", text: "Remove it from your photos." }),
      el("div", { class: "btn-row" }, remove, keep),
    );
    keep.addEventListener("click", () => panel.remove());
    remove.addEventListener("click", () => notMe(item.id, remove));
    tile.append(panel);
    remove.focus();
  }

  async function notMe(photoId, button) {
    if (button) button.disabled = true;
    try {
      await api(`/api/photo/${photoId}/not-me`, { method: "POST" });
    } catch (error) {
      if (handleSignedOut(error)) return;
      if (button) button.disabled = false;
      toast(error.detail, "error");
      return;
    }
    removeItem(photoId);
    toast("Removed. This photo will not be matched to you again.");
  }

  // The full-size viewer.
  let current = null;
  const image = viewer.querySelector("[data-image]");
  const name = viewer.querySelector("[data-name]");
  const download = viewer.querySelector("[data-download]");
  const viewerNotMe = viewer.querySelector("[data-notme]");
  const prev = viewer.querySelector("[data-prev]");
  const next = viewer.querySelector("[data-next]");

  function ordered() {
    return [...grid.children].map((node) => Number(node.dataset.photoId)).filter((id) => items.has(id));
  }

  function openViewer(photoId) {
    const item = items.get(photoId);
    if (!item) return;
    current = photoId;
    image.src = item.image_url;
    image.alt = item.filename;
    name.textContent = item.filename;
    download.href = `${item.image_url}?download=1`;
    download.setAttribute("download", item.filename);
    if (share) showShareStatus(""); // what it said was about the previous photo
    const ids = ordered();
    const index = ids.indexOf(photoId);
    prev.hidden = index <= 0;
    next.hidden = index === ids.length - 1;
    if (!viewer.open) viewer.showModal();
  }

  function step(delta) {
    const ids = ordered();
    const index = ids.indexOf(current);
    const target = ids[index + delta];
    if (target !== undefined) openViewer(target);
  }

  viewer.querySelector("[data-close]").addEventListener("click", () => viewer.close());
  prev.addEventListener("click", () => step(-1));
  next.addEventListener("click", () => step(1));
  viewer.addEventListener("close", () => {
    image.removeAttribute("src");
    current = null;
  });
  viewer.addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") step(-1);
    if (event.key === "ArrowRight") step(1);
  });
  let touchX = null;
  viewer.addEventListener("touchstart", (event) => {
    touchX = event.touches[0].clientX;
  }, { passive: true });
  viewer.addEventListener("touchend", (event) => {
    if (touchX === null) return;
    const dx = event.changedTouches[0].clientX - touchX;
    touchX = null;
    if (Math.abs(dx) > 50) step(dx < 0 ? 1 : -1);
  });
  if (viewerNotMe) {
    viewerNotMe.addEventListener("click", async () => {
      const photoId = current;
      const ids = ordered();
      const following = ids[ids.indexOf(photoId) + 1] ?? ids[ids.indexOf(photoId) - 1];
      await notMe(photoId, viewerNotMe);
      viewerNotMe.disabled = false;
      if (following !== undefined && items.has(following)) openViewer(following);
      else viewer.close();
    });
  }

  // Share: a private link to the photo, through the phone's share sheet where there is one
  // (with the photo itself where files can be shared), else copied to the clipboard. A photo
  // gets one link per visit of the page, however often Share is pressed.
  const share = viewer.querySelector("[data-share]");
  const shareStatus = viewer.querySelector("[data-share-status]");
  const shared = new Map(); // photo id -> Promise of {url, file}

  function showShareStatus(text, url = null) {
    shareStatus.replaceChildren(text);
    if (url === null) return;
    // No clipboard (an insecure address, or the browser said no): the link, ready to copy.
    const field = el("input", { type: "text", readonly: true, value: url, "aria-label": "Share link" });
    shareStatus.append(el("span", { class: "share-fallback" }, field));
    field.focus();
    field.select();
  }

  function sharedPhoto(item) {
    if (!shared.has(item.id)) {
      const link = api(`/api/photos/${item.id}/share-links`, { method: "POST" });
      const file = navigator.canShare ? photoFile(item) : Promise.resolve(null);
      const ready = Promise.all([link, file]).then(([made, photo]) => ({ url: made.url, file: photo }));
      ready.catch(() => shared.delete(item.id));
      shared.set(item.id, ready);
    }
    return shared.get(item.id);
  }

  async function photoFile(item) {
    try {
      const response = await fetch(item.image_url, { credentials: "same-origin" });
      if (!response.ok) return null;
      const blob = await response.blob();
      // Not the uploaded name: a photographer's file names may say who is in the photo.
      const file = new File([blob], `photo.${blob.type.split("/")[1] || "jpg"}`, { type: blob.type });
      return navigator.canShare({ files: [file] }) ? file : null;
    } catch {
      return null; // the link alone is shared
    }
  }

  async function copyLink(url) {
    try {
      await navigator.clipboard.writeText(url);
    } catch {
      showShareStatus("Copy this link to share the photo:", url);
      return;
    }
    showShareStatus("Link copied. Anyone who has it sees this photo, until you turn it off in your account.");
  }

  async function sharePhoto() {
    const item = items.get(current);
    if (!item) return;
    showShareStatus("");
    share.disabled = true;
    try {
      const { url, file } = await sharedPhoto(item);
      if (!navigator.share) {
        await copyLink(url);
        return;
      }
      try {
        await navigator.share(file ? { url, files: [file] } : { url });
      } catch (error) {
        if (error.name === "AbortError") return; // the share sheet was closed
        // Making the link can outlast the tap's permission to open the share sheet: the
        // link is made now, so the next tap opens it at once.
        if (error.name === "NotAllowedError") showShareStatus("Your link is ready: tap Share again.");
        else await copyLink(url);
      }
    } catch (error) {
      if (handleSignedOut(error)) return;
      showShareStatus(error.detail || "Sharing did not work. Try again.");
    } finally {
      share.disabled = false;
    }
  }

  if (share) share.addEventListener("click", sharePhoto);

  // A suggestion confirmed on this page ("Is this you?", suggestions.js) is one of my photos
  // now: shown at once, without waiting for the live stream to bring it.
  document.addEventListener("findme:matched", (event) => {
    const before = items.size;
    addItem(event.detail, { live: true });
    if (items.size > before) updateCounts();
  });

  updateCounts();
  loadMore();
  if (mode === "mine") {
    checkWork();
    window.addEventListener("pagehide", () => clearTimeout(workTimer));
  }
}
