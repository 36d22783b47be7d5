// The operator's pages: tenants, prices, usage across tenants, reconcile, the fleet.
import { gauge } from "./charts.js";
import {
  api, button, content, field, h, problemText, replace, say, statusBadge, table, usd, when,
} from "./lib.js";
import { usageCharts, usageControls } from "./tenant.js";

function secretBox(label, secret) {
  return h("div", { class: "secret", role: "alert" }, h("p", {}, `${label} — shown once, copy it now:`),
    h("code", { class: "secret-value", tabindex: "0" }, secret));
}

function nullableNumber(value) {
  return value === "" ? null : Number(value);
}

async function tenantsPage() {
  const root = content();
  const notice = h("div");
  const list = h("div", { id: "tenants" });
  const editor = (t) => {
    const budget = h("input", { type: "text", inputmode: "decimal", value: t.budget_usd ?? "" });
    const period = h("input", { type: "text", value: t.budget_period || "month" });
    const rate = h("input", { type: "number", min: "1", value: t.rate_limit_per_minute ?? "" });
    const inFlight = h("input", { type: "number", min: "1", value: t.max_in_flight ?? "" });
    const weight = h("input", { type: "number", min: "0.01", step: "any", value: t.weight ?? 1 });
    const suspended = h("input", { type: "checkbox", checked: Boolean(t.suspended_at) });
    const form = h("form", { class: "inline-form", "aria-label": `Settings of ${t.name}` },
      field(`Budget (USD, empty: none)`, budget), field("Budget period", period),
      field("Jobs per minute (empty: default)", rate), field("Max in flight (empty: default)", inFlight),
      field("Weight", weight), field("Suspended", suspended), h("button", { type: "submit" }, "Save"),
      button("Create a key", async () => {
        try {
          const key = await api(`/v1/admin/tenants/${t.id}/keys`, { method: "POST", json: {} });
          replace(notice, secretBox(`Key for ${t.name}`, key.key));
        } catch (error) {
          say(problemText(error), "error");
        }
      }));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api(`/v1/admin/tenants/${t.id}`, {
          method: "PATCH",
          json: {
            budget_usd: budget.value === "" ? null : budget.value, budget_period: period.value,
            rate_limit_per_minute: nullableNumber(rate.value), max_in_flight: nullableNumber(inFlight.value),
            weight: Number(weight.value), suspended: suspended.checked,
          },
        });
        say(`Saved ${t.name}.`);
        await load();
      } catch (error) {
        say(problemText(error), "error");
      }
    });
    return form;
  };
  const load = async () => {
    const tenants = (await api("/v1/admin/tenants")).data;
    replace(list, tenants.map((t) => h("section", { class: "card", "aria-label": t.name },
      h("h2", {}, t.name, " ", t.suspended_at ? statusBadge("suspended") : null),
      h("p", { class: "help" }, `id ${t.id}`), editor(t))));
  };
  const name = h("input", { type: "text", required: true, maxlength: "200" });
  const form = h("form", { class: "card" }, field("New tenant's name", name), h("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/v1/admin/tenants", { method: "POST", json: { name: name.value } });
      name.value = "";
      await load();
    } catch (error) {
      say(problemText(error), "error");
    }
  });
  replace(root, form, notice, list);
  await load();
}

async function pricesPage() {
  const root = content();
  const body = h("tbody");
  const load = async () => {
    const prices = (await api("/v1/admin/prices")).data;
    replace(body, prices.map((p) => h("tr", {}, h("td", {}, p.model), h("td", {}, p.unit),
      h("td", {}, `$${p.unit_price_usd}`), h("td", {}, when(p.effective_from)))));
  };
  const model = h("input", { type: "text", required: true });
  const unit = h("input", { type: "text", required: true, placeholder: "compute_second or video" });
  const price = h("input", { type: "text", inputmode: "decimal", required: true });
  const from = h("input", { type: "datetime-local" });
  const form = h("form", { class: "card" }, h("h2", {}, "A new price"), field("Model (id or alias)", model),
    field("Unit", unit), field("USD per unit", price), field("Effective from (UTC, empty: now)", from),
    h("button", { type: "submit" }, "Add price"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/v1/admin/prices", { method: "POST", json: {
        model: model.value, unit: unit.value, unit_price_usd: price.value,
        effective_from: from.value ? `${from.value}:00Z` : null,
      } });
      await load();
      say("Price added.");
    } catch (error) {
      say(problemText(error), "error");
    }
  });
  replace(root, form, table(["Model", "Unit", "Price", "From"], body, "Prices, newest first per model"));
  await load();
}

async function adminUsagePage() {
  const root = content();
  const out = h("div", { id: "usage" });
  const { form, refresh } = usageControls(async (range) => {
    try {
      const [byDay, byModel, byTenant] = await Promise.all([
        api(`/v1/admin/usage?${range}&group_by=day`), api(`/v1/admin/usage?${range}&group_by=model`),
        api("/v1/admin/tenants"),
      ]);
      const names = new Map(byTenant.data.map((t) => [t.id, t.name]));
      const perTenant = new Map();
      for (const g of byModel.data) perTenant.set(g.tenant, (perTenant.get(g.tenant) || 0) + Number(g.cost_usd || 0));
      replace(out, usageCharts(byDay, byModel),
        table(["Tenant", "Cost"], [...perTenant].map(([id, cost]) => h("tr", {},
          h("td", {}, names.get(id) || id || "—"), h("td", {}, usd(cost)))), "By tenant"));
    } catch (error) {
      say(problemText(error), "error");
    }
  }, "/v1/admin/usage/export.csv");
  replace(root, form, out);
  refresh();
}

async function reconcilePage() {
  const root = content();
  const out = h("div", { id: "reconcile" });
  const { form } = usageControls(async (range) => {
    say("Reading fal's billing…");
    try {
      const r = await api(`/v1/admin/reconcile?${range}`);
      say("");
      replace(out,
        h("p", { class: r.ok ? "ok" : "error", id: "reconcile-verdict" }, r.ok ? "The ledger matches fal's bill."
          : `${r.differences.length} differences.`),
        h("dl", { class: "facts" },
          h("dt", {}, "Ledger"), h("dd", {}, `${r.ledger_requests} requests, ${usd(r.ledger_total_usd)}`),
          h("dt", {}, "fal"), h("dd", {}, `${r.fal_requests} requests, ${usd(r.fal_total_usd)}`)),
        r.differences.length ? table(["Kind", "Request", "Model", "Ledger", "fal", "Tenant"], r.differences.map((d) =>
          h("tr", {}, h("td", {}, d.kind), h("td", {}, d.request_id), h("td", {}, d.model || "—"),
            h("td", {}, d.ledger_usd || "—"), h("td", {}, d.fal_usd || "—"), h("td", {}, d.tenant_id || "—"))), "Differences")
          : null);
    } catch (error) {
      say(problemText(error), "error");
    }
  }, "/v1/admin/usage/export.csv");
  form.querySelector("button[type=submit]").textContent = "Reconcile";
  form.querySelector("#csv-link").remove();
  replace(root, form, out);
}

async function fleetPage() {
  const root = content();
  const draw = async () => {
    try {
      const f = await api("/v1/admin/fleet");
      replace(root,
        h("h2", {}, "fal's slots"),
        gauge({ label: `${f.fal_slots_in_use} of ${f.fal_slots} fal slots in use`, budget: f.fal_slots,
          spent: f.fal_slots_in_use, reserved: 0, caption: "fal's concurrency in use" }),
        h("p", { id: "slots" }, `${f.fal_slots_in_use} of ${f.fal_slots} in use`),
        h("h2", {}, `Workers (${f.workers_alive} alive)`),
        table(["Worker", "Started", "Last beat", "Alive"], f.workers.map((w) => h("tr", {},
          h("td", {}, w.owner), h("td", {}, when(w.started_at)), h("td", {}, when(w.beat_at)),
          h("td", {}, w.alive ? "yes" : "no")))),
        h("h2", {}, "Unfinished jobs"),
        table(["Status", "Jobs", "Oldest"], f.live_jobs.map((s) => h("tr", {},
          h("td", {}, statusBadge(s.status)), h("td", {}, String(s.jobs)),
          h("td", {}, s.oldest_age_s === null ? "—" : `${Math.round(s.oldest_age_s)} s ago`)))),
        h("h2", {}, "Finished in the last hour"),
        h("p", {}, Object.entries(f.finished_last_hour).map(([k, v]) => `${k}: ${v}`).join(", ") || "none"));
    } catch (error) {
      say(problemText(error), "error");
    }
  };
  await draw();
  setInterval(draw, 5000);
}

export const ADMIN_PAGES = {
  tenants: tenantsPage, prices: pricesPage, "admin-usage": adminUsagePage, reconcile: reconcilePage,
  fleet: fleetPage,
};
