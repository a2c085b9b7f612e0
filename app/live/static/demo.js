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
  let opened = false;
  source.addEventListener("hello", (event) => {
    const hello = JSON.parse(event.data);
    $("bus").textContent = hello.bus;
    $("modules").textContent = hello.modules.join(", ");
    connection.textContent = "live";
    connection.dataset.state = "open";
    // A new stream starts from now: whatever happened while the old one was down never comes.
    if (opened) missed("The stream was interrupted: events from while it was down are not listed.");
    opened = true;
  });
  source.addEventListener("bus", (event) => {
    const record = JSON.parse(event.data);
    addRow(record);
    if (concernsUs(record)) scheduleRefresh();
  });
  source.addEventListener("gap", (event) => {
    missed(`This page fell behind: ${event.data} event(s) were skipped.`);
  });
  source.addEventListener("bye", () => {
    connection.textContent = "closed: the server is shutting down";
    connection.dataset.state = "closed";
    source.close();
  });
  source.onerror = () => {
    if (connection.dataset.state === "closed" || connection.dataset.state === "refused") return;
    if (source.readyState === EventSource.CLOSED) {
      // The browser retries a dropped stream, but gives up for good on an answer that is not one,
      // such as the 401 of a stream guarded by the ops token: "reconnecting…" would wait forever.
      connection.textContent = streamToken
        ? "refused: the server did not accept ?token="
        : "refused: if the server sets TICKETING_OPS_TOKEN, open this page as /demo?token=…";
      connection.dataset.state = "refused";
    } else {
      connection.textContent = "reconnecting…";
      connection.dataset.state = "error";
    }
  };
}

// Events the table never got may have changed our ticket or order: say so, and read them again.
function missed(text) {
  const gap = $("gap");
  gap.hidden = false;
  gap.textContent = text;
  scheduleRefresh();
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
    keepNewer("ticket", result.data);
    nextPrice();
    render();
  }
}

async function orderTicket() {
  const ticketId = current.ticket.id;
  const result = await act("POST", "/api/orders", { ticketId });
  // A ticket created meanwhile is the one shown now: its card must not show the older one's order.
  if (result.ok && current.ticket && current.ticket.id === ticketId) {
    current.order = result.data;
    render();
    // The events the order caused may all have been shown before its answer came: the answer's
    // copy of the ticket is as it was then, and no later event would make the page read it again.
    scheduleRefresh();
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
  const { ticket, order } = current;
  const [fetchedTicket, fetchedOrder] = await Promise.all([
    ticket && call("GET", `/api/tickets/${ticket.id}`),
    order && call("GET", `/api/orders/${order.id}`),
  ]);
  if (fetchedTicket?.ok) keepNewer("ticket", fetchedTicket.data);
  if (fetchedOrder?.ok) keepNewer("order", fetchedOrder.data);
  render();
}

// Answers come back out of order: refreshes overlap (every row about our ticket schedules one,
// cancelling awaits one), and a refresh asked before a click may answer after it. Versions only
// grow, so an answer replaces what is shown only if it is about the same record and no older:
// the latest answer wins, and the page never steps back to older data, nor to a ticket or an
// order it has since left for a new one. An order's copy of its ticket moves on without the
// order's own version, so both are compared.
function keepNewer(kind, fetched) {
  const shown = current[kind];
  if (!shown || fetched.id !== shown.id) return;
  const older =
    fetched.version < shown.version || (fetched.ticket && fetched.ticket.version < shown.ticket.version);
  if (!older) current[kind] = fetched;
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
