// The organiser's event page: parallel batched uploads with progress and retries, processing
// progress, and the join link.
import { csrfToken, el, formatBytes, loginUrl, plural, toast } from "./common.js";

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

input.addEventListener("change", () => {
  addFiles(input.files);
  input.value = "";
});

for (const name of ["dragenter", "dragover"]) {
  dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    dropzone.classList.add("over");
  });
}
for (const name of ["dragleave", "drop"]) {
  dropzone.addEventListener(name, () => dropzone.classList.remove("over"));
}
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
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

// Processing progress: polled while there is work, until the event is complete.
const progress = (() => {
  const bar = document.getElementById("progress-bar");
  const text = document.getElementById("progress-text");
  const badge = document.getElementById("progress-badge");
  const extra = document.getElementById("progress-extra");
  const figures = document.getElementById("figures");
  const members = document.getElementById("members");
  let timer = 0;

  async function poll() {
    clearTimeout(timer);
    let data;
    try {
      const response = await fetch(`/api/events/${eventId}/progress`, { headers: { accept: "application/json" } });
      if (response.status === 401) {
        location.href = loginUrl();
        return;
      }
      data = await response.json();
      if (!response.ok) throw new Error(data.detail);
    } catch {
      timer = setTimeout(poll, 5000);
      return;
    }
    for (const node of figures.querySelectorAll("[data-k]")) node.textContent = data[node.dataset.k];
    figures.querySelector('[data-k="failed"]').parentElement.classList.toggle("bad", data.failed > 0);
    const finished = data.done + data.failed;
    bar.max = Math.max(data.photos, 1);
    bar.value = finished;
    const working = data.queued + data.running > 0;
    const complete = data.photos > 0 && !working;
    bar.classList.toggle("done", complete);
    if (!data.photos) {
      text.textContent = "No photos yet. Upload some above: faces are found in the background.";
      badge.textContent = "Idle";
      badge.className = "badge";
    } else if (complete) {
      text.textContent = `All ${plural(data.photos, "photo")} processed.` + (data.failed ? ` ${data.failed} could not be processed; an admin can retry ${data.failed === 1 ? "it" : "them"}.` : "");
      badge.textContent = "Complete";
      badge.className = "badge badge-success";
    } else {
      text.textContent = `${finished} of ${plural(data.photos, "photo")} processed. Attendees see their photos as soon as each one is done.`;
      badge.textContent = "Processing";
      badge.className = "badge badge-warning";
    }
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
