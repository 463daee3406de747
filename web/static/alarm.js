// The alarm page: stays current while others act on the same alarm, and shows who else has it open.
import {connectLive, el, localizeTimes, localTime} from "./common.js";

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
    item.appendChild(el("span", "meta", localTime(entry.at) + " · " + (entry.who ? entry.who.username : "system")));
    item.appendChild(document.createTextNode(" " + entry.action));
    return item;
  }));
  showSnapshot(alarm.snapshot);
  const handler = document.getElementById("handler");
  const handling = alarm.acknowledged_by ? alarm.acknowledged_by.username : "";
  if (alarm.state !== handler.dataset.state || handling !== handler.dataset.handler) {
    // Someone took the alarm or closed it: the page's controls change, so take them fresh from the server.
    window.location.reload();
  }
}

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
    if (message.type === "alarm.viewers" && message.data.alarm_id === alarmId) showViewers(message.data.users);
  },
  onResync: refresh,
});
live.onOpen = () => live.send({type: "watch", alarm_id: alarmId});

refresh().then(localizeTimes);
