// The sites page of a central station: one row per site, kept live from the site.updated messages of /ws (and the
// active-event counts re-read when the wall's events change). Rows are built with DOM calls and textContent only,
// as templates/sites.html renders them for the first paint.
import {connectLive, el, localTime} from "./common.js";

const rows = document.getElementById("site-rows");
const LINKS = {online: "online", offline: "offline", silent: "silent since", unknown: "not heard yet"};

function time(iso) {
  if (!iso) return document.createTextNode("—");
  const node = el("time", null, localTime(iso));
  node.dateTime = iso;
  return node;
}

function cell(label, ...content) {
  const td = el("td");
  if (label) td.dataset.label = label;
  td.append(...content);
  return td;
}

function wallLink(site, text) {
  const link = el("a", null, text);
  link.href = "/?site=" + encodeURIComponent(site.id);
  return link;
}

function buildRow(site) {
  const row = el("tr");
  row.dataset.siteId = site.id;
  row.dataset.link = site.link;
  const name = wallLink(site, site.name);
  name.title = "The wall of this site only";
  const link = cell("Link", el("span", "link link-" + site.link, LINKS[site.link] || site.link));
  if (site.link === "silent") link.append(" ", time(site.last_message_at));
  if (site.offline_event_id) {
    const event = el("a", null, "event " + site.offline_event_id);
    event.href = "/events/" + site.offline_event_id;
    link.append(" ", event);
  }
  row.append(cell(null, name, " ", el("code", "muted", site.id)), link,
    cell("Last message", time(site.last_message_at)), cell("Heartbeat", time(site.heartbeat_at)),
    cell("Outbox", site.outbox_depth === null || site.outbox_depth === undefined ? "—" : String(site.outbox_depth)),
    cell("Version", site.version || "—"), cell("Cameras", String(site.cameras)),
    cell("Active events", wallLink(site, String(site.active_events))));
  return row;
}

function upsert(site) {
  const row = buildRow(site);
  const old = rows.querySelector('[data-site-id="' + CSS.escape(site.id) + '"]');
  if (old) {
    old.replaceWith(row);
    return;
  }
  rows.querySelectorAll(".no-sites").forEach((node) => node.remove());
  // In the server's order: by name, then id.
  const next = Array.from(rows.querySelectorAll("[data-site-id]")).find((other) => {
    const otherName = other.querySelector("td a").textContent;
    return site.name.localeCompare(otherName) < 0
      || (site.name === otherName && site.id < other.dataset.siteId);
  });
  rows.insertBefore(row, next || null);
}

async function reload() {
  const response = await fetch("/api/sites", {credentials: "same-origin"});
  if (!response.ok) return;
  (await response.json()).sites.forEach(upsert);
}

let timer = null;
function reloadSoon() {
  // A burst of events (a site back with its backlog) is one read of the list.
  clearTimeout(timer);
  timer = setTimeout(reload, 500);
}

connectLive({
  seq: Number(document.body.dataset.seq || 0),
  indicator: document.getElementById("connection"),
  onMessage(message) {
    if (message.type === "site.updated") upsert(message.data);
    else if (message.type.startsWith("event.") && message.data && message.data.site) reloadSoon();
  },
  onResync: reload,
});
