// carebank console: the browser's zone for sign-in, and open alerts arriving live over the SSE stream.
// Everything else is plain HTML forms; this file only adds to pages that work without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const zoneField = document.querySelector("[data-browser-zone]");
  if (zoneField) {
    try {
      zoneField.value = Intl.DateTimeFormat().resolvedOptions().timeZone || zoneField.value;
    } catch (_) { /* keep the default zone */ }
  }

  // A form sent once stays sent: its buttons are disabled while the next page loads (the API's
  // Idempotency-Key, sent by the creating forms, covers a resubmission from history).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
    setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
  });

  const table = document.querySelector("table[data-live-alerts]");
  if (table && "EventSource" in window) {
    watchAlerts(table);
  }
});

let labels = null;

function label(id) {
  if (labels === null) {
    const found = document.getElementById("labels");
    try { labels = found ? JSON.parse(found.textContent) : {}; } catch (_) { labels = {}; }
  }
  return labels[id] || short(id);
}

function short(id) {
  return String(id).slice(-8);
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function alertRow(alert) {
  const kind = String(alert.kind).replace(/_/g, " ");
  const row = document.createElement("tr");
  row.dataset.alertId = alert.id;
  row.className = "fresh";
  const raised = new Date(alert.raised_at).toLocaleString("en-GB", {day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit"});
  const cells = [kind, raised, label(alert.person_id), label(alert.provider_id), short(alert.visit_id)];
  cells.forEach((text, index) => {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (index === 0) cell.className = "kind";
    row.appendChild(cell);
  });
  const actionCell = document.createElement("td");
  const form = document.createElement("form");
  form.method = "post";
  form.action = "/console/alerts/" + encodeURIComponent(alert.id) + "/ack";
  const token = document.createElement("input");
  token.type = "hidden";
  token.name = "_csrf_token";
  token.value = csrfToken();
  const button = document.createElement("button");
  button.type = "submit";
  button.textContent = "Acknowledge";
  button.setAttribute("aria-label", "Acknowledge the " + kind + " alert on visit " + short(alert.visit_id));
  form.append(token, button);
  actionCell.appendChild(form);
  row.appendChild(actionCell);
  return row;
}

function watchAlerts(table) {
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const empty = document.getElementById("alerts-empty");
  const say = (text) => { if (status) status.textContent = text; };
  const source = new EventSource(table.dataset.liveAlerts);
  source.addEventListener("open", () => { say("Live: new alerts appear here as they are raised."); table.dataset.connected = "yes"; });
  source.addEventListener("alert", (event) => {
    let alert;
    try { alert = JSON.parse(event.data); } catch (_) { return; }
    const existing = body.querySelector('tr[data-alert-id="' + CSS.escape(String(alert.id)) + '"]');
    if (alert.status === "open") {
      if (!existing) {
        body.prepend(alertRow(alert));
        say("New alert: " + String(alert.kind).replace(/_/g, " ") + " on visit " + short(alert.visit_id) + ".");
      }
    } else if (existing) {
      existing.remove();
      say("An alert was " + alert.status + ".");
    }
    if (empty) empty.hidden = body.rows.length > 0;
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      say("Live updates stopped (signed out or offline): reload the page.");
    }
  });
}
