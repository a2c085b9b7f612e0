// The live view: buttons call the real API; the table shows what the bus did about it.
// Plain DOM and fetch, no build step. Data goes in with textContent, never as HTML.
"use strict";

const MAX_ROWS = 300;
const $ = (id) => document.getElementById(id);
const streamToken = new URLSearchParams(location.search).get("token");

const session = { token: null, email: null };
const current = { ticket: null, order: null };

// ---- the event stream --------------------------------------------------------------------

function connect() {
  const url = "/demo/events" + (streamToken ? "?token=" + encodeURIComponent(streamToken) : "");
  const source = new EventSource(url);
  const connection = $("connection");
  source.addEventListener("hello", (event) => {
    const hello = JSON.parse(event.data);
    $("bus").textContent = hello.bus;
    $("modules").textContent = hello.modules.join(", ");
    connection.textContent = "live";
    connection.dataset.state = "open";
  });
  source.addEventListener("bus", (event) => {
    const record = JSON.parse(event.data);
    addRow(record);
    if (concernsUs(record)) scheduleRefresh();
  });
  source.addEventListener("gap", (event) => {
    const gap = $("gap");
    gap.hidden = false;
    gap.textContent = `This page fell behind: ${event.data} event(s) were skipped.`;
  });
  source.addEventListener("bye", () => {
    connection.textContent = "closed: the server is shutting down";
    connection.dataset.state = "closed";
    source.close();
  });
  source.onerror = () => {
    if (connection.dataset.state !== "closed") {
      connection.textContent = "reconnecting…";
      connection.dataset.state = "error";
    }
  };
}

const EXPLAIN = {
  published: "committed with its change and handed to the bus",
  applied: "the next version: the listener applied it",
  retried: "came early (or lost a race): refused, the bus delivers it again",
  duplicate: "already applied: acknowledged, nothing changed",
  "dead-lettered": "gave up after too many attempts: see /ops/dead-letters",
};

function addRow(record) {
  const row = document.createElement("tr");
  row.className = "event";
  Object.assign(row.dataset, {
    subject: record.subject,
    version: record.version ?? "",
    source: record.source,
    group: record.group ?? "",
    result: record.result,
    ticketId: record.ticketId ?? "",
    orderId: record.orderId ?? "",
  });
  const time = new Date().toLocaleTimeString([], { hour12: false });
  const cells = [
    time,
    record.subject,
    record.version ?? "?",
    record.source || "?",
    record.group ?? "–",
    null,
    record.attempt ?? "",
  ];
  for (const value of cells) {
    const cell = document.createElement("td");
    if (value === null) {
      const pill = document.createElement("span");
      pill.className = "pill " + record.result;
      pill.textContent = record.result;
      pill.title = EXPLAIN[record.result] + (record.error ? ` (${record.error})` : "");
      cell.append(pill);
    } else {
      cell.textContent = String(value);
    }
    row.append(cell);
  }
  const body = $("events");
  body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}

function concernsUs(record) {
  const ids = [current.ticket?.id, current.order?.id].filter(Boolean);
  return ids.includes(record.ticketId) || ids.includes(record.orderId);
}

// ---- the API -----------------------------------------------------------------------------

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session.token) headers.Authorization = "Bearer " + session.token;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  return { status: response.status, ok: response.ok, data };
}

function report(method, path, result) {
  const line = $("last-call");
  const problem = result.ok ? "" : " " + (result.data?.errors?.map((e) => e.message).join("; ") ?? "");
  line.textContent = `${method} ${path} → ${result.status}${problem}`;
  line.dataset.status = String(result.status);
  line.dataset.ok = String(result.ok);
}

async function ensureUser() {
  if (session.token) return;
  const email = `demo-${crypto.randomUUID().slice(0, 8)}@example.com`;
  const password = crypto.randomUUID();
  const result = await call("POST", "/api/users/signup", { email, password });
  report("POST", "/api/users/signup", result);
  if (!result.ok) throw new Error("could not sign up a demo user");
  session.token = result.data.token;
  session.email = result.data.email;
  $("user").textContent = session.email;
}

async function act(method, path, body) {
  await ensureUser();
  const result = await call(method, path, body);
  report(method, path, result);
  return result;
}

function price() {
  return Number($("price").value);
}

async function createTicket() {
  const result = await act("POST", "/api/tickets", { title: $("title").value, price: price() });
  if (result.ok) {
    current.ticket = result.data;
    current.order = null;
    nextPrice();
    render();
  }
}

async function editTicket() {
  const path = `/api/tickets/${current.ticket.id}`;
  const result = await act("PUT", path, { title: current.ticket.title, price: price() });
  if (result.ok) {
    current.ticket = result.data;
    nextPrice();
    render();
  }
}

async function orderTicket() {
  const result = await act("POST", "/api/orders", { ticketId: current.ticket.id });
  if (result.ok) {
    current.order = result.data;
    render();
  }
}

async function cancelOrder() {
  const path = `/api/orders/${current.order.id}`;
  const result = await act("DELETE", path);
  if (result.ok) await refresh();
}

function nextPrice() {
  // Each click on "Edit price" makes a new version: suggest the next price.
  $("price").value = String(Math.round((price() + 5) * 100) / 100);
}

// ---- what the page shows -----------------------------------------------------------------

let refreshTimer = null;

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 50);
}

async function refresh() {
  if (current.ticket) {
    const ticket = await call("GET", `/api/tickets/${current.ticket.id}`);
    if (ticket.ok) current.ticket = ticket.data;
  }
  if (current.order) {
    const order = await call("GET", `/api/orders/${current.order.id}`);
    if (order.ok) current.order = order.data;
  }
  render();
}

function fill(list, values) {
  for (const cell of list.querySelectorAll("dd")) {
    const value = values ? values[cell.dataset.field] : null;
    const shown = cell.dataset.field === "price" && typeof value === "number" ? value.toFixed(2) : value;
    cell.textContent = shown === null || shown === undefined ? "–" : String(shown);
  }
}

function render() {
  const { ticket, order } = current;
  fill($("ticket"), ticket);
  fill($("order-state"), order && { ...order.ticket, id: order.id, status: order.status });
  const sync = $("in-sync");
  if (ticket && order) {
    const same = order.ticket.version === ticket.version && order.ticket.price === ticket.price;
    sync.textContent = same ? "✓ the copy matches the ticket" : "… the copy is catching up";
    sync.dataset.sync = String(same);
  } else {
    sync.textContent = "";
    delete sync.dataset.sync;
  }
  $("edit").disabled = !ticket;
  $("order").disabled = !ticket;
  $("cancel").disabled = !order || order.status === "cancelled";
}

function guarded(action) {
  return async () => {
    try {
      await action();
    } catch (error) {
      const line = $("last-call");
      line.textContent = String(error);
      line.dataset.ok = "false";
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("create").addEventListener("click", guarded(createTicket));
  $("edit").addEventListener("click", guarded(editTicket));
  $("order").addEventListener("click", guarded(orderTicket));
  $("cancel").addEventListener("click", guarded(cancelOrder));
  connect();
});
