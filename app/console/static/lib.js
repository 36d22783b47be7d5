// The console's small toolkit: DOM building (text only, never HTML strings), the JSON API
// called same-origin with the session cookie (and its CSRF token on every mutation), formats.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

export const page = document.body.dataset;
export const readOnly = page.readOnly === "true";
export const TERMINAL = new Set(["succeeded", "failed", "canceled", "aborted"]);
export const JOB_EVENTS = [
  "job.created", "job.submitting", "job.started", "job.processing", "job.logs",
  "job.cancel_requested", "job.submit_retrying", "job.submit_ambiguous", "job.attached",
  "job.succeeded", "job.failed", "job.canceled", "job.aborted",
];

export class ApiError extends Error {
  constructor(problem, status) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.problem = problem || {};
    this.status = status;
  }
}

export async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (!["GET", "HEAD"].includes(method)) sent["X-CSRF-Token"] = csrf;
  let payload = body;
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  const response = await fetch(path, {
    method, headers: sent, body: payload, credentials: "same-origin", cache: "no-store",
  });
  if (response.status === 401) {
    window.location.assign("/console/sign-in");
    throw new ApiError({ detail: "Signed out." }, 401);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(data, response.status);
  return data;
}

let ids = 0;
export function uid(prefix = "f") {
  ids += 1;
  return `${prefix}-${ids}`;
}

// h("p", {class: "x", onclick: fn}, "text", child) — attributes set as attributes, children
// appended as nodes or text.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function content() {
  return document.getElementById("content");
}

export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function say(message, kind = "info") {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = message || "";
  status.className = message ? `status-${kind}` : "";
}

export function problemText(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  const p = error.problem;
  const where = p.param ? ` (${p.param})` : "";
  return `${p.detail || error.message}${where}${p.code ? ` [${p.code}]` : ""}`;
}

// A labelled control: the label's `for` names the control's id.
export function field(label, control, help) {
  const id = control.id || uid("field");
  control.id = id;
  const helpNode = help ? h("span", { class: "help", id: `${id}-help` }, help) : null;
  if (helpNode) control.setAttribute("aria-describedby", helpNode.id);
  if (control.type === "checkbox" || control.type === "radio") {
    return h("div", { class: "field check" }, control, h("label", { for: id }, label), helpNode);
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), control, helpNode);
}

export function when(value) {
  if (!value) return "—";
  const date = new Date(value);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function usd(value) {
  if (value === null || value === undefined || value === "") return "—";
  return `$${Number(value).toFixed(4)}`;
}

// A gateway file URL (absolute, as the API gives it) as a path on this origin: the session
// cookie goes with it, and the page asks no other host.
export function localPath(url) {
  if (!url) return null;
  const parsed = new URL(url, window.location.origin);
  return parsed.pathname + parsed.search;
}

export function fileIdOf(url) {
  const match = /\/v1\/files\/([0-9a-f-]{36})/.exec(url || "");
  return match ? match[1] : null;
}

export function statusBadge(status) {
  return h("span", { class: `badge badge-${status}`, dataset: { status } }, status);
}

export function table(headers, rows, caption) {
  const tbody = rows instanceof HTMLElement && rows.tagName === "TBODY" ? rows : h("tbody", {}, rows);
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    tbody,
  );
}

export function button(label, onclick, attrs = {}) {
  return h("button", { type: "button", onclick, ...attrs }, label);
}

const FINAL_EVENTS = new Set(["job.succeeded", "job.failed", "job.canceled", "job.aborted"]);

export function isFinal(event) {
  return FINAL_EVENTS.has(event.type) || Boolean(event.data && TERMINAL.has(event.data.status));
}

// Follow one job's event stream; `onEvent(event)` for each, closed after the final one.
export function follow(jobId, onEvent) {
  const source = new EventSource(`/v1/jobs/${jobId}/events`);
  const handle = (message) => {
    let event = null;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    onEvent(event);
    if (isFinal(event)) source.close();
  };
  for (const type of JOB_EVENTS) source.addEventListener(type, handle);
  return source;
}

export function isoDay(date) {
  return date.toISOString().slice(0, 10);
}
