// The alarm page: stays current while others act on the same alarm (in place: a typed note is never lost), and
// shows who else has it open. The action plan's steps are ticked here; after resolving, N opens the next alarm.
import {connectLive, el, localizeTimes, localTime, post} from "./common.js";
import {isCommandMessage, showCommands} from "./commands.js";

const body = document.body;
const alarmId = Number(body.dataset.alarmId);
const me = body.dataset.user;
const viewers = document.getElementById("viewers");

async function refresh() {
  const response = await fetch("/api/alarms/" + alarmId, {credentials: "same-origin"});
  if (!response.ok) return;
  const alarm = await response.json();
  document.getElementById("state").textContent = alarm.state;
  document.getElementById("state").className = "state state-" + alarm.state;
  const notes = document.getElementById("note-list");
  notes.replaceChildren(...alarm.notes.map((note) => {
    const item = el("li");
    item.appendChild(el("span", "meta", (note.author ? note.author.username : "?") + " · " + localTime(note.created_at)));
    item.appendChild(el("p", null, note.text));
    return item;
  }));
  const audit = document.getElementById("audit-list");
  audit.replaceChildren(...alarm.audit.map((entry) => {
    const item = el("li");
    item.dataset.actionName = entry.action;
    item.appendChild(el("span", "meta", localTime(entry.at)));
    item.appendChild(document.createTextNode(" " + entry.text));
    return item;
  }));
  showSnapshot(alarm.snapshot);
  showSteps(alarm.steps);
  showCommands(alarm.commands);
  forgetSentDraft(alarm.notes);
  const handler = document.getElementById("handler");
  const handling = alarm.acknowledged_by ? alarm.acknowledged_by.username : "";
  if (alarm.state !== handler.dataset.state || handling !== handler.dataset.handler) {
    // Someone took the alarm or closed it: the controls change. Take them fresh from the server, in place, so
    // that the note being typed (and the rest of the page) stays as it is.
    await replaceControls(alarm.state !== handler.dataset.state);
  }
}

async function replaceControls(stateChanged) {
  const response = await fetch("/alarms/" + alarmId, {credentials: "same-origin"});  // also shown at .../resolve
  if (!response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  // The resolve form only when the alarm was resolved (or reopened): otherwise it may hold a typed outcome.
  for (const id of stateChanged ? ["handler", "resolve-box", "steps"] : ["handler"]) {
    const fresh = page.getElementById(id);
    const current = document.getElementById(id);
    if (fresh && current) current.replaceWith(document.adoptNode(fresh));
  }
  dropStepForms();
  localizeTimes();
}

// --- the draft note: kept per alarm in sessionStorage, so a reload, a reconnect or a takeover never loses it ----
const draftKey = "vmond.note-draft." + alarmId;
const noteForm = document.getElementById("note-form");
const noteBox = noteForm.querySelector('textarea[name="text"]');

function restoreDraft() {
  const draft = sessionStorage.getItem(draftKey);
  if (draft && !noteBox.value) noteBox.value = draft;
}

function forgetSentDraft(notes) {
  // A note sent with the form is forgotten once the alarm shows it (a failed send keeps the draft).
  const sent = sessionStorage.getItem(draftKey + ".sent");
  if (sent === null || !notes.some((note) => note.text === sent.trim())) return;
  if (noteBox.value === sessionStorage.getItem(draftKey)) noteBox.value = "";
  sessionStorage.removeItem(draftKey);
  sessionStorage.removeItem(draftKey + ".sent");
}

noteBox.addEventListener("input", () => {
  if (noteBox.value) sessionStorage.setItem(draftKey, noteBox.value);
  else sessionStorage.removeItem(draftKey);
});
noteForm.addEventListener("submit", () => sessionStorage.setItem(draftKey + ".sent", noteBox.value));
restoreDraft();

// --- action plan steps: [data-step] checkboxes; ticking one records who did it and when, live for everyone ------
function showSteps(steps) {
  (steps || []).forEach((step) => {
    const box = document.querySelector('[data-step="' + step.n + '"]');
    if (!box) return;
    if (step.done_by) {
      box.checked = true;
      box.disabled = true;
    }
    const done = document.querySelector('[data-step-done="' + step.n + '"]');
    if (done) done.textContent = step.done_by ? step.done_by.username + " · " + localTime(step.done_at) : "";
  });
}

// The "Done" forms are for browsers without JavaScript; here the checkbox itself records the step.
function dropStepForms() {
  document.querySelectorAll(".step-form").forEach((form) => form.remove());
}
dropStepForms();

document.addEventListener("change", async (e) => {
  const box = e.target.closest("[data-step]");
  if (!box || !box.checked) return;
  box.disabled = true;
  try {
    const answer = await post("/api/alarms/" + alarmId + "/steps/" + box.dataset.step);
    if (answer.command) {  // a site's alarm, on a central: the step is ticked once the site has done it
      showCommands((await (await fetch("/api/alarms/" + alarmId, {credentials: "same-origin"})).json()).commands);
    } else showSteps(answer.steps);
  } catch (error) {
    box.checked = false;
    box.disabled = false;
    const done = document.querySelector('[data-step-done="' + box.dataset.step + '"]');
    if (done) done.textContent = "Not recorded: " + error.message;
  }
});

// --- after resolving: N opens the next open alarm -----------------------------------------------------------------
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
  const next = document.querySelector('[data-action="next-alarm"]');
  if (next && (e.key === "n" || e.key === "N")) {
    e.preventDefault();
    window.location.assign(next.href);
  }
});

// The camera's picture at the moment of raising (live.snapshot_on_alarm) arrives a moment after the page.
function showSnapshot(snapshot) {
  const box = document.getElementById("raised-snapshot");
  if (!box || !snapshot || box.dataset.shown === snapshot.state) return;
  box.dataset.shown = snapshot.state;
  if (snapshot.state === "ready") {
    const image = el("img");
    image.src = snapshot.url;
    image.width = snapshot.width;
    image.height = snapshot.height;
    image.alt = "The camera's picture at the moment the alarm was raised";
    const caption = el("figcaption");
    caption.append(el("strong", null, "At the moment of raising"),
      " · " + localTime(snapshot.taken_at) + " · taken by vmond from the camera's stream (not sent by the camera)");
    const figure = el("figure");
    figure.append(image, caption);
    box.replaceChildren(figure);
  } else if (snapshot.state === "failed") {
    box.replaceChildren(el("p", "warn", "No picture from the moment of raising: " + snapshot.error));
  }
}

function showViewers(users) {
  const others = users.filter((name) => name !== me);
  viewers.textContent = others.length ? "Also looking at this alarm: " + others.join(", ") : "";
}

const live = connectLive({
  seq: Number(body.dataset.seq || 0),
  indicator: document.getElementById("connection"),
  onMessage(message) {
    if (message.type === "alarm.updated" && message.data.id === alarmId) refresh();
    if (isCommandMessage(message) && message.data.alarm_id === alarmId) refresh();
    if (message.type === "alarm.viewers" && message.data.alarm_id === alarmId) showViewers(message.data.users);
  },
  onResync: refresh,
});
live.onOpen = () => live.send({type: "watch", alarm_id: alarmId});

refresh().then(localizeTimes);
