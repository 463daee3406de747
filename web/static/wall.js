// The alarm wall: active events as cards, kept live over /ws, resumed after a dropped connection.
// Cards are built with DOM calls and textContent only: nothing from a camera is ever parsed as HTML.
(function () {
  "use strict";

  const wall = document.getElementById("wall");
  const empty = document.getElementById("empty");
  const count = document.getElementById("count");
  const connection = document.getElementById("connection");
  const notice = document.getElementById("notice");
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  const events = new Map(); // id -> event
  let lastSeq = Number(document.body.dataset.seq || 0);
  let socket = null;
  let retryDelay = 500;
  let resyncing = false;
  let heldDuringResync = [];

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function age(iso) {
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return seconds + "s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m ago";
    return Math.floor(seconds / 86400) + "d ago";
  }

  function clock(iso) {
    return new Date(iso).toLocaleString([], {dateStyle: "short", timeStyle: "medium"});
  }

  function buildCard(event) {
    const card = el("article", "event-card");
    card.dataset.eventId = String(event.id);
    card.tabIndex = 0;

    const media = el("div", "event-media");
    if (event.video && event.video.state === "ready" && event.video.url) {
      const video = el("video");
      video.src = event.video.url;
      video.muted = true;
      video.loop = true;
      video.autoplay = true;
      video.playsInline = true;
      if (event.images.length) video.poster = event.images[0].thumbnail_url;
      media.appendChild(video);
    } else if (event.images.length) {
      const img = el("img");
      img.src = event.images[0].thumbnail_url;
      img.alt = "Snapshot from " + (event.camera ? event.camera.name : "camera");
      img.loading = "lazy";
      media.appendChild(img);
      if (event.images.length > 1) media.appendChild(el("span", "badge", event.images.length + " pictures"));
    } else {
      media.appendChild(el("span", "no-picture", "no picture"));
    }
    card.appendChild(media);

    const body = el("div", "event-body");
    body.appendChild(el("h2", "event-type", event.event_type));
    const where = [event.camera ? event.camera.name : "unknown camera", event.account ? event.account.name : ""]
      .filter(Boolean).join(" · ");
    body.appendChild(el("p", "event-where", where));
    const when = el("p", "event-when");
    const timeEl = el("time", null, clock(event.event_time));
    timeEl.dateTime = event.event_time;
    when.appendChild(timeEl);
    when.appendChild(el("span", "event-age", age(event.received_at)));
    body.appendChild(when);
    if (event.flags && event.flags.length) body.appendChild(el("p", "event-flags", event.flags.join(", ")));
    card.appendChild(body);

    const actions = el("div", "event-actions");
    const dismiss = el("button", "dismiss", "Dismiss");
    dismiss.type = "button";
    dismiss.dataset.action = "dismiss";
    dismiss.title = "Dismiss this event (D)";
    const alarm = el("button", "alarm", "Raise alarm");
    alarm.type = "button";
    alarm.dataset.action = "alarm";
    alarm.disabled = true;
    alarm.title = "Alarm tickets arrive with the alarm workflow";
    actions.appendChild(dismiss);
    actions.appendChild(alarm);
    card.appendChild(actions);
    return card;
  }

  function cardFor(id) {
    return wall.querySelector('[data-event-id="' + String(id) + '"]');
  }

  function showCount() {
    const n = events.size;
    count.textContent = n === 1 ? "1 active event" : n + " active events";
    empty.hidden = n !== 0;
  }

  function upsert(event, live) {
    if (event.status !== "active" || event.is_test) {
      remove(event.id);
      return;
    }
    const fresh = !events.has(event.id);
    events.set(event.id, event);
    const card = buildCard(event);
    const old = cardFor(event.id);
    if (old) {
      old.replaceWith(card);
    } else {
      // Newest first, by arrival time.
      const next = Array.from(wall.children).find(function (other) {
        const o = events.get(Number(other.dataset.eventId));
        return o && Date.parse(o.received_at) < Date.parse(event.received_at);
      });
      wall.insertBefore(card, next || null);
      if (fresh && live) {
        card.classList.add("is-new");
        card.addEventListener("animationend", function () { card.classList.remove("is-new"); }, {once: true});
      }
    }
    showCount();
  }

  function remove(id) {
    events.delete(id);
    const card = cardFor(id);
    if (card) card.remove();
    showCount();
  }

  function replaceAll(list) {
    events.clear();
    wall.replaceChildren();
    list.forEach(function (event) { upsert(event, false); });
    showCount();
  }

  function setConnection(state, text) {
    connection.className = "connection connection-" + state;
    connection.textContent = text;
  }

  function flash(message) {
    notice.textContent = message;
    notice.hidden = false;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(function () { notice.hidden = true; }, 6000);
  }

  function apply(message) {
    if (typeof message.seq === "number") lastSeq = Math.max(lastSeq, message.seq);
    const data = message.data;
    switch (message.type) {
      case "event.created":
      case "event.updated":
        upsert(data, message.type === "event.created");
        break;
      case "event.dismissed":
        remove(data.id);
        break;
      default:
        break;
    }
  }

  async function resync(seq) {
    // The server no longer holds what we missed: reload the list, then apply what arrived meanwhile.
    resyncing = true;
    heldDuringResync = [];
    try {
      const response = await fetch("/api/events?status=active&limit=200", {credentials: "same-origin"});
      if (response.status === 401) { window.location.assign("/login"); return; }
      const body = await response.json();
      lastSeq = Math.max(lastSeq, seq);
      replaceAll(body.events);
    } finally {
      resyncing = false;
      heldDuringResync.forEach(apply);
      heldDuringResync = [];
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws?since=" + lastSeq);
    socket.onopen = function () {
      retryDelay = 500;
      setConnection("up", "live");
    };
    socket.onmessage = function (frame) {
      const message = JSON.parse(frame.data);
      if (message.type === "resync") {
        resync(message.seq);
      } else if (resyncing) {
        heldDuringResync.push(message);
      } else {
        apply(message);
      }
    };
    socket.onclose = function (closeEvent) {
      setConnection("down", "reconnecting…");
      if (closeEvent.code === 1008 || closeEvent.code === 4401) { window.location.assign("/login"); return; }
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  async function act(card, action) {
    const id = Number(card.dataset.eventId);
    const button = card.querySelector('[data-action="' + action + '"]');
    if (button) button.disabled = true;
    try {
      const response = await fetch("/api/events/" + id + "/" + action, {
        method: "POST",
        credentials: "same-origin",
        headers: {"X-CSRF-Token": csrf},
      });
      if (response.status === 401) { window.location.assign("/login"); return; }
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      if (action === "dismiss") remove(id); else upsert(body, false);
    } catch (error) {
      flash("Could not " + action + " event " + id + ": " + error.message);
      if (button) button.disabled = false;
    }
  }

  wall.addEventListener("click", function (e) {
    const button = e.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const card = button.closest("[data-event-id]");
    if (card) act(card, button.dataset.action);
  });

  wall.addEventListener("keydown", function (e) {
    const card = e.target.closest("[data-event-id]");
    if (!card || e.target !== card) return;
    if (e.key === "d" || e.key === "D") { e.preventDefault(); act(card, "dismiss"); }
  });

  setInterval(function () {
    wall.querySelectorAll("[data-event-id]").forEach(function (card) {
      const event = events.get(Number(card.dataset.eventId));
      const span = card.querySelector(".event-age");
      if (event && span) span.textContent = age(event.received_at);
    });
  }, 1000);

  replaceAll(JSON.parse(document.getElementById("initial-events").textContent));
  connect();
})();
