// The lockfleet web console: plain browser JavaScript (fetch, EventSource, DOM), no build step,
// nothing loaded from another site. Every value from the service is put in the page as text
// (textContent), never as HTML. Pages are hash routes: #/findings?kind=&host=&lock=&since=&until=,
// #/finding/ID, #/lock/NAME, #/hosts, #/suppressions.
"use strict";

const state = { session: null, source: null, reload: null, preserve: null, fresh: new Set() };
// what the tests (and a curious person in the devtools) can read
window.lockfleetConsole = { liveEvents: 0, lastEvent: null, renders: 0, loadedAt: Date.now(), connected: false };

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function when(ns) {
  if (!ns) return "-";
  const d = new Date(Number(ns) / 1e6);
  return d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function ago(ns) {
  if (!ns) return "";
  const s = Math.max(0, (Date.now() - Number(ns) / 1e6) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  if (s < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (opts.body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Lockfleet-Console"] = "1";
    opts.body = JSON.stringify(opts.body);
  }
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({ error: res.statusText }));
  if (!res.ok) throw new ApiError(res.status, data.error || res.statusText);
  return data;
}

const lockLink = (name) => h("a", { href: "#/lock/" + encodeURIComponent(name), class: "mono", text: name });
const findingLink = (id, text) => h("a", { href: "#/finding/" + encodeURIComponent(id), class: "mono", text: text || id });
const hostLink = (name) => h("a", { href: "#/findings?host=" + encodeURIComponent(name), text: name });
const kindTag = (kind) => h("span", { class: "kind " + kind, text: kind });

function chain(locks, kind) {
  const out = [];
  locks.forEach((l, i) => { if (i) out.push(" \u2192 "); out.push(lockLink(l)); });
  if (kind === "circular" && locks.length > 1) out.push(" \u2192 ", h("span", { class: "muted mono", text: locks[0] }));
  return h("span", {}, out);
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((x) => typeof x === "string" ? h("th", { text: x }) : x))),
    h("tbody", {}, rows));
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
  window.lockfleetConsole.renders += 1;
}

function errorBox(err) {
  return h("div", { class: "card error" }, String(err.message || err));
}

// -- session ---------------------------------------------------------------------------------

async function loadSession() {
  state.session = await api("/api/session");
  const who = document.getElementById("who");
  const s = state.session;
  who.replaceChildren();
  if (!s.tokens) who.append("no tokens: anyone here is admin");
  else if (s.role) {
    who.append(`signed in: ${s.role}`,
      h("button", { type: "button", id: "signout", onclick: async () => {
        await api("/api/session/end", { method: "POST", body: {} });
        location.reload();
      } }, "Sign out"));
  }
}

function signInPage(message) {
  const input = h("input", { type: "password", id: "token", size: 40, autocomplete: "off", placeholder: "query or admin token" });
  const msg = h("p", { class: "error", text: message || "" });
  const form = h("form", { class: "card", id: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api("/api/session", { method: "POST", body: { token: input.value } });
      await loadSession();
      connectLive();
      route();
    } catch (err) { msg.textContent = err.message; }
  } }, h("h1", { text: "Sign in" }),
    h("p", { class: "muted", text: "This service asks for a bearer token (a line of its --token-file): a query token reads, an admin token may also suppress findings." }),
    input, " ", h("button", { class: "primary", type: "submit" }, "Sign in"), msg);
  show(form);
}

// -- live updates ----------------------------------------------------------------------------

function connectLive() {
  if (state.source || !state.session || !state.session.role) return;
  const live = document.getElementById("live");
  const src = new EventSource("/api/events");
  state.source = src;
  src.addEventListener("open", () => {
    live.textContent = "live"; live.className = "live on"; window.lockfleetConsole.connected = true;
  });
  src.addEventListener("error", () => {
    live.textContent = "reconnecting"; live.className = "live off"; window.lockfleetConsole.connected = false;
  });
  const changed = (ev) => {
    window.lockfleetConsole.liveEvents += 1;
    window.lockfleetConsole.lastEvent = { type: ev.type, data: ev.data, at: Date.now() };
    if (ev.type === "publication") {
      try { state.fresh.add(JSON.parse(ev.data).id); } catch (e) { /* ignore */ }
    }
    if (state.reload) {
      const restore = state.preserve();
      state.reload().then(restore, restore);
    }
  };
  // a live re-render keeps what the person is typing into a filter and where the cursor is
  state.preserve = () => {
    const active = document.activeElement;
    const typed = {};
    document.querySelectorAll("#filters input:not([type=checkbox]), #suppress-form textarea, #suppress-form input")
      .forEach((el) => { typed[el.id] = el.value; });
    return () => {
      for (const [id, value] of Object.entries(typed)) {
        const el = document.getElementById(id);
        if (el && el.value !== value) el.value = value;
      }
      if (active && active.id) {
        const el = document.getElementById(active.id);
        if (el) el.focus();
      }
    };
  };
  src.addEventListener("publication", changed);
  src.addEventListener("suppressions", changed);
}

// -- findings --------------------------------------------------------------------------------

function parseQuery(qs) {
  const out = {};
  new URLSearchParams(qs || "").forEach((v, k) => { out[k] = v; });
  return out;
}

function toNs(local) {
  if (!local) return "";
  const ms = new Date(local).getTime();
  return Number.isNaN(ms) ? "" : String(BigInt(ms) * 1000000n);
}

async function findingsPage(query) {
  const f = Object.assign({ kind: "", host: "", lock: "", since: "", until: "", hide: "" }, query);
  const params = new URLSearchParams();
  if (f.kind) params.set("kind", f.kind);
  if (f.host) params.set("host", f.host);
  if (f.lock) params.set("lock", f.lock);
  if (f.since) params.set("since_ns", toNs(f.since));
  if (f.until) params.set("until_ns", toNs(f.until));
  if (f.hide) params.set("hide_suppressed", "1");
  let data;
  try { data = await api("/api/findings?" + params.toString()); } catch (err) {
    if (err.status === 401) return signInPage();
    if (err.status === 400) data = { error: err.message, findings: [], kinds: [], hosts: [], locks: [], total: 0 };
    else throw err;
  }
  const kind = h("select", { name: "kind", id: "f-kind" }, h("option", { value: "", text: "any kind" }),
    data.kinds.map((k) => h("option", { value: k, text: k, selected: k === f.kind })));
  const host = h("input", { name: "host", id: "f-host", list: "hosts-list", value: f.host, placeholder: "any host", size: 16 });
  const lock = h("input", { name: "lock", id: "f-lock", list: "locks-list", value: f.lock, placeholder: "any lock", size: 26 });
  const since = h("input", { name: "since", id: "f-since", type: "datetime-local", step: 1, value: f.since });
  const until = h("input", { name: "until", id: "f-until", type: "datetime-local", step: 1, value: f.until });
  const hide = h("input", { name: "hide", id: "f-hide", type: "checkbox", checked: !!f.hide });
  const apply = () => {
    const q = new URLSearchParams();
    if (kind.value) q.set("kind", kind.value);
    if (host.value.trim()) q.set("host", host.value.trim());
    if (lock.value.trim()) q.set("lock", lock.value.trim());
    if (since.value) q.set("since", since.value);
    if (until.value) q.set("until", until.value);
    if (hide.checked) q.set("hide", "1");
    const target = "#/findings" + (q.toString() ? "?" + q.toString() : "");
    if (location.hash === target) route(); else location.hash = target;
  };
  const form = h("form", { class: "filters", id: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
    h("label", {}, "kind", kind), h("label", {}, "host", host), h("label", {}, "lock", lock),
    h("label", {}, "first seen since (local)", since), h("label", {}, "until", until),
    h("label", {}, "hide suppressed", hide),
    h("button", { type: "submit", class: "primary", id: "f-apply" }, "Filter"),
    h("button", { type: "button", onclick: () => { location.hash = "#/findings"; } }, "Clear"),
    h("datalist", { id: "hosts-list" }, data.hosts.map((x) => h("option", { value: x }))),
    h("datalist", { id: "locks-list" }, data.locks.map((x) => h("option", { value: x }))));
  kind.addEventListener("change", apply);
  hide.addEventListener("change", apply);
  const rows = data.findings.map((a) => h("tr", {
    class: [a.suppression ? "suppressed" : "", state.fresh.has(a.id) ? "fresh" : ""].join(" ").trim() || null,
    dataset: { id: a.id, kind: a.kind } },
  h("td", { class: "num", text: a.seq }),
  h("td", {}, kindTag(a.kind)),
  h("td", {}, findingLink(a.id)),
  h("td", {}, chain(a.locks, a.kind)),
  h("td", {}, a.hosts.map((x) => h("span", { class: "tag" }, hostLink(x)))),
  h("td", { text: when(a.first_ts_ns) }),
  h("td", { class: "num", text: a.count }),
  h("td", {}, a.suppression ? h("span", { class: "tag sup", title: a.suppression.reason, text: a.suppression.blessed ? "blessed" : "suppressed" })
    : (a.published_ns ? h("span", { class: "muted", text: "published " + ago(a.published_ns) }) : h("span", { class: "muted", text: "pending" })))));
  state.fresh.clear();
  const shown = data.findings.length;
  show(h("h1", {}, "Findings", h("span", { class: "count", id: "count", text: `${shown} shown of ${data.total}` })),
    form, data.error ? h("p", { class: "error", text: data.error }) : null,
    shown ? table(["#", "kind", "id", "locks", "hosts", "first seen", "count", "status"], rows, { id: "findings" })
      : h("p", { class: "card muted", id: "findings-empty", text: data.total ? "No finding matches these filters." : "No findings yet: they appear here as soon as the fleet raises them." }));
}

// -- one finding -----------------------------------------------------------------------------

function suppressionBox(a) {
  const s = a.suppression;
  const admin = state.session && state.session.role === "admin";
  const box = h("div", { class: "card", id: "suppression" });
  if (s) {
    box.append(h("p", {}, h("strong", { text: s.blessed ? "Suppressed by a blessed order: " : "Suppressed: " }), s.reason,
      h("span", { class: "muted", text: ` (${s.author || "unknown"}${s.ts_ns ? ", " + when(s.ts_ns) : ""}); listed, never published` })));
    if (admin && !s.blessed) {
      box.append(h("button", { type: "button", id: "unsuppress", onclick: async () => {
        try { await api("/api/suppressions?id=" + encodeURIComponent(a.id), { method: "DELETE", body: {} }); route(); }
        catch (err) { box.append(h("p", { class: "error", text: err.message })); }
      } }, "Unsuppress"));
    }
    return box;
  }
  if (!admin) {
    box.append(h("p", { class: "muted", text: "Not suppressed. Suppressing needs an admin token." }));
    return box;
  }
  const reason = h("textarea", { id: "sup-reason", rows: 2, cols: 70, placeholder: "why this finding is known and accepted" });
  const author = h("input", { id: "sup-author", size: 20, value: localStorage.getItem("lockfleet.author") || "", placeholder: "your name" });
  const msg = h("p", { class: "error" });
  box.append(h("form", { id: "suppress-form", onsubmit: async (ev) => {
    ev.preventDefault();
    if (!reason.value.trim()) { msg.textContent = "Give a reason."; return; }
    try {
      localStorage.setItem("lockfleet.author", author.value.trim());
      await api("/api/suppressions", { method: "POST", body: { id: a.id, reason: reason.value, author: author.value } });
      route();
    } catch (err) { msg.textContent = err.message; }
  } }, h("strong", { text: "Suppress" }), h("span", { class: "muted", text: " \u2014 known and accepted: still listed, never published" }),
  h("div", {}, reason), h("div", {}, "by ", author, " ", h("button", { type: "submit", class: "danger", id: "sup-submit" }, "Suppress")), msg));
  return box;
}

function evidence(a) {
  const links = a.links || [];
  if (!links.length) return h("p", { class: "muted", text: "No dependency evidence for this kind of finding." });
  const rows = links.map((l, i) => h("tr", {},
    h("td", { class: "num", text: a.kind === "circular" && i === links.length - 1 ? "closing" : String(i + 1) }),
    h("td", {}, lockLink(l.held), " \u2192 ", lockLink(l.taken)),
    h("td", { class: "mono", text: (l.kinds || []).join(" ") }),
    h("td", { class: "num", text: l.count }),
    h("td", {}, (l.hosts || []).map((x) => h("span", { class: "tag", text: x }))),
    h("td", {}, l.host, h("br"), h("span", { class: "muted mono", text: l.task || "" })),
    h("td", { text: when(l.ts_ns) }), h("td", { text: when(l.last_ts_ns) }),
    h("td", {}, h("details", {}, h("summary", { text: "sites" }),
      h("div", { class: "muted", text: "held at" }), h("pre", { text: l.held_site || "-" }),
      h("div", { class: "muted", text: "taken at" }), h("pre", { text: l.taken_site || "-" })))));
  const hosts = [...new Set(links.flatMap((l) => l.hosts || []))].sort();
  const matrix = table(["dependency", ...hosts],
    links.map((l) => h("tr", {}, h("td", { class: "mono", text: `${l.held} \u2192 ${l.taken}` }),
      hosts.map((x) => (l.hosts || []).includes(x) ? h("td", { class: "yes", text: "\u2713" }) : h("td", { class: "no", text: "\u00b7" })))),
    { class: "matrix", id: "matrix" });
  return h("div", {},
    table(["", "dependency", "kinds", "taken", "hosts", "first by", "first", "last", ""], rows, { id: "evidence" }),
    h("h2", { text: "Which host took which dependency" }),
    a.single_host ? h("p", { text: `One host, ${a.single_host}, took every dependency by itself.` })
      : h("p", { class: "muted", text: "No single host took every dependency: only the fleet sees the whole finding." }),
    matrix);
}

function witnessesBox(a) {
  const ws = a.witness_cycles || [];
  if (a.kind !== "circular") return h("p", { class: "muted", id: "witnesses", text: "Only a circular finding has witnesses." });
  const total = typeof a.witnesses === "number" ? a.witnesses : ws.length;
  const note = h("p", { class: "muted", text: `${total} cycle${total === 1 ? "" : "s"} closed through the inversion ` +
    (a.inversion ? `${a.inversion.held} \u2192 ${a.inversion.taken}` : "") +
    (total > ws.length ? `; the first ${ws.length} are kept with their evidence.` : ".") });
  if (!ws.length) return h("div", { id: "witnesses" }, note);
  return h("div", {}, note, table(["#", "cycle", "hosts", "closed by", "when"], ws.map((w, i) => h("tr", {},
    h("td", { class: "num", text: i === 0 ? "first" : String(i + 1) }), h("td", {}, chain(w.locks || [], "circular")),
    h("td", {}, (w.hosts || []).map((x) => h("span", { class: "tag", text: x }))),
    h("td", {}, w.closing ? [lockLink(w.closing.held), " \u2192 ", lockLink(w.closing.taken),
      h("br"), h("span", { class: "muted mono", text: `${w.closing.host} ${w.closing.task || ""}` })] : "-"),
    h("td", { text: w.closing ? when(w.closing.ts_ns) : "-" }))), { id: "witnesses" }));
}

async function findingPage(id) {
  let a;
  try { a = await api("/api/finding?id=" + encodeURIComponent(id)); } catch (err) {
    if (err.status === 401) return signInPage();
    return show(h("h1", { text: "Finding " + id }), errorBox(err));
  }
  const graph = h("img", { id: "graph", alt: "the finding's neighbourhood in the lock graph", src: "/api/graph.svg?id=" + encodeURIComponent(a.id) });
  show(h("h1", {}, kindTag(a.kind), " ", h("span", { class: "mono", text: a.id })),
    h("div", { class: "card" }, h("dl", { class: "kv" },
      h("dt", { text: "locks" }), h("dd", {}, chain(a.locks, a.kind)),
      h("dt", { text: "hosts" }), h("dd", {}, a.hosts.map((x) => h("span", { class: "tag" }, hostLink(x)))),
      h("dt", { text: "first seen" }), h("dd", { text: when(a.first_ts_ns) }),
      h("dt", { text: "occurrences" }), h("dd", { text: a.count }),
      h("dt", { text: "published" }), h("dd", { text: a.published ? when(a.published.first_ns) : (a.suppression ? "never (suppressed)" : "not yet") }))),
    suppressionBox(a),
    h("h2", { text: "Neighbourhood" }), h("div", { class: "graph" }, graph),
    h("h2", { text: "Fleet evidence" }), evidence(a),
    h("h2", {}, "Witnesses", h("span", { class: "count", text: String(typeof a.witnesses === "number" ? a.witnesses : 0) })), witnessesBox(a),
    h("h2", { text: "Report" }), h("pre", { class: "report", id: "report", text: a.report }));
}

// -- one lock class --------------------------------------------------------------------------

function linkRows(links, other) {
  return links.map((l) => h("tr", {}, h("td", {}, lockLink(l[other])), h("td", { class: "mono", text: (l.kinds || []).join(" ") }),
    h("td", { class: "num", text: l.count }), h("td", {}, (l.hosts || []).map((x) => h("span", { class: "tag", text: x }))),
    h("td", { text: `${l.host} ${l.task || ""}` }), h("td", { text: when(l.ts_ns) })));
}

async function lockPage(name) {
  let v;
  try { v = await api("/api/lock?name=" + encodeURIComponent(name)); } catch (err) {
    if (err.status === 401) return signInPage();
    return show(h("h1", { class: "mono", text: name }), errorBox(err));
  }
  const cols = ["lock", "kinds", "taken", "hosts", "first by", "first"];
  show(h("h1", {}, "Lock ", h("span", { class: "mono", text: v.name })),
    h("div", { class: "card" }, h("dl", { class: "kv" },
      h("dt", { text: "usage" }), h("dd", { class: "mono", text: `{${v.usage}}` }),
      h("dt", { text: "hosts" }), h("dd", {}, v.hosts.map((x) => h("span", { class: "tag", text: x }))),
      h("dt", { text: "seen" }), h("dd", { text: `${when(v.first_ts_ns)} \u2026 ${when(v.last_ts_ns)}, ${v.count} dependency acquisitions` }),
      h("dt", { text: "findings" }), h("dd", {}, v.findings.length ? v.findings.map((x) => h("div", {}, findingLink(x))) : "none"))),
    h("div", { class: "grid" },
      h("div", {}, h("h2", { text: `Taken while holding (${v.edges_in.length} in)` }),
        v.edges_in.length ? table(cols, linkRows(v.edges_in, "held"), { id: "edges-in" }) : h("p", { class: "muted", text: "none" })),
      h("div", {}, h("h2", { text: `Held while taking (${v.edges_out.length} out)` }),
        v.edges_out.length ? table(cols, linkRows(v.edges_out, "taken"), { id: "edges-out" }) : h("p", { class: "muted", text: "none" }))),
    h("h2", { text: "irq usage" }),
    v.usages.length ? table(["usage", "first host", "task", "when", "site"], v.usages.map((u) => h("tr", {},
      h("td", { class: "mono", text: u.usage }), h("td", { text: u.host }), h("td", { text: u.task }), h("td", { text: when(u.ts_ns) }),
      h("td", {}, h("pre", { text: u.site || "-" }))))) : h("p", { class: "muted", text: "no irq usage recorded" }));
}

// -- hosts -----------------------------------------------------------------------------------

async function hostsPage() {
  let d;
  try { d = await api("/api/hosts"); } catch (err) {
    if (err.status === 401) return signInPage();
    throw err;
  }
  const rows = d.hosts.map((x) => h("tr", { dataset: { host: x.host } }, h("td", {}, hostLink(x.host)),
    h("td", { class: "num", text: x.events }), h("td", { class: "num", text: x.batches }),
    h("td", { class: "num", text: x.streams }), h("td", { class: "num", text: x.threads }),
    h("td", { text: when(x.first_ns) }), h("td", {}, when(x.last_ns), h("span", { class: "muted", text: " " + ago(x.last_ns) })),
    h("td", { text: when(x.last_event_ts_ns) }),
    h("td", { class: "num" + (x.dropped_events ? " error" : ""), text: x.dropped_events }),
    h("td", {}, x.findings.map((f) => h("div", {}, kindTag(f.kind), " ", findingLink(f.id))))));
  show(h("h1", {}, "Hosts", h("span", { class: "count", text: `${d.hosts.length}` })),
    d.hosts.length ? table(["host", "events", "batches", "streams", "threads", "first batch", "last batch", "last event time (host clock)", "dropped by agent", "findings"], rows, { id: "hosts" })
      : h("p", { class: "card muted", text: "No host has sent anything yet." }));
}

// -- suppressions ----------------------------------------------------------------------------

async function suppressionsPage() {
  let d;
  try { d = await api("/api/suppressions"); } catch (err) {
    if (err.status === 401) return signInPage();
    throw err;
  }
  const admin = state.session && state.session.role === "admin";
  const rows = d.suppressions.map((s) => h("tr", { dataset: { id: s.id } }, h("td", {}, findingLink(s.id)),
    h("td", { text: s.reason }), h("td", { text: s.author || "" }), h("td", { text: when(s.ts_ns) }),
    h("td", {}, admin ? h("button", { type: "button", onclick: async () => {
      await api("/api/suppressions?id=" + encodeURIComponent(s.id), { method: "DELETE", body: {} }); route();
    } }, "Unsuppress") : "")));
  show(h("h1", {}, "Suppressions", h("span", { class: "count", text: String(d.suppressions.length) })),
    h("p", { class: "muted", text: "A suppressed finding is still listed, marked, but never published to any sink." }),
    d.suppressions.length ? table(["finding", "reason", "by", "when", ""], rows, { id: "suppressions" }) : h("p", { class: "card muted", text: "No recorded suppressions." }),
    h("h2", { text: "Blessed lock orders (--blessed)" }),
    d.blessed.length ? h("ul", {}, d.blessed.map((b) => h("li", { class: "mono", text: b }))) : h("p", { class: "muted", text: "none" }));
}

// -- routing ---------------------------------------------------------------------------------

let routing = Promise.resolve();

function route() {
  routing = routing.then(routeNow, routeNow);
  return routing;
}

async function routeNow() {
  const hash = location.hash || "#/findings";
  const [path, qs] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  const page = parts[0] || "findings";
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === page || (page === "finding" && a.dataset.nav === "findings")));
  if (state.session && state.session.tokens && !state.session.role) return signInPage();
  const arg = decodeURIComponent(parts.slice(1).join("/"));
  try {
    if (page === "findings") { state.reload = route; document.title = "Findings \u2014 lockfleet"; await findingsPage(parseQuery(qs)); }
    else if (page === "finding") { state.reload = route; document.title = arg + " \u2014 lockfleet"; await findingPage(arg); }
    else if (page === "lock") { state.reload = null; document.title = arg + " \u2014 lockfleet"; await lockPage(arg); }
    else if (page === "hosts") { state.reload = route; document.title = "Hosts \u2014 lockfleet"; await hostsPage(); }
    else if (page === "suppressions") { state.reload = route; document.title = "Suppressions \u2014 lockfleet"; await suppressionsPage(); }
    else show(h("h1", { text: "Not found" }), h("p", {}, h("a", { href: "#/findings", text: "Findings" })));
  } catch (err) {
    show(errorBox(err));
  }
}

async function start() {
  try { await loadSession(); } catch (err) { show(errorBox(err)); return; }
  window.addEventListener("hashchange", route);
  connectLive();
  await route();
}

start();
