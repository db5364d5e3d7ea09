// The admin page: queue figures, timings and cache hit rates (polled), failed jobs with retry
// (one or all), and every event and account, paged.
import { api, busy, el, handleSignedOut, plural, toast } from "./common.js";

const REFRESH_MS = 3000;
const errorBox = document.getElementById("admin-error");
const updated = document.getElementById("updated");
let timer = 0;
let lastFailed = "";

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function renderStats({ queue, cache, live_pages: live }) {
  for (const node of document.querySelectorAll("#queue [data-k]")) {
    node.textContent = queue[node.dataset.k] ?? 0;
  }
  // Red only when something failed: a red 0 reads as an alarm.
  document.getElementById("failed-figure").classList.toggle("bad", queue.total_failed > 0);
  document.getElementById("workers").textContent = `${queue.workers_active ?? 0} of ${plural(queue.workers ?? 0, "worker")} busy`;
  document.getElementById("enqueued").textContent = `${queue.total_enqueued} jobs enqueued in all.`;
  if (live) {
    document.getElementById("live-pages").textContent =
      `${plural(live.open, "live page")} open on this server, of ${live.capacity} it accepts.`;
  }

  const timings = Object.entries(queue.timings || {}).filter(([, t]) => t.count > 0);
  const tbody = document.getElementById("timings");
  if (timings.length) {
    tbody.replaceChildren(
      ...timings.map(([kind, t]) =>
        el(
          "tr",
          {},
          el("td", { text: kind.replace("_", " ") }),
          el("td", { class: "num", text: String(t.count) }),
          el("td", { class: "num", text: seconds(t.avg_s) }),
          el("td", { class: "num wide-only", text: seconds(t.p50_s) }),
          el("td", { class: "num", text: seconds(t.p95_s) }),
        ),
      ),
    );
  }

  document.getElementById("caches").replaceChildren(
    ...Object.entries(cache).map(([name, c]) =>
      el(
        "tr",
        { "data-cache": name },
        el("td", { text: name.replace("_", " ") }),
        el("td", { class: "num", text: String(c.size) }),
        el("td", { class: "num wide-only", text: String(c.hits) }),
        el("td", { class: "num wide-only", text: String(c.misses) }),
        el(
          "td",
          {},
          el(
            "div",
            { class: "rate" },
            el("progress", { max: "1", value: String(c.hit_rate) }),
            el("span", { text: `${Math.round(c.hit_rate * 100)}%` }),
          ),
        ),
      ),
    ),
  );
}

function renderFailed(items) {
  const key = JSON.stringify(items.map((job) => [job.id, job.attempts, job.error]));
  if (key === lastFailed) return;
  lastFailed = key;
  const badge = document.getElementById("failed-count");
  badge.textContent = String(items.length);
  badge.className = items.length ? "badge badge-danger" : "badge";
  document.getElementById("retry-all").hidden = items.length === 0;
  document.getElementById("no-failed").hidden = items.length > 0;
  document.getElementById("failed").replaceChildren(
    ...items.map((job) => {
      const retry = el("button", { class: "btn btn-sm", type: "button", text: "Retry" });
      retry.addEventListener("click", () => retryJob(job.id, retry));
      // What a person recognises: the file and the event, or the attendee; ids come second.
      const subject =
        job.kind === "process_photo"
          ? job.filename || `Photo ${job.photo_id ?? ""} (deleted)`
          : `Matching ${job.user_name || `attendee ${job.user_id}`}`;
      const where = job.event_id
        ? el("a", { href: `/events/${job.event_id}`, text: job.event_name || `event ${job.event_id}` })
        : null;
      return el(
        "li",
        { class: "job", "data-job-id": String(job.id) },
        el(
          "div",
          { class: "job-head" },
          el("strong", { class: "job-subject", text: subject }),
          where ? el("span", { class: "job-event" }, " in ", where) : null,
          el("div", {
            class: "muted small",
            text: [`Job ${job.id}`, job.kind.replace("_", " "), plural(job.attempts, "attempt"), job.finished_at ? new Date(job.finished_at).toLocaleString() : ""]
              .filter(Boolean)
              .join(" · "),
          }),
        ),
        retry,
        el("div", { class: "job-error", text: job.error || "No error recorded." }),
      );
    }),
  );
}

document.getElementById("retry-all").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  try {
    const { retried } = await busy(button, "Queuing…", () => api("/api/admin/jobs/retry-failed", { method: "POST" }));
    toast(`${plural(retried, "failed job")} queued again.`);
  } catch (error) {
    if (!handleSignedOut(error)) toast(error.detail, "error");
    return;
  }
  refresh();
});

async function retryJob(jobId, button) {
  button.disabled = true;
  try {
    await api(`/api/admin/jobs/${jobId}/retry`, { method: "POST" });
    toast(`Job ${jobId} is queued again.`);
    refresh();
  } catch (error) {
    if (!handleSignedOut(error)) toast(error.detail, "error");
    button.disabled = false;
  }
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [stats, failed] = await Promise.all([
      api("/api/admin/queue/stats"),
      api("/api/admin/jobs?status=failed&limit=50"),
    ]);
    renderStats(stats);
    renderFailed(failed.items);
    errorBox.hidden = true;
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    if (handleSignedOut(error)) return;
    errorBox.textContent = `The figures could not be loaded: ${error.detail} They refresh by themselves.`;
    errorBox.hidden = false;
  }
  timer = setTimeout(refresh, document.hidden ? REFRESH_MS * 5 : REFRESH_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});

document.getElementById("clear-caches").addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    const { cleared } = await api("/api/admin/cache/clear", { method: "POST" });
    toast(`Caches cleared: ${cleared.join(", ").replaceAll("_", " ")}.`);
    refresh();
  } catch (error) {
    if (!handleSignedOut(error)) toast(error.detail, "error");
  } finally {
    button.disabled = false;
  }
});

// Every event and every account, newest first, a page at a time.
function pagedTable({ url, body, more, row, empty, columns }) {
  let cursor = null;
  let first = true;
  async function load() {
    const params = new URLSearchParams({ limit: "25" });
    if (cursor) params.set("cursor", cursor);
    let page;
    try {
      page = await busy(more, "Loading…", () => api(`${url}?${params}`));
    } catch (error) {
      if (!handleSignedOut(error)) toast(error.detail, "error");
      return;
    }
    const rows = page.items.map(row);
    if (first) {
      body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: String(columns), class: "muted", text: empty }))]));
    } else {
      body.append(...rows);
    }
    first = false;
    cursor = page.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", load);
  load();
}

function shortDate(value) {
  return value ? new Date(value).toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" }) : "";
}

pagedTable({
  url: "/api/admin/events",
  body: document.getElementById("events"),
  more: document.getElementById("more-events"),
  empty: "No event yet.",
  columns: 5,
  row: (event) =>
    el(
      "tr",
      { "data-event-id": String(event.id) },
      el("td", {}, el("a", { href: `/events/${event.id}`, text: event.name }), el("div", { class: "muted small mono", text: event.code })),
      el("td", { class: "wide-only" }, el("div", { text: event.organiser.name }), el("div", { class: "muted small", text: event.organiser.email })),
      el("td", { class: "wide-only", text: event.date ? shortDate(event.date) : "–" }),
      el("td", { class: "num", text: String(event.counts.photos) }),
      el("td", { class: "num", text: String(event.counts.members) }),
    ),
});

pagedTable({
  url: "/api/admin/users",
  body: document.getElementById("users"),
  more: document.getElementById("more-users"),
  empty: "No account yet.",
  columns: 7,
  row: (user) =>
    el(
      "tr",
      { "data-user-id": String(user.id) },
      el(
        "td",
        {},
        el("div", { text: user.name }),
        el("div", { class: "muted small narrow-only cell-wrap", text: user.email }),
        el("div", { class: "muted small narrow-only", text: `${user.events_organised} organised · ${user.events_joined} joined` }),
      ),
      el("td", { class: "wide-only", text: user.email }),
      el("td", {}, el("span", { class: user.role === "admin" ? "badge badge-primary" : "badge", text: user.role })),
      el("td", { class: "wide-only", text: user.has_selfie ? "Yes" : "No" }),
      el("td", { class: "num wide-only", text: String(user.events_organised) }),
      el("td", { class: "num wide-only", text: String(user.events_joined) }),
      el("td", { class: "wide-only", text: shortDate(user.created_at) }),
    ),
});

refresh();
