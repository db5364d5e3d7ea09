// The admin page: queue figures and cache hit rates (polled), failed jobs with retry.
import { api, el, handleSignedOut, plural, toast } from "./common.js";

const REFRESH_MS = 3000;
const errorBox = document.getElementById("admin-error");
const updated = document.getElementById("updated");
let timer = 0;
let lastFailed = "";

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function renderStats({ queue, cache }) {
  for (const node of document.querySelectorAll("#queue [data-k]")) {
    node.textContent = queue[node.dataset.k] ?? 0;
  }
  document.getElementById("workers").textContent = `${queue.workers_active ?? 0} of ${plural(queue.workers ?? 0, "worker")} busy`;
  document.getElementById("enqueued").textContent = `${queue.total_enqueued} jobs enqueued in all.`;

  const timings = Object.entries(queue.timings || {});
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
  document.getElementById("failed-count").textContent = String(items.length);
  document.getElementById("no-failed").hidden = items.length > 0;
  document.getElementById("failed").replaceChildren(
    ...items.map((job) => {
      const retry = el("button", { class: "btn btn-sm", type: "button", text: "Retry" });
      retry.addEventListener("click", () => retryJob(job.id, retry));
      const what = job.photo_id ? `photo ${job.photo_id}` : job.user_id ? `attendee ${job.user_id}` : "";
      return el(
        "li",
        { class: "job", "data-job-id": String(job.id) },
        el(
          "div",
          {},
          el("strong", { text: `Job ${job.id} · ${job.kind.replace("_", " ")}` }),
          el("div", {
            class: "muted small",
            text: [what, job.event_id ? `event ${job.event_id}` : "", plural(job.attempts, "attempt"), job.finished_at ? new Date(job.finished_at).toLocaleString() : ""]
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

refresh();
