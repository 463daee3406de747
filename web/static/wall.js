// The alarm wall: active events as cards, kept live over /ws, resumed after a dropped connection.
// Cards are built with DOM calls and textContent only: nothing from a camera is ever parsed as HTML.
// Keys: arrows move between cards, D dismisses, A raises an alarm, Enter opens.
import {isCommandMessage, showOnCard} from "./commands.js";
import {connectLive, el, localTime, playTones, post} from "./common.js";
import {safeDismiss} from "./dismiss.js";
import {openAlarmStrip} from "./openalarms.js";
import {wallSites} from "./wallsites.js";

const wall = document.getElementById("wall");
const empty = document.getElementById("empty");
const count = document.getElementById("count");
const notice = document.getElementById("notice");
const soundButton = document.getElementById("sound");

const events = new Map(); // id -> event
// On a central station: the site on each card, the filter by site and grouping (web/static/wallsites.js).
const sites = wallSites({wall, events, queueBefore: (a, b) => queueBefore(a, b)});
const sent = new Map(); // on a central: event id -> the newest command sent to its site about it (issue 18)
let resyncing = false;
let heldDuringResync = [];

// --- sound: browsers only play after a user gesture, so the guard switches it on once -------------------------
let audio = null;
function soundOn() {
  return localStorage.getItem("vmond.sound") === "on";
}
function showSound() {
  soundButton.textContent = soundOn() ? "Sound on" : "Enable sound";
  soundButton.setAttribute("aria-pressed", String(soundOn()));
}
function beep() {
  if (!soundOn()) return;
  audio = audio || new AudioContext();
  playTones(audio, [[0, 880], [0.3, 660]]);
}
soundButton.addEventListener("click", () => {
  localStorage.setItem("vmond.sound", soundOn() ? "off" : "on");
  showSound();
  if (soundOn()) {
    audio = audio || new AudioContext();
    audio.resume();
    beep();
  }
});
showSound();

// --- the queue: most urgent first, then the longest waiting; ages, escalation, focus that follows the queue -------
// Cards carry [data-event-id][data-priority][data-kind] in queue order: the first is the next to handle.
const clockOffset = (() => {
  // Ages count on the appliance's clock (it stamped received_at), not on this PC's, when the two disagree.
  const offset = Date.parse(document.body.dataset.now || "") - Date.now();
  return Number.isNaN(offset) || Math.abs(offset) < 2000 ? 0 : offset;
})();
const escalateAfterMs = 1000 * Number(document.body.dataset.escalateAfter || 60);
const escalated = new Set(); // ids already escalated: each sounds once

function queueNow() {
  return Date.now() + clockOffset;
}

function queueBefore(a, b) {
  // Priority (1 first), then time of receipt (never the camera's clock), then id: as the server lists the queue.
  if (a.priority !== b.priority) return a.priority < b.priority;
  const at = Date.parse(a.received_at);
  const bt = Date.parse(b.received_at);
  return at !== bt ? at < bt : a.id < b.id;
}

function placeInQueue(card, event) {
  const cards = Array.from(wall.querySelectorAll(":scope > [data-event-id]")).filter((other) => other !== card);
  const next = cards.find((other) => {
    const o = events.get(Number(other.dataset.eventId));
    return o && queueBefore(event, o);
  });
  const after = next || (cards.length ? cards[cards.length - 1].nextSibling : null);
  if (card.nextSibling !== after || card.parentNode !== wall) wall.insertBefore(card, after);
}

function isOverdue(event) {
  return queueNow() - Date.parse(event.received_at) >= escalateAfterMs;
}

function showEscalation(card, late) {
  card.classList.toggle("is-escalated", late);
  card.toggleAttribute("data-escalated", late);
}

function decorateQueueCard(card, event) {
  card.dataset.priority = String(event.priority);
  card.dataset.kind = event.kind;
  const label = el("p", "queue-label");
  const priority = el("span", "queue-priority queue-p" + event.priority, "P" + event.priority);
  priority.title = "Priority " + event.priority + " (1 is the most urgent)";
  label.append(priority, " ", el("span", "queue-kind", event.kind.replace(/_/g, " ")));
  card.querySelector(".event-body").prepend(label);
  showEscalation(card, isOverdue(event));
}

function escalateOverdue() {
  let fresh = false;
  wall.querySelectorAll("[data-event-id]").forEach((card) => {
    const event = events.get(Number(card.dataset.eventId));
    if (!event) return;
    const late = isOverdue(event);
    showEscalation(card, late);
    if (late && !escalated.has(event.id)) {
      escalated.add(event.id);
      fresh = true;
    }
  });
  // Kept after a card leaves: one brought back (Undo, a restore) has sounded already. Bounded, oldest out first.
  for (const id of escalated) {
    if (escalated.size <= 2000) break;
    escalated.delete(id);
  }
  if (fresh) escalationBeep();
}

function escalationBeep() {
  // Three short high pips, unlike the two-tone of a new event; only once the guard switched sound on.
  if (!soundOn()) return;
  audio = audio || new AudioContext();
  playTones(audio, [[0, 1320], [0.18, 1320], [0.36, 1320]], {volume: 0.12, length: 0.12, type: "square"});
}

function focusAfterRemoval(card) {
  // Focus follows the queue: from a card that leaves to the one after it (the new first, when it was first).
  // With nothing focused (a clicked button is disabled while its request runs) the first card takes the keys.
  if (!card) return;
  const active = document.activeElement;
  const inside = card.contains(active);
  if (!inside && active && active !== document.body) return;
  const cards = Array.from(wall.querySelectorAll("[data-event-id]"));
  const index = cards.indexOf(card);
  const next = inside ? cards[index + 1] || cards[index - 1] : cards.find((other) => other !== card);
  if (next) next.focus({preventScroll: !inside});
}

function focusQueueHead() {
  // With nothing focused, the keys act on the next card to handle.
  if (document.activeElement && document.activeElement !== document.body) return;
  const first = wall.querySelector("[data-event-id]");
  if (first) first.focus();
}

function startQueue() {
  escalateOverdue();
  focusQueueHead();
  setInterval(escalateOverdue, 1000);
}

// --- cards --------------------------------------------------------------------------------------------------
function age(iso) {
  const seconds = Math.max(0, Math.round((queueNow() - Date.parse(iso)) / 1000));
  if (seconds < 60) return seconds + "s ago";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m ago";
  return Math.floor(seconds / 86400) + "d ago";
}

// Which camera it was and when, as vmond/web/display.py says it on the server-rendered pages.
const CLOCK_TOLERANCE_MS = 60 * 1000;

function sourceLabel(event) {
  let name = event.camera_name;
  let channel = event.channel;
  if (name && event.camera && name.toLowerCase() === event.camera.name.toLowerCase()) name = null;
  if (channel && !channel.toLowerCase().includes("ch")) channel = "ch " + channel;
  if (name && channel) return name + " (" + channel + ")";
  return name || channel || "";
}

function cameraClock(event) {
  // The camera's own clock, shown as such when it disagrees with the time of receipt (which orders the wall).
  const told = Date.parse(event.event_time);
  const received = Date.parse(event.received_at);
  if (Number.isNaN(told) || Math.abs(told - received) <= CLOCK_TOLERANCE_MS) return null;
  const node = el("span", "camera-clock", "camera clock: ");
  const sameDay = new Date(told).toDateString() === new Date(received).toDateString();
  const time = el("time", null, sameDay ? new Date(told).toLocaleTimeString() : localTime(event.event_time));
  time.dateTime = event.event_time;
  node.appendChild(time);
  node.title = "The time the camera's own clock gave; events are filed by the time vmond received them";
  return node;
}

function button(action, label, title) {
  const node = el("button", action, label);
  node.type = "button";
  node.dataset.action = action;
  node.title = title;
  return node;
}

// Supervision: vmond's own events (vmond/util/kinds.py); those of the appliance itself have no camera.
const SUPERVISION_KINDS = new Set(["camera_silent", "site_offline", "disk_low", "mqtt_down", "clips_failing",
  "spool_stuck"]);

function withoutCamera(event) {
  if (!SUPERVISION_KINDS.has(event.kind)) return "unknown camera";
  return sites.siteName(event) || "This appliance"; // on a central: the site it is about
}

function buildCard(event) {
  const card = el("article", "event-card");
  card.dataset.eventId = String(event.id);
  card.tabIndex = 0;
  const source = sourceLabel(event);
  card.setAttribute("aria-label", event.event_type + (event.camera ? ", " + event.camera.name : "")
    + (source ? ", " + source : ""));

  const media = el("a", "event-media");
  media.href = "/events/" + event.id;
  media.tabIndex = -1;
  // A site's event on a central station shows its thumbnail: its clip is fetched from the site only when opened.
  if (!event.site && event.video && event.video.state === "ready" && event.video.url) {
    const video = el("video");
    Object.assign(video, {src: event.video.url, muted: true, loop: true, autoplay: true, playsInline: true});
    if (event.images.length) video.poster = event.images[0].thumbnail_url;
    media.appendChild(video);
  } else if (event.images.length) {
    const img = el("img");
    img.src = event.images[0].thumbnail_url;
    img.alt = "Snapshot from " + (event.camera ? event.camera.name : "camera");
    media.appendChild(img);
  } else {
    media.appendChild(el("span", "no-picture", "no picture"));
  }
  // Also over the clip: how many pictures the camera sent is worth knowing either way.
  if (event.images.length > 1) media.appendChild(el("span", "badge", event.images.length + " pictures"));
  card.appendChild(media);

  const body = el("div", "event-body");
  body.appendChild(el("h2", "event-type", event.event_type));
  const where = el("p", "event-where", event.camera ? event.camera.name : withoutCamera(event));
  if (source) where.append(" · ", el("bdi", "event-source", source));
  if (event.account) where.append(" · " + event.account.name);
  body.appendChild(where);
  const when = el("p", "event-when");
  const received = el("time", "event-received", localTime(event.received_at));
  received.dateTime = event.received_at;
  received.title = "Received";
  when.appendChild(received);
  when.appendChild(el("span", "event-age", age(event.received_at)));
  body.appendChild(when);
  const clock = cameraClock(event);
  if (clock) body.appendChild(clock);
  if (event.flags && event.flags.length) body.appendChild(el("p", "event-flags", event.flags.join(", ")));
  if (SUPERVISION_KINDS.has(event.kind)) body.appendChild(el("p", "event-subject", event.subject));
  card.appendChild(body);

  const actions = el("div", "event-actions");
  actions.appendChild(button("dismiss", "Dismiss", "Dismiss this event (D)"));
  actions.appendChild(button("alarm", "Raise alarm", "Raise an alarm and work it (A)"));
  card.appendChild(actions);
  decorateQueueCard(card, event);
  sites.decorate(card, event);
  return card;
}

function cardFor(id) {
  return wall.querySelector('[data-event-id="' + String(id) + '"]');
}

function showCount() {
  const n = events.size;
  count.textContent = n === 1 ? "1 active event" : n + " active events";
  empty.hidden = n !== 0;
  document.title = (n ? "(" + n + ") " : "") + "Alarm wall · vmond";
}

// Schedules and snooze: an event recorded while its account was not monitored or its camera snoozed is kept, but
// not on the wall (no card, no sound).
const OFF_WALL_FLAGS = ["unmonitored", "snoozed"];

function offWall(event) {
  return (event.flags || []).some((flag) => OFF_WALL_FLAGS.includes(flag));
}

function upsert(event, live) {
  if (event.status !== "active" || event.is_test || offWall(event) || !sites.accepts(event)) {
    remove(event.id);
    return;
  }
  const fresh = !events.has(event.id);
  events.set(event.id, event);
  const card = buildCard(event);
  showSent(card, event);
  const old = cardFor(event.id);
  if (old) {
    const focused = old.contains(document.activeElement); // the card, or its checkbox or a button in it
    old.replaceWith(card);
    placeInQueue(card, event); // a more urgent mail may have raised its priority
    sites.arrange();
    if (focused) card.focus();
  } else {
    placeInQueue(card, event);
    sites.arrange();
    if (fresh && live) {
      card.classList.add("is-new");
      card.addEventListener("animationend", () => card.classList.remove("is-new"), {once: true});
      beep();
    }
  }
  showCount();
}

// A site's event on a central: what became of the action sent to the site ("sent to Site A, waiting", refused ...).
function showSent(card, event) {
  showOnCard(card, sent.get(event.id), event.site && event.site.name);
}

function noteSent(command) {
  if (!command.event_id || command.alarm_id) return; // an alarm's commands are shown on its page
  sent.set(command.event_id, command);
  const card = cardFor(command.event_id);
  if (card && events.has(command.event_id)) showSent(card, events.get(command.event_id));
}

function remove(id) {
  const card = cardFor(id);
  focusAfterRemoval(card);
  events.delete(id);
  if (card) card.remove();
  sites.arrange();
  showCount();
}

function replaceAll(list) {
  // Redrawn from the server's list (a resync): the keys stay on the card they were on, else on the queue's head.
  const active = document.activeElement;
  const focusedId = active && wall.contains(active) && active.closest("[data-event-id]")
    ? active.closest("[data-event-id]").dataset.eventId : null;
  events.clear();
  wall.replaceChildren();
  list.forEach((event) => upsert(event, false));
  showCount();
  const again = focusedId && cardFor(focusedId);
  if (again) again.focus({preventScroll: true});
  else focusQueueHead();
}

function flash(message) {
  notice.textContent = message;
  notice.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { notice.hidden = true; }, 6000);
}

function apply(message) {
  const data = message.data;
  if (message.type === "event.created" || message.type === "event.updated") upsert(data, message.type === "event.created");
  else if (message.type === "event.dismissed") remove(data.id);
  else if (isCommandMessage(message)) noteSent(data);
  openAlarms.apply(message);
}

const RESYNC_RETRY_MS = 2000;
let resyncRound = 0;

async function resync() {
  // The server no longer holds what we missed: reload the list, then apply what arrived meanwhile. A failed
  // reload (a busy or restarting server) leaves the cards as they are and is tried again, never an empty wall.
  const round = ++resyncRound;
  let failed = false;
  resyncing = true;
  heldDuringResync = [];
  for (;;) {
    try {
      const response = await fetch("/api/events?status=active&order=queue&limit=200" + sites.query, {credentials: "same-origin"});
      if (response.status === 401) {
        window.location.assign("/login");
        return;
      }
      if (!response.ok) throw new Error("the server answered " + response.status);
      const list = (await response.json()).events;
      if (round !== resyncRound) return; // a newer resync took over
      replaceAll(list);
      await openAlarms.resync();
      break;
    } catch (error) {
      if (round !== resyncRound) return;
      failed = true;
      flash("Could not bring the wall up to date (" + error.message + "): trying again");
      await new Promise((resolve) => setTimeout(resolve, RESYNC_RETRY_MS));
      if (round !== resyncRound) return;
    }
  }
  resyncing = false;
  heldDuringResync.forEach(apply);
  heldDuringResync = [];
  if (failed) notice.hidden = true; // the wall is up to date again
}

async function act(card, action) {
  const id = Number(card.dataset.eventId);
  const control = card.querySelector('[data-action="' + action + '"]');
  if (control) control.disabled = true;
  const shown = events.get(id); // for the Undo bar: the live message may take the card away before the answer
  try {
    const result = await post("/api/events/" + id + "/" + action);
    if (result.command) {  // a site's event, on a central: sent to the site, the card says what becomes of it
      noteSent(result.command);
    } else if (action === "dismiss") {
      dismissing.offerUndo([shown]);
      remove(id);
    } else window.location.assign("/alarms/" + result.id);
  } catch (error) {
    flash("Could not " + (action === "alarm" ? "raise an alarm for" : action) + " event " + id + ": " + error.message);
    if (control) control.disabled = false;
  }
}

wall.addEventListener("click", (e) => {
  const control = e.target.closest("button[data-action]");
  if (!control || control.disabled) return;
  const card = control.closest("[data-event-id]");
  if (card) act(card, control.dataset.action);
});

function moveFocus(card, step) {
  const cards = Array.from(wall.querySelectorAll("[data-event-id]"));
  if (!cards.length) return;
  if (!card) {
    cards[0].focus();
    return;
  }
  // Left/right walk the grid in order; up/down jump a row of the grid.
  const columns = getComputedStyle(wall).gridTemplateColumns.split(" ").length;
  const index = cards.indexOf(card) + (Math.abs(step) === 2 ? Math.sign(step) * columns : step);
  cards[Math.max(0, Math.min(cards.length - 1, index))].focus();
}

document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
  const card = document.activeElement && document.activeElement.closest("[data-event-id]");
  const steps = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: 2, ArrowUp: -2};
  if (e.key in steps) {
    e.preventDefault();
    moveFocus(card, steps[e.key]);
  } else if (card && (e.key === "d" || e.key === "D")) {
    e.preventDefault();
    act(card, "dismiss");
  } else if (card && (e.key === "a" || e.key === "A")) {
    e.preventDefault();
    act(card, "alarm");
  } else if (card && e.key === "Enter" && e.target === card) {
    e.preventDefault();
    window.location.assign("/events/" + card.dataset.eventId);
  }
});

setInterval(() => {
  wall.querySelectorAll("[data-event-id]").forEach((card) => {
    const event = events.get(Number(card.dataset.eventId));
    const span = card.querySelector(".event-age");
    if (event && span) span.textContent = age(event.received_at);
  });
}, 1000);

// Dismiss made safe (issue 16): undo, and selecting cards to dismiss together (web/static/dismiss.js).
const dismissing = safeDismiss({wall, events, upsert, remove, flash});

// The open-alarms strip (web/static/openalarms.js), its ages on the appliance's clock as the cards'.
const openAlarms = openAlarmStrip({now: queueNow});

replaceAll(JSON.parse(document.getElementById("initial-events").textContent));
startQueue();
connectLive({
  seq: Number(document.body.dataset.seq || 0),
  indicator: document.getElementById("connection"),
  onMessage(message) {
    if (resyncing) heldDuringResync.push(message);
    else apply(message);
  },
  onResync: resync,
});
