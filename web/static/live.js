// Live view of a camera, for every element with data-live-camera="<id>" on the page.
//
// The server streams JPEGs as multipart/x-mixed-replace (GET /api/cameras/<id>/live). An <img> could show that
// stream by itself, but could not say why it failed; so the parts are read here with fetch() and each picture
// shown from a blob: URL (allowed by the page's CSP). Failure is always text, never a spinner forever: the
// server's {"error": ...} before the first picture or as the stream's last part, a stream that goes quiet, a
// network error. The stream is closed when the page is hidden or left, so an unwatched camera costs nothing.
import {el, localTime} from "./common.js";

const STALE_AFTER = 6000; // ms without a picture before the guard is told the picture is old
// A forgotten tab must not hold one of the appliance's few streams (live.max_streams) for the whole shift.
const STOP_AFTER = 5 * 60 * 1000;
const encoder = new TextEncoder();
const HEADER_END = encoder.encode("\r\n\r\n");

function indexOf(haystack, needle, from = 0) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

// Calls onPart(contentType, bytes, headers) for each complete part; resolves when the stream ends.
async function readParts(response, onPart) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(0);
  for (;;) {
    for (;;) {
      const headerEnd = indexOf(buffer, HEADER_END);
      if (headerEnd < 0) break;
      const headers = decoder.decode(buffer.subarray(0, headerEnd));
      const length = /content-length:\s*(\d+)/i.exec(headers);
      if (!length) throw new Error("the server sent a part without a length");
      const start = headerEnd + HEADER_END.length;
      const end = start + Number(length[1]);
      if (buffer.length < end) break;
      const type = (/content-type:\s*([^\r\n;]+)/i.exec(headers) || [])[1] || "";
      onPart(type.trim(), buffer.slice(start, end), headers);
      buffer = buffer.slice(end); // the CRLF and boundary before the next part are part of its header text
    }
    const {value, done} = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
  }
}

class LiveView {
  constructor(root) {
    this.root = root;
    this.cameraId = root.dataset.liveCamera;
    this.picture = root.querySelector(".live-picture");
    this.status = root.querySelector(".live-status");
    this.time = root.querySelector(".live-time");
    this.button = root.querySelector('[data-action="live-toggle"]');
    this.wanted = root.dataset.liveAutostart === "true";
    this.controller = null;
    this.frames = 0;
    this.lastPictureAt = 0;
    this.objectUrl = null;
    this.stopTimer = null;
    this.button.addEventListener("click", () => {
      this.wanted = !this.running();
      if (this.wanted) this.start(); else this.stop("Live view is off.");
    });
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) this.stop("Live view paused while the page is hidden.", true);
      else if (this.wanted && !this.running()) this.start();
    });
    // Leaving the page: close the stream now rather than when the browser gets round to it.
    window.addEventListener("pagehide", () => this.stop("Live view is off.", true));
    setInterval(() => this.checkStale(), 1000);
    if (this.wanted && !document.hidden) this.start();
    else this.show("off", "Live view is off.");
  }

  running() {
    return this.controller !== null;
  }

  show(state, text) {
    this.root.dataset.state = state;
    this.status.textContent = text;
    this.status.className = "live-status" + (state === "error" ? " error" : state === "stale" ? " warn" : "");
    this.button.textContent = this.running() ? "Stop live view" : state === "error" ? "Try again" : "Start live view";
  }

  async start() {
    const controller = new AbortController();
    this.controller = controller;
    this.show("connecting", "Connecting to the camera…");
    clearTimeout(this.stopTimer);
    this.stopTimer = setTimeout(() => {
      if (this.controller === controller) this.stop("Live view stopped after 5 minutes, to free the camera's stream.");
    }, STOP_AFTER);
    try {
      const response = await fetch("/api/cameras/" + this.cameraId + "/live", {
        credentials: "same-origin", cache: "no-store", signal: controller.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error || response.status + " " + response.statusText);
      }
      let failure = null;
      await readParts(response, (type, bytes, headers) => {
        if (type === "image/jpeg") this.showPicture(bytes, headers);
        else if (type === "application/json") failure = JSON.parse(new TextDecoder().decode(bytes)).error;
      });
      if (this.controller !== controller) return;
      this.controller = null;
      this.show("error", "Live view ended: " + (failure || "the server closed the stream"));
    } catch (error) {
      if (this.controller !== controller) return; // stopped on purpose
      this.controller = null;
      this.show("error", "Live view unavailable: " + (error.message || "network error"));
    }
  }

  stop(text, keepWanted = false) {
    if (!keepWanted) this.wanted = false;
    clearTimeout(this.stopTimer);
    const controller = this.controller;
    this.controller = null;
    if (controller) controller.abort();
    this.show("off", text);
  }

  showPicture(bytes, headers) {
    const url = URL.createObjectURL(new Blob([bytes], {type: "image/jpeg"}));
    const previous = this.objectUrl;
    this.objectUrl = url;
    this.picture.onload = () => { if (previous) URL.revokeObjectURL(previous); };
    this.picture.src = url;
    this.picture.hidden = false;
    this.frames += 1;
    this.lastPictureAt = Date.now();
    this.root.dataset.frames = String(this.frames);
    const taken = /x-taken-at:\s*(\S+)/i.exec(headers);
    if (this.time) this.time.textContent = "picture of " + localTime(taken ? taken[1] : new Date().toISOString());
    if (this.root.dataset.state !== "live") this.show("live", "Live");
  }

  checkStale() {
    if (!this.running() || !this.lastPictureAt || this.root.dataset.state === "connecting") return;
    const age = Date.now() - this.lastPictureAt;
    if (age > STALE_AFTER && this.root.dataset.state !== "stale") {
      this.show("stale", "No new picture for " + Math.round(age / 1000) + " s: the camera or the network is slow");
    }
  }
}

// A snapshot button: the camera's current picture (or why there is none), shown next to the live view.
function attachSnapshot(root) {
  const button = root.querySelector('[data-action="live-snapshot"]');
  const figure = root.querySelector(".live-snapshot");
  if (!button || !figure) return;
  let objectUrl = null;
  button.addEventListener("click", async () => {
    button.disabled = true;
    figure.replaceChildren(el("p", "muted", "Taking a picture…"));
    figure.hidden = false;
    try {
      const response = await fetch("/api/cameras/" + root.dataset.liveCamera + "/snapshot",
        {credentials: "same-origin", cache: "no-store"});
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error || response.status + " " + response.statusText);
      }
      const image = el("img");
      image.alt = "Snapshot";
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(await response.blob());
      image.src = objectUrl;
      const taken = response.headers.get("X-Taken-At");
      figure.replaceChildren(image, el("figcaption", "muted", "Snapshot of " + localTime(taken || new Date().toISOString())));
    } catch (error) {
      figure.replaceChildren(el("p", "error", "No snapshot: " + error.message));
    } finally {
      button.disabled = false;
    }
  });
}

document.querySelectorAll("[data-live-camera]").forEach((root) => {
  root.liveView = new LiveView(root);
  attachSnapshot(root);
});
