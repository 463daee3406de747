// Shared by every page: local times, JSON posts with the session's CSRF token, the live connection.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
export const csrf = csrfMeta ? csrfMeta.content : "";

export function localTime(iso) {
  return new Date(iso).toLocaleString([], {dateStyle: "short", timeStyle: "medium"});
}

export function localizeTimes(root = document) {
  root.querySelectorAll("time[datetime]").forEach((node) => {
    if (!node.dataset.localized) {
      node.textContent = localTime(node.dateTime);
      node.dataset.localized = "1";
    }
  });
}

export async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: {"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    body: JSON.stringify(body || {}),
  });
  if (response.status === 401) {
    window.location.assign("/login?next=" + encodeURIComponent(location.pathname));
    throw new Error("signed out");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// One WebSocket with resume: reconnects with ?since=<last seq>; "resync" when the server lost track. Sequence
// numbers are per server (each central node has its own): &bus= names whose they are, and a resync says the new.
// The state of the link is the body's data-connection (see watchLink below).
export function connectLive({seq, onMessage, onResync, indicator}) {
  let lastSeq = seq;
  let busId = document.body.dataset.bus || "";
  let socket = null;
  let retryDelay = 500;
  const setState = (state, text) => {
    if (indicator) {
      indicator.className = "connection connection-" + state;
      indicator.textContent = text;
    }
  };
  const live = {
    send(message) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    },
    onOpen: null,
  };
  const link = watchLink({
    ping() {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send("ping");
    },
    silent() {
      // The socket says nothing (a server gone without closing it): drop it and connect afresh.
      socket.onclose = null;
      socket.close();
      lost({code: 0});
    },
    down() {
      setState("lost", "down");
    },
  });
  function lost(event) {
    if (document.body.dataset.connection !== "down") setState("down", "reconnecting…"); // "down" stays said
    link.lost();
    if (event.code === 4401) {
      window.location.assign("/login");
      return;
    }
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 5000);
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const bus = busId ? "&bus=" + encodeURIComponent(busId) : "";
    socket = new WebSocket(scheme + "//" + location.host + "/ws?since=" + lastSeq + bus);
    socket.onopen = () => {
      retryDelay = 500;
      setState("up", "live");
      link.up();
      if (live.onOpen) live.onOpen();
    };
    socket.onmessage = (frame) => {
      link.heard();
      const message = JSON.parse(frame.data);
      if (message.type === "pong") return;
      if (message.type === "resync") {
        if (typeof message.seq === "number") lastSeq = message.seq; // this server's numbering from now on
        if (typeof message.bus === "string") busId = message.bus;
        onResync(message.seq);
        return;
      }
      if (typeof message.seq === "number") lastSeq = Math.max(lastSeq, message.seq);
      onMessage(message);
    };
    socket.onclose = lost;
  }
  connect();
  return live;
}

// --- The link is loud (issue 16) ------------------------------------------------------------------------------
// body[data-connection] is "live", "reconnecting", or "down" once the server has not been heard for
// LINK_DOWN_AFTER_MS: then a full-width banner says so and a tone sounds (browsers play sound only after the
// guard has touched the page, so the tone is armed by the first click or key). While the link is not live the
// page's actions are held: their buttons disabled, clicks and form posts stopped, and the keys a page names with
// holdKeys ignored. A quiet socket is pinged; one that stays silent is taken for lost (a server that vanished
// without closing it).
const LINK_DOWN_AFTER_MS = 5000;
const LINK_PING_AFTER_MS = 2000;
const LINK_SILENT_AFTER_MS = 4500;
const LINK_TONE_EVERY_MS = 30000;
// Buttons that change something (the live view only looks: it keeps its own buttons), and the alarm page's step
// checkboxes (ticking one records it).
const ACTIONS = "main button[data-action]:not([data-action^=live-]), main form[method=post i] button,"
  + " main form[method=post i] input[type=submit], main input[data-step]";

function linkBanner() {
  let banner = document.getElementById("link-banner");
  if (!banner) {
    banner = el("div", "link-banner", "No connection to vmond: new events do not arrive and actions are paused."
      + " Reconnecting…");
    banner.id = "link-banner";
    banner.setAttribute("role", "alert");
    banner.hidden = true;
    const header = document.querySelector("header.topbar");
    if (header) header.appendChild(banner);
    else document.body.prepend(banner);
  }
  return banner;
}

export function linkIsLive() {
  return !document.body.dataset.connection || document.body.dataset.connection === "live";
}

let linkAudio = null;
function armLinkTone() {
  if (!linkAudio && window.AudioContext) linkAudio = new AudioContext();
  if (linkAudio) linkAudio.resume();
}
function linkTone() {
  if (!linkAudio || linkAudio.state !== "running") return;
  playTones(linkAudio, [[0, 440], [0.35, 330], [0.7, 220]], {volume: 0.2, length: 0.3, type: "square"});
}

// Short tones on *audio* (an AudioContext that may play): [[start s, frequency Hz], ...], each fading out.
export function playTones(audio, tones, {volume = 0.25, length = 0.25, type = "sine"} = {}) {
  tones.forEach(([at, frequency]) => {
    const oscillator = audio.createOscillator();
    const gain = audio.createGain();
    oscillator.type = type;
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(volume, audio.currentTime + at);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + at + length);
    oscillator.connect(gain).connect(audio.destination);
    oscillator.start(audio.currentTime + at);
    oscillator.stop(audio.currentTime + at + length);
  });
}

function holdActions(held) {
  if (held) {
    document.querySelectorAll(ACTIONS).forEach((control) => {
      if (!control.disabled) {
        control.disabled = true;
        control.dataset.linkHeld = "1";
      }
    });
  } else {
    document.querySelectorAll("[data-link-held]").forEach((control) => {
      control.disabled = false;
      delete control.dataset.linkHeld;
    });
  }
}

// Keys that act (e.g. "d" to dismiss) do nothing while the link is not live.
export function holdKeys(keys) {
  const held = new Set(keys.map((key) => key.toLowerCase()));
  document.addEventListener("keydown", (e) => {
    if (!linkIsLive() && held.has(e.key.toLowerCase()) && !e.target.closest("input, textarea, select")) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);
}

function watchLink({ping, silent, down}) {
  const body = document.body;
  const banner = linkBanner();
  let lastHeard = Date.now();
  let lostSince = Date.now(); // not live until the socket opens
  let pinged = false;
  let lastTone = 0;
  const show = (state) => {
    if (body.dataset.connection === state) return;
    body.dataset.connection = state;
    banner.hidden = state !== "down";
    holdActions(state !== "live");
    if (state === "down") {
      down();
      linkTone();
      lastTone = Date.now();
    }
  };
  // Cards and forms drawn while the link is down are held too.
  new MutationObserver(() => { if (!linkIsLive()) holdActions(true); })
    .observe(document.querySelector("main") || body, {childList: true, subtree: true});
  document.addEventListener("click", (e) => {
    if (!linkIsLive() && e.target.closest && e.target.closest(ACTIONS)) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);
  document.addEventListener("submit", (e) => {
    if (!linkIsLive() && (e.target.method || "").toLowerCase() === "post" && e.target.closest("main")) {
      e.preventDefault();
      e.stopImmediatePropagation();
    }
  }, true);
  ["pointerdown", "keydown"].forEach((type) => document.addEventListener(type, armLinkTone, {passive: true}));
  setInterval(() => {
    const now = Date.now();
    if (lostSince === null) {
      const quiet = now - lastHeard;
      if (quiet > LINK_SILENT_AFTER_MS && !document.hidden) {
        lostSince = lastHeard;
        silent();
      } else if (quiet > LINK_PING_AFTER_MS && !pinged) {
        pinged = true;
        ping();
      }
    } else if (now - lostSince >= LINK_DOWN_AFTER_MS) {
      show("down");
      if (now - lastTone >= LINK_TONE_EVERY_MS) {
        linkTone();
        lastTone = now;
      }
    } else {
      show("reconnecting");
    }
  }, 250);
  show("reconnecting");
  return {
    up() {
      lostSince = null;
      lastHeard = Date.now();
      pinged = false;
      show("live");
    },
    heard() {
      lastHeard = Date.now();
      pinged = false;
    },
    lost() {
      if (lostSince === null) lostSince = Date.now();
      if (body.dataset.connection === "live") show("reconnecting");
    },
  };
}

localizeTimes();
