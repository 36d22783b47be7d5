// The tenant's pages: jobs, a job, a new job, compare, usage, keys, webhooks.
import { barChart, gauge } from "./charts.js";
import {
  TERMINAL, api, button, content, field, fileIdOf, follow, h, isFinal, isoDay, localPath, page,
  problemText, readOnly, replace, say, statusBadge, table, uid, usd, when,
} from "./lib.js";

const STATUSES = ["queued", "starting", "processing", "succeeded", "failed", "canceled", "aborted"];
// Browsers open at most six HTTP/1.1 connections to a host: a few event streams leave room for
// the page's other requests; jobs beyond them are followed by polling the list.
const MAX_STREAMS = 4;

let modelsCache = null;
async function models() {
  if (!modelsCache) modelsCache = (await api("/v1/models")).data;
  return modelsCache;
}

// --- jobs ----------------------------------------------------------------------------------

async function jobsPage() {
  const root = content();
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s }, s)));
  const model = h("select", { name: "model" }, h("option", { value: "" }, "any"));
  const after = h("input", { type: "date", name: "created_after" });
  const before = h("input", { type: "date", name: "created_before" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs" },
    field("Status", status), field("Model", model), field("Created from", after),
    field("Created before", before), h("button", { type: "submit" }, "Filter"));
  const body = h("tbody", { id: "job-rows" });
  const list = h("table", { id: "jobs" },
    h("caption", {}, "Your jobs, newest first"),
    h("thead", {}, h("tr", {}, ["Job", "Model", "Status", "Created", "Cost"].map(
      (t) => h("th", { scope: "col" }, t)))),
    body);
  replace(root, readOnly ? null : h("p", {}, h("a", { href: "/console/new", class: "button" }, "New job")),
    filters, list);
  for (const m of await models()) model.append(h("option", { value: m.id }, m.id));

  const streams = new Map();
  let poll = null;

  const row = (job) => h("tr", { dataset: { jobId: job.id } },
    h("td", {}, h("a", { href: `/console/jobs/${job.id}` }, job.id.slice(0, 8))),
    h("td", {}, job.model),
    h("td", { class: "status-cell" }, statusBadge(job.status)),
    h("td", {}, when(job.created_at)),
    h("td", {}, usd(job.usage ? job.usage.cost_usd ?? job.usage.estimated_cost_usd : null)));

  const update = (job) => {
    const old = body.querySelector(`tr[data-job-id="${job.id}"]`);
    if (old) old.replaceWith(row(job));
  };

  const query = () => {
    const params = new URLSearchParams({ limit: "50" });
    if (status.value) params.set("status", status.value);
    if (model.value) params.set("model", model.value);
    if (after.value) params.set("created_after", `${after.value}T00:00:00Z`);
    if (before.value) params.set("created_before", `${before.value}T00:00:00Z`);
    return params;
  };

  const load = async () => {
    let jobs;
    try {
      jobs = (await api(`/v1/jobs?${query()}`)).data;
    } catch (error) {
      say(problemText(error), "error");
      return;
    }
    replace(body, jobs.length ? jobs.map(row)
      : h("tr", {}, h("td", { colspan: "5" }, "No jobs match.")));
    const live = jobs.filter((j) => !TERMINAL.has(j.status));
    for (const [id, source] of streams) {
      if (!live.some((j) => j.id === id)) {
        source.close();
        streams.delete(id);
      }
    }
    for (const job of live.slice(0, MAX_STREAMS)) {
      if (streams.has(job.id)) continue;
      streams.set(job.id, follow(job.id, async (event) => {
        try {
          update(await api(`/v1/jobs/${event.job_id}`));
        } catch (error) {
          say(problemText(error), "error");
        }
        if (isFinal(event)) streams.delete(event.job_id);
      }));
    }
    clearTimeout(poll);
    if (live.length > MAX_STREAMS) poll = setTimeout(load, 3000);
  };
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  await load();
}

// --- a job -----------------------------------------------------------------------------------

function mediaFigure(caption, node) {
  return h("figure", { class: "media" }, node, h("figcaption", {}, caption));
}

function jobView(job, events) {
  const result = job.result || {};
  const input = job.input || {};
  const inputVideo = input.video_file_id
    ? h("video", { id: "input-video", controls: true, preload: "auto", src: `/v1/files/${input.video_file_id}` })
    : h("p", { id: "input-video-link" }, "Given as a URL (the console plays only what the gateway stores): ",
      h("code", {}, input.video_url || "—"));
  const resultVideo = result.video
    ? h("video", { id: "result-video", controls: true, preload: "auto", src: localPath(result.video.url) })
    : h("p", {}, TERMINAL.has(job.status) ? "No result video." : "The result appears here when the job succeeds.");
  const audioId = result.audio ? fileIdOf(result.audio.url) : null;
  const sound = result.audio
    ? h("div", { class: "sound" },
      h("audio", { id: "result-audio", controls: true, preload: "auto", src: localPath(result.audio.url),
        "aria-label": "The generated audio" }),
      h("img", { id: "waveform", src: `/console/media/${audioId}/waveform.png`, width: "800", height: "120",
        alt: "Waveform of the generated audio" }),
      h("img", { id: "spectrogram", src: `/console/media/${audioId}/spectrogram.png`, width: "800", height: "256",
        alt: "Spectrogram of the generated audio (time across, frequency up)" }))
    : null;
  const usage = job.usage || {};
  const facts = [
    ["Status", statusBadge(job.status)], ["Model", job.model], ["Created", when(job.created_at)],
    ["Started", when(job.started_at)], ["Completed", when(job.completed_at)],
    ["Cost", usage.cost_usd ? usd(usage.cost_usd) : `${usd(usage.estimated_cost_usd)} (estimate)`],
    ["Units", usage.units ? `${usage.units} ${usage.unit}` : "—"],
    ["Prompt used", result.prompt || input.prompt || "—"],
  ];
  const error = job.error
    ? h("section", { class: "error-box", "aria-labelledby": "error-title" },
      h("h2", { id: "error-title" }, `Error: ${job.error.code}`), h("p", {}, job.error.message),
      h("pre", {}, JSON.stringify(job.error, null, 2)))
    : null;
  return [
    h("dl", { class: "facts", id: "job-facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    !readOnly && !TERMINAL.has(job.status)
      ? button("Cancel job", async (e) => {
        e.target.disabled = true;
        try {
          await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
          say("Cancel requested.");
        } catch (err) {
          say(problemText(err), "error");
        }
      }, { id: "cancel-job" })
      : null,
    error,
    h("section", { "aria-labelledby": "videos-title" }, h("h2", { id: "videos-title" }, "Input and result"),
      h("div", { class: "side-by-side" }, mediaFigure("Input video", inputVideo),
        mediaFigure("Result video", resultVideo))),
    sound ? h("section", { "aria-labelledby": "sound-title" }, h("h2", { id: "sound-title" }, "Generated audio"), sound) : null,
    job.segments ? segmentsTable(job.segments) : null,
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"),
      h("ol", { class: "timeline", id: "timeline" }, events.map(eventItem))),
    h("section", { "aria-labelledby": "logs-title" }, h("h2", { id: "logs-title" }, "Logs"),
      (job.logs || []).length
        ? h("pre", { class: "logs", id: "logs", tabindex: "0" },
          job.logs.map((l) => `${l.timestamp || ""} ${l.level || ""} ${l.message}\n`))
        : h("p", {}, "No logs.")),
  ];
}

// A video longer than the model takes ran as segments: each its own request (and job page).
function segmentsTable(segments) {
  return h("section", { "aria-labelledby": "segments-title" },
    h("h2", { id: "segments-title" }, `Segments (${segments.length})`),
    h("table", { id: "segments" },
      h("thead", {}, h("tr", {}, ["#", "From", "To", "Status", "Runs", "Cost", "Error"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, segments.map((s) => h("tr", {},
        h("td", {}, h("a", { href: `/console/jobs/${s.job_id}` }, String(s.index))),
        h("td", {}, `${s.start_s.toFixed(2)} s`), h("td", {}, `${s.end_s.toFixed(2)} s`),
        h("td", {}, statusBadge(s.status)), h("td", {}, String(s.tries)),
        h("td", {}, s.cost_usd ? usd(s.cost_usd) : "—"),
        h("td", {}, s.error ? s.error.code : "—"))))));
}

function eventItem(event) {
  const status = event.data && event.data.status ? ` → ${event.data.status}` : "";
  return h("li", { dataset: { seq: String(event.seq) } },
    h("time", { datetime: event.created_at }, when(event.created_at)), " ",
    h("strong", {}, event.type), status);
}

async function jobPage() {
  const id = page.id;
  const root = content();
  const render = async () => {
    const [job, events] = await Promise.all([
      api(`/v1/jobs/${id}`), api(`/v1/jobs/${id}/events?limit=100`),
    ]);
    replace(root, jobView(job, events.data));
    return job;
  };
  const job = await render();
  if (!TERMINAL.has(job.status)) {
    follow(id, async () => {
      try {
        await render();
      } catch (error) {
        say(problemText(error), "error");
      }
    });
  }
}

// --- a new job, and compare ---------------------------------------------------------------------

function sourceControls() {
  const name = uid("source");
  const upload = h("input", { type: "radio", name, value: "upload", checked: true });
  const url = h("input", { type: "radio", name, value: "url" });
  const file = h("input", { type: "file", accept: "video/*", name: "file" });
  const link = h("input", { type: "url", name: "video_url", placeholder: "https://…/clip.mp4" });
  const set = h("fieldset", {}, h("legend", {}, "Video"),
    field("Upload a file", upload), field("Video file", file),
    field("Give a URL", url), field("Video URL", link));
  let uploaded = null;
  return {
    node: set,
    async input() {
      if (url.checked) {
        if (!link.value) throw new Error("Give the video's URL.");
        return { video_url: link.value };
      }
      const chosen = file.files && file.files[0];
      if (!chosen) throw new Error("Choose a video file.");
      if (!uploaded || uploaded.file !== chosen) {
        say(`Uploading ${chosen.name}…`);
        const form = new FormData();
        form.append("file", chosen);
        const stored = await api("/v1/files", { method: "POST", body: form });
        uploaded = { file: chosen, id: stored.id };
      }
      return { video_file_id: uploaded.id };
    },
  };
}

function kindOf(schema) {
  if (schema.type) return schema;
  const option = (schema.anyOf || []).find((s) => s.type && s.type !== "null");
  return option || { type: "string" };
}

function paramControls(model) {
  const props = (model.input_schema || {}).properties || {};
  const controls = [];
  for (const [name, schema] of Object.entries(props)) {
    if (name === "video_url" || name === "video_file_id") continue;
    const kind = kindOf(schema);
    let control;
    if (kind.type === "boolean") {
      control = h("input", { type: "checkbox", name, checked: schema.default === true });
    } else if (kind.type === "integer" || kind.type === "number") {
      control = h("input", { type: "number", name, min: kind.minimum, max: kind.maximum,
        step: kind.type === "integer" ? "1" : "any" });
    } else if ((kind.maxLength || 0) > 200) {
      control = h("textarea", { name, maxlength: kind.maxLength, rows: "3" });
    } else {
      control = h("input", { type: "text", name, maxlength: kind.maxLength });
    }
    controls.push({ name, kind, node: field(schema.title || name, control, schema.description), control });
  }
  return controls;
}

function paramValues(controls) {
  const values = {};
  for (const { name, kind, control } of controls) {
    if (kind.type === "boolean") {
      if (control.checked) values[name] = true;
    } else if (control.value !== "") {
      values[name] = kind.type === "integer" || kind.type === "number" ? Number(control.value) : control.value;
    }
  }
  return values;
}

async function budgetLine() {
  const me = await api("/v1/me");
  return me.budget ? `${usd(me.budget.remaining_usd)} of ${usd(me.budget.budget_usd)} left this period`
    : "No budget set.";
}

async function newJobPage() {
  const root = content();
  if (readOnly) {
    replace(root, h("p", {}, "This key is read-only: it cannot create jobs."));
    return;
  }
  const all = await models();
  const source = sourceControls();
  const select = h("select", { name: "model", required: true },
    all.map((m) => h("option", { value: m.id }, `${m.id}${m.aliases && m.aliases.length ? ` (${m.aliases.join(", ")})` : ""}`)));
  const params = h("fieldset", { id: "params" }, h("legend", {}, "Parameters"));
  const estimate = h("output", { id: "estimate", "aria-live": "polite" });
  const remaining = h("p", { id: "remaining" }, await budgetLine());
  let controls = [];
  const drawParams = () => {
    const model = all.find((m) => m.id === select.value);
    controls = paramControls(model);
    replace(params, h("legend", {}, "Parameters"), controls.map((c) => c.node));
  };
  select.addEventListener("change", drawParams);
  drawParams();
  const body = async () => ({ model: select.value, input: { ...(await source.input()), ...paramValues(controls) } });
  const estimateButton = button("Estimate", async () => {
    try {
      const est = await api("/v1/jobs?dry_run=true", { method: "POST", json: await body() });
      estimate.textContent = `Estimate ${usd(est.estimated_cost_usd)} (${est.units} ${est.unit}, ${est.basis})`
        + (est.allowed ? "" : ` — refused: ${est.reason}`);
      say("");
    } catch (error) {
      say(problemText(error), "error");
    }
  }, { id: "estimate-button" });
  const form = h("form", { id: "new-job", class: "card" }, source.node, field("Model", select), params,
    h("div", { class: "actions" }, estimateButton, h("button", { type: "submit" }, "Create job")),
    estimate, remaining);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const job = await api("/v1/jobs", {
        method: "POST", json: await body(), headers: { "Idempotency-Key": crypto.randomUUID() },
      });
      window.location.assign(`/console/jobs/${job.id}`);
    } catch (error) {
      say(problemText(error), "error");
    }
  });
  replace(root, form);
}

async function comparePage() {
  const root = content();
  if (readOnly) {
    replace(root, h("p", {}, "This key is read-only: it cannot create jobs."));
    return;
  }
  const all = await models();
  const source = sourceControls();
  const boxes = all.map((m) => ({ id: m.id, box: h("input", { type: "checkbox", name: "models", value: m.id }) }));
  const prompt = h("input", { type: "text", name: "prompt", maxlength: "200" });
  const results = h("div", { class: "side-by-side", id: "compare-results" });
  const form = h("form", { class: "card" }, source.node,
    h("fieldset", {}, h("legend", {}, "Models (two or more)"), boxes.map((b) => field(b.id, b.box))),
    field("Prompt (optional, the same for each)", prompt),
    h("button", { type: "submit" }, "Run on each model"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const chosen = boxes.filter((b) => b.box.checked).map((b) => b.id);
    if (chosen.length < 2) {
      say("Pick two or more models.", "error");
      return;
    }
    try {
      const input = await source.input();
      if (prompt.value) input.prompt = prompt.value;
      replace(results);
      for (const model of chosen) {
        const job = await api("/v1/jobs", { method: "POST", json: { model, input } });
        const column = h("section", { class: "column", "aria-label": model });
        results.append(column);
        const draw = async () => {
          const current = await api(`/v1/jobs/${job.id}`);
          const r = current.result || {};
          const id = r.audio ? fileIdOf(r.audio.url) : null;
          replace(column, h("h2", {}, model), statusBadge(current.status),
            h("p", {}, h("a", { href: `/console/jobs/${job.id}` }, "Details")),
            r.video ? h("video", { controls: true, preload: "auto", src: localPath(r.video.url) }) : null,
            r.audio ? h("audio", { controls: true, src: localPath(r.audio.url), "aria-label": `${model} audio` }) : null,
            id ? h("img", { src: `/console/media/${id}/waveform.png`, alt: `Waveform, ${model}`, width: "800", height: "120" }) : null,
            current.error ? h("p", { class: "error" }, `${current.error.code}: ${current.error.message}`) : null);
        };
        await draw();
        follow(job.id, () => draw().catch((e) => say(problemText(e), "error")));
      }
      say("");
    } catch (error) {
      say(problemText(error), "error");
    }
  });
  replace(root, form, results);
}

// --- usage -------------------------------------------------------------------------------------

export function usageControls(onChange, csvPath) {
  const today = new Date();
  const first = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1));
  const tomorrow = new Date(today.getTime() + 86400000);
  const from = h("input", { type: "date", name: "from", value: isoDay(first) });
  const to = h("input", { type: "date", name: "to", value: isoDay(tomorrow) });
  const csv = h("a", { class: "button", id: "csv-link", download: "" }, "Export CSV");
  const range = () => new URLSearchParams({ from: from.value, to: to.value });
  const form = h("form", { class: "filters" }, field("From", from), field("To (exclusive)", to),
    h("button", { type: "submit" }, "Show"), csv);
  const refresh = () => {
    csv.setAttribute("href", `${csvPath}?${range()}`);
    onChange(range());
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    refresh();
  });
  return { form, refresh };
}

export function usageCharts(byDay, byModel) {
  const sum = (groups, key) => {
    const totals = new Map();
    for (const g of groups) totals.set(g[key], (totals.get(g[key]) || 0) + Number(g.cost_usd || 0));
    return [...totals].map(([label, value]) => ({ label, value }));
  };
  const days = sum(byDay.data, "day");
  const perModel = sum(byModel.data, "model");
  return [
    h("p", {}, `Total: ${usd(byDay.total_cost_usd)}`),
    h("h2", {}, "Cost by day"),
    barChart({ label: `Cost by day, USD (${days.length} days)`, points: days }),
    h("h2", {}, "Cost by model"),
    barChart({ label: `Cost by model, USD (${perModel.length} models)`, points: perModel }),
    table(["Model", "Jobs", "Cost"], byModel.data.map((g) => h("tr", {},
      h("td", {}, g.model), h("td", {}, String(g.jobs)), h("td", {}, usd(g.cost_usd)))), "By model"),
  ];
}

async function usagePage() {
  const root = content();
  const out = h("div", { id: "usage" });
  const { form, refresh } = usageControls(async (range) => {
    try {
      const [me, byDay, byModel] = await Promise.all([
        api("/v1/me"), api(`/v1/usage?${range}&group_by=day`), api(`/v1/usage?${range}&group_by=model`),
      ]);
      const b = me.budget;
      replace(out,
        h("h2", {}, "Budget"),
        b ? [gauge({ label: `Budget: ${usd(b.spent_usd)} spent and ${usd(b.reserved_usd)} reserved of ${usd(b.budget_usd)}`,
          budget: Number(b.budget_usd), spent: Number(b.spent_usd), reserved: Number(b.reserved_usd) }),
        h("p", {}, `${usd(b.remaining_usd)} remaining; the period resets ${when(b.resets_at)}.`)]
          : h("p", {}, "No budget is set for this tenant."),
        usageCharts(byDay, byModel));
    } catch (error) {
      say(problemText(error), "error");
    }
  }, "/v1/usage/export.csv");
  replace(root, form, out);
  refresh();
}

// --- keys ----------------------------------------------------------------------------------------

function secretBox(label, secret) {
  return h("div", { class: "secret", role: "alert" }, h("p", {}, `${label} — shown once, copy it now:`),
    h("code", { class: "secret-value", tabindex: "0" }, secret));
}

async function keysPage() {
  const root = content();
  const notice = h("div", { id: "key-notice" });
  const body = h("tbody", { id: "key-rows" });
  const load = async () => {
    const keys = (await api("/v1/keys")).data;
    replace(body, keys.map((k) => {
      const revoked = Boolean(k.revoked_at);
      const grace = h("input", { type: "number", min: "0", value: "3600", class: "short" });
      return h("tr", { dataset: { keyId: k.id, prefix: k.prefix } },
        h("td", {}, h("code", {}, `${k.prefix}…`)), h("td", {}, k.name || "—"),
        h("td", {}, k.read_only ? "read-only" : "read-write"), h("td", {}, when(k.created_at)),
        h("td", {}, when(k.last_used_at)), h("td", {}, when(k.expires_at)),
        h("td", { class: "key-state" }, revoked ? `revoked ${when(k.revoked_at)}` : "active"),
        h("td", {}, readOnly || revoked ? null : [
          button("Revoke", async () => {
            if (!window.confirm(`Revoke ${k.prefix}…? It stops working at once.`)) return;
            try {
              await api(`/v1/keys/${k.id}/revoke`, { method: "POST" });
              say(`Revoked ${k.prefix}…`);
              await load();
            } catch (error) {
              say(problemText(error), "error");
            }
          }, { "aria-label": `Revoke ${k.prefix}`, class: "danger" }),
          " ", field(`Grace for ${k.prefix} (s)`, grace),
          button("Rotate", async () => {
            try {
              const done = await api(`/v1/keys/${k.id}/rotate`, { method: "POST", json: { grace_seconds: Number(grace.value) } });
              replace(notice, secretBox(`New key replacing ${k.prefix}…`, done.new.key));
              await load();
            } catch (error) {
              say(problemText(error), "error");
            }
          }, { "aria-label": `Rotate ${k.prefix}` }),
        ]));
    }));
  };
  const name = h("input", { type: "text", name: "name", maxlength: "200" });
  const ro = h("input", { type: "checkbox", name: "read_only" });
  const form = h("form", { class: "card", id: "create-key" }, h("h2", {}, "Create a key"),
    field("Name", name), field("Read-only (can only read)", ro), h("button", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const created = await api("/v1/keys", { method: "POST", json: { name: name.value || null, read_only: ro.checked } });
      replace(notice, secretBox(`Key ${created.prefix}…`, created.key));
      name.value = "";
      await load();
    } catch (error) {
      say(problemText(error), "error");
    }
  });
  replace(root, readOnly ? null : form, notice,
    table(["Key", "Name", "Scope", "Created", "Last used", "Expires", "State", "Actions"], body, "Your tenant's keys"));
  await load();
}

// --- webhooks ------------------------------------------------------------------------------------

const HOOK_EVENTS = ["job.started", "job.processing", "job.logs", "job.succeeded", "job.failed",
  "job.canceled", "job.aborted", "budget.threshold_crossed"];

async function webhooksPage() {
  const root = content();
  const notice = h("div");
  const list = h("div", { id: "endpoints" });
  const deliveries = h("div", { id: "deliveries" });
  const showDeliveries = async (endpoint) => {
    const found = (await api(`/v1/webhook-endpoints/${endpoint.id}/deliveries?limit=50`)).data;
    replace(deliveries, h("h2", {}, `Deliveries to ${endpoint.url}`), found.length
      ? table(["Event", "Status", "Created", "Attempts", ""], found.map((d) => h("tr", {},
        h("td", {}, d.event), h("td", {}, d.status), h("td", {}, when(d.created_at)),
        h("td", {}, d.attempts.map((a) => `${a.status_code ?? "—"} ${a.duration_ms} ms${a.error ? ` ${a.error}` : ""}`).join("; ") || "—"),
        h("td", {}, readOnly ? null : button("Redeliver", async () => {
          try {
            await api(`/v1/webhook-endpoints/${endpoint.id}/deliveries/${d.id}/redeliver`, { method: "POST" });
            say("Redelivery queued.");
            await showDeliveries(endpoint);
          } catch (error) {
            say(problemText(error), "error");
          }
        }, { "aria-label": `Redeliver ${d.event} ${d.id.slice(0, 8)}` })))))
      : h("p", {}, "No deliveries yet."));
  };
  const load = async () => {
    const endpoints = (await api("/v1/webhook-endpoints")).data;
    replace(list, endpoints.length ? table(["URL", "Events", "Enabled", ""], endpoints.map((ep) => h("tr", {},
      h("td", {}, ep.url), h("td", {}, (ep.events || ["every event"]).join(", ")),
      h("td", {}, ep.enabled ? "yes" : `no${ep.disabled_reason ? ` (${ep.disabled_reason})` : ""}`),
      h("td", {}, button("Deliveries", () => showDeliveries(ep).catch((e) => say(problemText(e), "error")), { "aria-label": `Deliveries to ${ep.url}` }),
        readOnly ? null : [" ", button(ep.enabled ? "Pause" : "Enable", async () => {
          try {
            await api(`/v1/webhook-endpoints/${ep.id}`, { method: "PATCH", json: { enabled: !ep.enabled } });
            await load();
          } catch (error) {
            say(problemText(error), "error");
          }
        }, { "aria-label": `${ep.enabled ? "Pause" : "Enable"} ${ep.url}` }), " ",
        button("Send a ping", async () => {
          try {
            await api(`/v1/webhook-endpoints/${ep.id}/test`, { method: "POST" });
            say("Ping queued.");
          } catch (error) {
            say(problemText(error), "error");
          }
        }, { "aria-label": `Ping ${ep.url}` })]))), "Your endpoints")
      : h("p", {}, "No webhook endpoints yet."));
  };
  const url = h("input", { type: "url", name: "url", required: true, placeholder: "https://example.com/hooks" });
  const boxes = HOOK_EVENTS.map((ev) => ({ ev, box: h("input", { type: "checkbox", value: ev }) }));
  const form = h("form", { class: "card" }, h("h2", {}, "Add an endpoint"), field("URL", url),
    h("fieldset", {}, h("legend", {}, "Events (none checked: every event)"), boxes.map((b) => field(b.ev, b.box))),
    h("button", { type: "submit" }, "Add endpoint"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const events = boxes.filter((b) => b.box.checked).map((b) => b.ev);
    try {
      const created = await api("/v1/webhook-endpoints", { method: "POST", json: { url: url.value, events: events.length ? events : null } });
      replace(notice, secretBox("Signing secret", created.secret));
      await load();
    } catch (error) {
      say(problemText(error), "error");
    }
  });
  replace(root, readOnly ? null : form, notice, list, deliveries);
  await load();
}

export const TENANT_PAGES = {
  jobs: jobsPage, job: jobPage, new: newJobPage, compare: comparePage, usage: usagePage,
  keys: keysPage, webhooks: webhooksPage,
};
