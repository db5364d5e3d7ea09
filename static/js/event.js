// The organiser's event page: parallel batched uploads with progress and retries, processing
// progress with failures and their retry, the event's photos (status, reason, delete), the join
// link, who may join with it (open or closed, its expiry, a new code), and deleting the event.
import { api, busy, csrfToken, el, formatBytes, handleSignedOut, loginUrl, onSubmit, plural, showError, toast } from "./common.js";

const root = document.getElementById("event");
const eventId = root.dataset.eventId;
const UPLOAD_URL = `/api/photographer/events/${eventId}/upload-photos`;
const IN_FLIGHT = 3; // requests at once
const BATCH_FILES = 4; // files per request
const BATCH_BYTES = 40 * 1024 * 1024; // ...or fewer when they are large
const MAX_ATTEMPTS = 6;
const LABELS = {
  waiting: "Waiting",
  uploading: "Uploading",
  retrying: "Retrying",
  created: "Added",
  duplicate: "Already uploaded",
  rejected: "Rejected",
  failed: "Failed",
};
const BADGES = {
  created: "badge-success",
  duplicate: "",
  rejected: "badge-danger",
  failed: "badge-danger",
  retrying: "badge-warning",
  uploading: "badge-primary",
  waiting: "",
};

const input = document.getElementById("files");
const dropzone = document.getElementById("dropzone");
const panel = document.getElementById("upload");
const list = document.getElementById("file-list");
const overall = document.getElementById("upload-progress");
const summary = document.getElementById("upload-summary");
const bytesLine = document.getElementById("upload-bytes");
const tallies = document.getElementById("tallies");
const retryButton = document.getElementById("retry-failed");

const files = []; // {file, row, bar, badge, detail, status, loaded}
const queue = [];
let inFlight = 0;
let stopped = "";

function setStatus(entry, status, detail = "") {
  entry.status = status;
  entry.row.dataset.status = status;
  entry.badge.textContent = LABELS[status];
  entry.badge.className = `badge ${BADGES[status]}`;
  entry.detail.textContent = detail;
  entry.detail.hidden = !detail;
  if (["created", "duplicate", "rejected", "failed"].includes(status)) entry.loaded = entry.file.size;
}

function addFiles(chosen) {
  const fresh = [...chosen].filter((file) => file.size > 0 || file.type);
  if (!fresh.length) return;
  panel.hidden = false;
  stopped = "";
  for (const file of fresh) {
    const bar = el("progress", { max: String(Math.max(file.size, 1)), value: "0" });
    const badge = el("span", { class: "badge" });
    const detail = el("span", { class: "file-detail", hidden: true });
    const row = el(
      "li",
      { class: "file-row", "data-name": file.name },
      el("span", { class: "file-name", title: file.name, text: file.name }),
      badge,
      bar,
      detail,
    );
    const entry = { file, row, bar, badge, detail, status: "waiting", loaded: 0 };
    setStatus(entry, "waiting");
    files.push(entry);
    queue.push(entry);
    list.append(row);
  }
  render();
  pump();
}

function nextBatch() {
  const batch = [];
  let bytes = 0;
  while (queue.length && batch.length < BATCH_FILES) {
    const size = queue[0].file.size;
    if (batch.length && bytes + size > BATCH_BYTES) break;
    bytes += size;
    batch.push(queue.shift());
  }
  return batch;
}

function pump() {
  while (!stopped && inFlight < IN_FLIGHT && queue.length) {
    const batch = nextBatch();
    inFlight += 1;
    send(batch, 1).finally(() => {
      inFlight -= 1;
      render();
      progress.kick();
      pump();
    });
  }
  render();
}

function send(batch, attempt) {
  return new Promise((resolve) => {
    for (const entry of batch) {
      entry.loaded = 0;
      setStatus(entry, "uploading", attempt > 1 ? `Attempt ${attempt} of ${MAX_ATTEMPTS}` : "");
    }
    const body = new FormData();
    for (const entry of batch) body.append("files", entry.file, entry.file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", UPLOAD_URL);
    xhr.setRequestHeader("x-csrf-token", csrfToken());
    xhr.setRequestHeader("accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      // The files travel in order: spread the bytes sent over them.
      let left = event.loaded;
      for (const entry of batch) {
        entry.loaded = Math.max(0, Math.min(entry.file.size, left));
        left -= entry.file.size;
        entry.bar.value = entry.loaded;
      }
      render();
    });
    const retry = (reason, waitSeconds) => {
      if (attempt >= MAX_ATTEMPTS || stopped) {
        for (const entry of batch) setStatus(entry, "failed", `${reason} Use “Retry failed uploads”.`);
        resolve();
        return;
      }
      const delay = waitSeconds ?? Math.min(30, 2 ** attempt) + Math.random();
      for (const entry of batch) {
        setStatus(entry, "retrying", `${reason} Trying again in ${Math.round(delay)} s.`);
      }
      render();
      setTimeout(() => send(batch, attempt + 1).then(resolve), delay * 1000);
    };
    xhr.addEventListener("error", () => retry("The connection failed.", undefined));
    xhr.addEventListener("timeout", () => retry("The upload timed out.", undefined));
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      const status = xhr.status;
      if (status === 429 || status >= 500) {
        const after = Number(xhr.getResponseHeader("retry-after"));
        const reason = status === 429 ? "The server is busy." : "The server had a problem.";
        retry(reason, Number.isFinite(after) && after > 0 ? after : undefined);
        return;
      }
      if (status === 401 || status === 403) {
        stopped = status === 401 ? "Your session ended. Sign in again, then upload the rest." : (data && data.detail) || "You may not upload to this event.";
        for (const entry of [...batch, ...queue.splice(0)]) setStatus(entry, "failed", stopped);
        if (status === 401) toast(stopped, "error");
        resolve();
        return;
      }
      if (data && Array.isArray(data.results)) {
        batch.forEach((entry, index) => {
          const result = data.results[index] || {};
          setStatus(entry, result.status || "failed", result.status === "rejected" ? result.detail || result.error : "");
        });
      } else {
        const detail = (data && data.detail) || `The upload was refused (error ${status}).`;
        for (const entry of batch) setStatus(entry, "rejected", detail);
      }
      resolve();
    });
    xhr.send(body);
  });
}

function render() {
  const total = files.reduce((sum, entry) => sum + entry.file.size, 0) || 1;
  const sent = files.reduce((sum, entry) => sum + entry.loaded, 0);
  overall.max = total;
  overall.value = sent;
  const by = {};
  for (const entry of files) by[entry.status] = (by[entry.status] || 0) + 1;
  const finished = (by.created || 0) + (by.duplicate || 0) + (by.rejected || 0) + (by.failed || 0);
  const active = files.length - finished;
  summary.textContent = active
    ? `Uploading ${plural(files.length, "file")}: ${finished} done`
    : `Upload finished: ${plural(files.length, "file")}`;
  overall.classList.toggle("done", !active);
  bytesLine.textContent = `${formatBytes(sent)} of ${formatBytes(total)}`;
  tallies.replaceChildren(
    ...[
      ["created", "added", "badge-success"],
      ["duplicate", "already uploaded", ""],
      ["rejected", "rejected", "badge-danger"],
      ["failed", "failed", "badge-danger"],
      ["retrying", "retrying", "badge-warning"],
      ["waiting", "waiting", ""],
    ]
      .filter(([key]) => by[key])
      .map(([key, label, cls]) =>
        el("span", { class: `badge ${cls}`, "data-tally": key, text: `${by[key]} ${label}` }),
      ),
  );
  retryButton.hidden = !by.failed || Boolean(active);
}

retryButton.addEventListener("click", () => {
  stopped = "";
  for (const entry of files) {
    if (entry.status === "failed") {
      setStatus(entry, "waiting");
      entry.loaded = 0;
      queue.push(entry);
    }
  }
  pump();
});

function takeChosenFiles() {
  addFiles(input.files);
  input.value = "";
}
input.addEventListener("change", takeChosenFiles);
// Files chosen before this script ran (a slow connection) fired their change event unheard.
if (input.files.length) takeChosenFiles();

// The zone lights up while files are dragged over it; its children fire their own enter and
// leave events, so the highlight follows a count rather than each event.
let dragDepth = 0;
function dragging(over) {
  dropzone.classList.toggle("over", over);
}
dropzone.addEventListener("dragenter", (event) => {
  event.preventDefault();
  dragDepth += 1;
  dragging(true);
});
dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
  dragging(true);
});
dropzone.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) dragging(false);
});
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  dragging(false);
  addFiles(event.dataTransfer.files);
});
// A file dropped beside the zone must not replace the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

window.addEventListener("beforeunload", (event) => {
  if (inFlight || queue.length) {
    event.preventDefault();
    event.returnValue = "";
  }
});

// The event's photos as stored: status and reason for each, paged, filtered, deletable.
const photoList = (() => {
  // ?limit= on the page's address sets the page size (1-200), as on the photo grids.
  const PAGE = Math.min(200, Math.max(1, Number(new URLSearchParams(location.search).get("limit")) || 30));
  const list = document.getElementById("photo-list");
  const more = document.getElementById("more-photos");
  const empty = document.getElementById("photos-empty");
  const total = document.getElementById("photos-total");
  const filters = document.getElementById("photo-filters");
  let filter = "";
  let items = [];
  let cursor = null;
  let counts = null;
  let generation = 0; // answers to an older filter or refresh are dropped

  function url(limit, after) {
    const params = new URLSearchParams({ limit: String(limit) });
    if (filter) params.set("status", filter);
    if (after) params.set("cursor", after);
    return `/api/events/${eventId}/photos?${params}`;
  }

  function uploadedAt(item) {
    const when = new Date(item.uploaded_at);
    const today = when.toDateString() === new Date().toDateString();
    return today
      ? `at ${when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })}`
      : `on ${when.toLocaleDateString(undefined, { day: "numeric", month: "short" })}`;
  }

  function describe(item) {
    const job = item.job;
    const retrying = job && job.status === "queued" && job.attempts > 0 && job.error;
    switch (item.status) {
      case "done":
        return ["badge-success", "Done", plural(item.faces, "face") + " found"];
      case "no_faces":
        return ["", "No faces", "No face large enough to recognise: nobody is matched to it."];
      case "failed":
        return [
          "badge-danger",
          "Failed",
          (job && job.error ? job.error : "No reason was recorded.") +
            (job ? ` (after ${plural(job.attempts, "attempt")})` : ""),
        ];
      case "processing":
        return ["badge-warning", "Processing", "Finding faces…"];
      default:
        return retrying
          ? ["badge-warning", "Retrying", `Attempt ${job.attempts} of ${job.max_attempts} failed: ${job.error}`]
          : ["", "Waiting", `Uploaded ${uploadedAt(item)} · waiting its turn`];
    }
  }

  function row(item) {
    const [badgeClass, label, detail] = describe(item);
    const remove = el("button", { class: "btn btn-sm btn-ghost row-delete", type: "button", text: "Delete", "aria-label": `Delete ${item.filename}` });
    remove.addEventListener("click", () => confirmDelete(node, item));
    const node = el(
      "li",
      { class: "photo-row", "data-photo-id": String(item.id), "data-status": item.status, "data-filename": item.filename },
      el(
        "a",
        { class: "row-thumb", href: item.image_url, target: "_blank", rel: "noopener", "aria-label": `Open ${item.filename}` },
        el("img", { src: item.thumb_url, alt: "", decoding: "async", width: "56", height: "56" }),
      ),
      el(
        "div",
        { class: "row-main" },
        el("div", { class: "row-head" }, el("span", { class: "row-name", title: item.filename, text: item.filename }), el("span", { class: `badge ${badgeClass}`, "data-badge": "", text: label })),
        el("p", { class: item.status === "failed" ? "row-detail row-reason" : "row-detail", "data-detail": "", text: detail }),
      ),
      el("div", { class: "row-actions" }, remove),
    );
    return node;
  }

  function confirmDelete(node, item) {
    if (node.querySelector(".row-confirm")) return;
    const yes = el("button", { class: "btn btn-sm btn-danger", type: "button", text: "Delete" });
    const no = el("button", { class: "btn btn-sm", type: "button", text: "Keep" });
    const box = el(
      "div",
      { class: "row-confirm", role: "group", "aria-label": `Delete ${item.filename}?` },
      el("span", { text: "Delete it for everyone, with its matches?" }),
      el("div", { class: "btn-row" }, yes, no),
    );
    no.addEventListener("click", () => {
      box.remove();
      node.querySelector(".row-delete").focus();
    });
    yes.addEventListener("click", async () => {
      try {
        await busy(yes, "Deleting…", () => api(`/api/photo/${item.id}`, { method: "DELETE" }));
      } catch (error) {
        if (!handleSignedOut(error)) toast(error.detail, "error");
        return;
      }
      items = items.filter((other) => other.id !== item.id);
      node.remove();
      toast(`${item.filename} is deleted.`);
      progress.kick();
    });
    node.append(box);
    yes.focus();
  }

  // Rows are kept while their photo is unchanged: a refresh every few seconds must not
  // rebuild the thumbnails under the organiser's eyes.
  const rows = new Map(); // photo id -> {key, node}

  function rowFor(item) {
    const key = JSON.stringify([item.status, item.faces, item.job]);
    const kept = rows.get(item.id);
    if (kept && kept.key === key) return kept.node;
    const node = row(item);
    rows.set(item.id, { key, node });
    return node;
  }

  function render() {
    const shown = items.map(rowFor);
    const ids = new Set(items.map((item) => item.id));
    for (const id of rows.keys()) if (!ids.has(id)) rows.delete(id);
    list.replaceChildren(...shown);
    more.hidden = !cursor;
    empty.hidden = items.length > 0;
    empty.textContent = filter
      ? "No photo has this status."
      : "No photos yet. They are listed here as soon as they are uploaded, with what was found in each.";
  }

  function showCounts() {
    if (!counts) return;
    total.textContent = String(counts.photos);
    for (const chip of filters.querySelectorAll("[data-filter]")) {
      const key = chip.dataset.filter;
      const count = key ? counts[key] : counts.photos;
      chip.textContent = `${chip.dataset.label || (chip.dataset.label = chip.textContent)} (${count})`;
      // A status with no photo is not offered, unless it is the one shown.
      chip.hidden = Boolean(key) && !count && filter !== key;
    }
    // "All" alone offers no choice.
    filters.hidden = ![...filters.querySelectorAll("[data-filter]")].some((chip) => chip.dataset.filter && !chip.hidden);
    for (const node of document.querySelectorAll("[data-photo-count]")) node.textContent = String(counts.photos);
  }

  async function fetchPage(limit, after) {
    const mine = generation;
    const page = await api(url(limit, after));
    if (mine !== generation) return null;
    counts = page.counts;
    showCounts();
    return page;
  }

  /** The first page again (as many photos as are shown), with fresh statuses; the counts. */
  async function refresh() {
    generation += 1;
    const page = await fetchPage(Math.min(200, Math.max(PAGE, items.length)), null);
    // An open confirmation is not swept away under the organiser's finger.
    if (page && !list.querySelector(".row-confirm")) {
      items = page.items;
      cursor = page.next_cursor;
      render();
    }
    return counts;
  }

  async function loadMore() {
    try {
      const page = await busy(more, "Loading…", () => fetchPage(PAGE, cursor));
      if (!page) return;
      items = items.concat(page.items.filter((item) => !items.some((other) => other.id === item.id)));
      cursor = page.next_cursor;
      render();
    } catch (error) {
      if (!handleSignedOut(error)) toast(error.detail, "error");
    }
  }

  function show(status) {
    filter = status;
    for (const chip of filters.querySelectorAll("[data-filter]")) {
      chip.setAttribute("aria-pressed", String(chip.dataset.filter === status));
    }
    items = [];
    cursor = null;
    refresh().catch((error) => {
      if (!handleSignedOut(error)) toast(error.detail, "error");
    });
  }

  more.addEventListener("click", loadMore);
  filters.addEventListener("click", (event) => {
    const chip = event.target.closest("[data-filter]");
    if (chip) show(chip.dataset.filter);
  });

  return { refresh, show };
})();

// Processing progress: polled while there is work, until the event is complete or has failed.
const progress = (() => {
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const badge = document.getElementById("progress-badge");
  const extra = document.getElementById("progress-extra");
  const figures = document.getElementById("figures");
  const members = document.getElementById("members");
  const failedBox = document.getElementById("failed-box");
  const failedTitle = document.getElementById("failed-title");
  const retry = document.getElementById("retry-processing");
  let timer = 0;

  function setBadge(label, kind) {
    badge.textContent = label;
    badge.className = `badge ${kind}`;
  }

  async function poll() {
    clearTimeout(timer);
    let data;
    let counts;
    try {
      const response = await fetch(`/api/events/${eventId}/progress`, { headers: { accept: "application/json" } });
      if (response.status === 401) {
        location.href = loginUrl();
        return;
      }
      data = await response.json();
      if (!response.ok) throw new Error(data.detail);
      counts = await photoList.refresh();
    } catch (error) {
      if (handleSignedOut(error)) return;
      timer = setTimeout(poll, 5000);
      return;
    }
    const processed = counts.done + counts.no_faces;
    const values = { queued: counts.queued, processing: counts.processing, processed, failed: counts.failed };
    for (const node of figures.querySelectorAll("[data-k]")) node.textContent = values[node.dataset.k];
    figures.querySelector('[data-k="failed"]').parentElement.classList.toggle("bad", counts.failed > 0);
    bar.max = Math.max(counts.photos, 1);
    bar.value = processed + counts.failed;
    const working = data.queued + data.running > 0;
    const complete = counts.photos > 0 && !working;
    bar.classList.toggle("done", complete && !counts.failed);
    bar.classList.toggle("failed", complete && counts.failed > 0);
    const matching = data.matching.queued + data.matching.running;
    if (!counts.photos) {
      text.textContent = "No photos yet. Upload some above: faces are found in the background.";
      setBadge("Idle", "");
    } else if (working) {
      const left = counts.photos - processed - counts.failed;
      text.textContent = left
        ? `${processed + counts.failed} of ${plural(counts.photos, "photo")} processed. Attendees see their photos as soon as each one is done.` +
          (matching ? ` Matching ${plural(matching, "attendee")} who joined.` : "")
        : `All ${plural(counts.photos, "photo")} processed. ` +
          (matching ? `Matching ${plural(matching, "attendee")} who joined with them.` : "Finishing the last jobs…");
      setBadge("Processing", "badge-warning");
    } else if (counts.failed) {
      text.textContent = `${processed} of ${plural(counts.photos, "photo")} processed; ${counts.failed} could not be processed.`;
      setBadge(`${counts.failed} failed`, "badge-danger");
    } else {
      text.textContent =
        `All ${plural(counts.photos, "photo")} processed.` +
        (counts.no_faces ? ` ${counts.no_faces} had no face large enough to recognise.` : "");
      setBadge("Complete", "badge-success");
    }
    failedBox.hidden = !counts.failed;
    failedTitle.textContent = `${plural(counts.failed, "photo")} could not be processed. `;
    retry.textContent = counts.failed === 1 ? "Retry the failed photo" : `Retry ${counts.failed} failed photos`;
    extra.textContent = `${plural(data.faces, "face")} found · ${plural(data.matches, "match", "matches")} with attendees`;
    refreshMembers();
    if (working || inFlight || queue.length) timer = setTimeout(poll, 2000);
  }

  async function refreshMembers() {
    try {
      const response = await fetch(`/api/events/${eventId}`, { headers: { accept: "application/json" } });
      if (!response.ok) return;
      const { counts } = await response.json();
      members.textContent = `${plural(counts.members, "attendee")} joined`;
    } catch {
      // The figure stays as it was; the next poll tries again.
    }
  }

  retry.addEventListener("click", async () => {
    try {
      const { retried } = await busy(retry, "Queuing…", () => api(`/api/events/${eventId}/retry-failed`, { method: "POST" }));
      toast(retried ? `${plural(retried, "photo")} queued again: they are processed in a moment.` : "Nothing to retry: no photo has failed.");
    } catch (error) {
      if (!handleSignedOut(error)) toast(error.detail, "error");
      return;
    }
    poll();
  });

  document.getElementById("show-failed").addEventListener("click", () => {
    photoList.show("failed");
    document.getElementById("photos-card").scrollIntoView({ behavior: "smooth", block: "start" });
  });

  return {
    poll,
    kick() {
      clearTimeout(timer);
      timer = setTimeout(poll, 300);
    },
  };
})();

progress.poll();

// The join link.
const copy = document.getElementById("copy-link");
const link = document.getElementById("join-url");
copy.addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(link.value);
    toast("Join link copied.");
  } catch {
    link.select();
    toast("Select the link and copy it.");
  }
});

// Deleting the event, after a confirmation step.
const deleteStart = document.getElementById("delete-start");
const deleteForm = document.getElementById("delete-confirm");
deleteStart.addEventListener("click", () => {
  deleteStart.hidden = true;
  deleteForm.hidden = false;
  deleteForm.querySelector("input").focus();
});
document.getElementById("delete-cancel").addEventListener("click", () => {
  deleteForm.hidden = true;
  deleteForm.reset();
  showError(deleteForm, "");
  deleteStart.hidden = false;
  deleteStart.focus();
});
onSubmit(deleteForm, async () => {
  if (!deleteForm.elements.sure.checked) {
    showError(deleteForm, "Tick the box to confirm that the event and its photos are to be deleted.");
    return;
  }
  try {
    await busy(deleteForm.querySelector("[type=submit]"), "Deleting…", () => api(`/api/events/${eventId}`, { method: "DELETE" }));
  } catch (error) {
    if (!handleSignedOut(error)) showError(deleteForm, error.detail);
    return;
  }
  location.assign("/?deleted=1");
});

// Who sees the photos: saved as soon as the organiser picks a choice.
const galleryForm = document.getElementById("gallery-form");
const GALLERY_SAVED = {
  own: "Saved: attendees see only their own photos",
  all: "Saved: everyone who joined sees all photos",
};
let galleryChoice = galleryForm.elements.gallery.value;
galleryForm.addEventListener("change", async () => {
  const choice = galleryForm.elements.gallery.value;
  showError(galleryForm, "");
  galleryForm.setAttribute("aria-busy", "true");
  try {
    const changed = await api(`/api/events/${eventId}`, { method: "PATCH", json: { gallery: choice } });
    galleryChoice = changed.gallery;
    toast(GALLERY_SAVED[changed.gallery]);
  } catch (error) {
    // The choice shown must be the one that holds.
    galleryForm.elements.gallery.value = galleryChoice;
    if (!handleSignedOut(error)) showError(galleryForm, error.detail);
  } finally {
    galleryForm.removeAttribute("aria-busy");
  }
});

// Sign-in by emailed link: saved at once; the box shows what holds.
const emailSignIn = document.getElementById("email-sign-in");
if (emailSignIn) {
  const problem = document.getElementById("email-sign-in-error");
  emailSignIn.addEventListener("change", async () => {
    const wanted = emailSignIn.checked;
    problem.hidden = true;
    emailSignIn.disabled = true;
    try {
      const changed = await api(`/api/events/${eventId}`, { method: "PATCH", json: { email_sign_in: wanted } });
      emailSignIn.checked = changed.email_sign_in;
      toast(changed.email_sign_in ? "Saved: guests can sign in with a link sent by email" : "Saved: guests sign in with their password");
    } catch (error) {
      emailSignIn.checked = !wanted;
      if (!handleSignedOut(error)) {
        problem.textContent = error.detail;
        problem.hidden = false;
      }
    } finally {
      emailSignIn.disabled = false;
    }
  });
}

// Joining: open or closed, when the code expires, and a new code. Each change is saved at once;
// what the card says comes from the server's answer, so it shows what holds.
(() => {
  const card = document.getElementById("joining");
  const badge = document.getElementById("joining-badge");
  const state = document.getElementById("joining-state");
  const open = document.getElementById("joining-open");
  const expiryForm = document.getElementById("expiry-form");
  const expires = document.getElementById("code-expires");
  const clear = document.getElementById("expiry-clear");
  const start = document.getElementById("new-code-start");
  const confirmBox = document.getElementById("new-code-confirm");
  const yes = document.getElementById("new-code-yes");
  let current = { joining: card.dataset.joining, code_expires_at: card.dataset.codeExpiresAt || null };
  let timer = 0;

  const when = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

  // A datetime-local field holds the organiser's local time, without a zone.
  function localValue(iso) {
    if (!iso) return "";
    const at = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`;
  }

  function show(event) {
    current = { joining: event.joining, code_expires_at: event.code_expires_at };
    const expiry = current.code_expires_at ? new Date(current.code_expires_at) : null;
    const expired = expiry !== null && expiry <= new Date();
    let label;
    let kind;
    let words;
    if (current.joining === "closed") {
      [label, kind] = ["Closed", "badge-danger"];
      words = "Closed: nobody new can join, with the code, the link or the QR code. Guests who joined keep their photos.";
    } else if (expired) {
      [label, kind] = ["Code expired", "badge-warning"];
      words = `The code expired on ${when(current.code_expires_at)}: nobody new can join. Set a later time, clear it, or make a new code.`;
    } else if (expiry) {
      [label, kind] = ["Open", "badge-success"];
      words = `Open until ${when(current.code_expires_at)}: anyone with the code can join until then.`;
    } else {
      [label, kind] = ["Open", "badge-success"];
      words = "Open: anyone with the code, the link or the QR code can join.";
    }
    badge.textContent = label;
    badge.className = `badge ${kind}`;
    state.textContent = words;
    open.checked = current.joining === "open";
    expires.value = localValue(current.code_expires_at);
    clear.disabled = !current.code_expires_at;
    // The words change by themselves when the code expires with the page open.
    clearTimeout(timer);
    const left = expiry ? expiry - new Date() : 0;
    if (left > 0 && left < 2 ** 31) timer = setTimeout(() => show(current), left + 500);
  }

  async function change(settings, saved) {
    showError(expiryForm, "");
    card.setAttribute("aria-busy", "true");
    try {
      show(await api(`/api/events/${eventId}`, { method: "PATCH", json: settings }));
      toast(saved);
    } catch (error) {
      show(current);
      if (!handleSignedOut(error)) showError(expiryForm, error.detail);
    } finally {
      card.removeAttribute("aria-busy");
    }
  }

  open.addEventListener("change", () =>
    change(
      { joining: open.checked ? "open" : "closed" },
      open.checked ? "Joining is open again." : "Joining is closed: nobody new can join.",
    ),
  );
  onSubmit(expiryForm, () => {
    if (!expires.value) {
      showError(expiryForm, "Pick a day and a time, or use Clear for a code that never expires.");
      return;
    }
    const at = new Date(expires.value);
    change({ code_expires_at: at.toISOString() }, `Saved: the code stops working on ${when(at)}.`);
  });
  clear.addEventListener("click", () => change({ code_expires_at: null }, "Saved: the code never expires."));

  function closeConfirm() {
    confirmBox.hidden = true;
    start.hidden = false;
  }
  start.addEventListener("click", () => {
    start.hidden = true;
    confirmBox.hidden = false;
    yes.focus();
  });
  document.getElementById("new-code-no").addEventListener("click", () => {
    closeConfirm();
    start.focus();
  });
  yes.addEventListener("click", async () => {
    let event;
    try {
      event = await busy(yes, "Making…", () => api(`/api/events/${eventId}/code`, { method: "POST" }));
    } catch (error) {
      if (!handleSignedOut(error)) toast(error.detail, "error");
      return;
    }
    // The code, the link and the QR code shown are the new ones.
    const url = link.value.replace(/[^/]*$/, event.code);
    document.querySelector('[data-testid="event-code"]').textContent = event.code;
    link.value = url;
    const qr = document.querySelector("img.qr");
    qr.src = `/api/events/${eventId}/qr.svg?code=${encodeURIComponent(event.code)}`;
    qr.alt = `QR code that opens ${url}`;
    document.getElementById("qr-download").href = `/api/events/${eventId}/qr.svg?download=1&code=${encodeURIComponent(event.code)}`;
    show(event);
    closeConfirm();
    toast(`New code: ${event.code}. The old code and link no longer work.`);
  });

  show(current);
})();
