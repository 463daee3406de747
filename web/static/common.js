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

// One WebSocket with resume: reconnects with ?since=<last seq>; "resync" when the server lost track.
export function connectLive({seq, onMessage, onResync, indicator}) {
  let lastSeq = seq;
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
  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/ws?since=" + lastSeq);
    socket.onopen = () => {
      retryDelay = 500;
      setState("up", "live");
      if (live.onOpen) live.onOpen();
    };
    socket.onmessage = (frame) => {
      const message = JSON.parse(frame.data);
      if (typeof message.seq === "number") lastSeq = Math.max(lastSeq, message.seq);
      if (message.type === "resync") onResync(message.seq);
      else onMessage(message);
    };
    socket.onclose = (event) => {
      setState("down", "reconnecting…");
      if (event.code === 4401) {
        window.location.assign("/login");
        return;
      }
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }
  connect();
  return live;
}

localizeTimes();
