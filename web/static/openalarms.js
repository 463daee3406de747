// The wall's open-alarms strip: every alarm raised or acknowledged and not yet resolved, oldest first, kept live
// from the alarm messages of /ws and reloaded on a resync. Built with DOM calls and textContent only.
import {el} from "./common.js";

// *now*: the appliance's clock in ms (the wall's ages use it, as this PC's clock may be off).
export function openAlarmStrip({now}) {
  const openAlarms = new Map();
  const stripNode = document.getElementById("open-alarms");
  const openAlarmList = document.getElementById("open-alarm-list");

  function alarmAge(iso) {
    const seconds = Math.max(0, Math.round((now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
  }

  function openAlarmItem(alarm) {
    const link = el("a", "open-alarm state-" + alarm.state);
    link.href = "/alarms/" + alarm.id;
    link.dataset.openAlarmId = alarm.id;
    link.dataset.state = alarm.state;
    const where = alarm.camera ? alarm.camera.name : (alarm.camera_name || "Unknown camera");
    const who = alarm.acknowledged_by ? alarm.acknowledged_by.username : "nobody yet";
    const ageNode = el("span", "open-alarm-age", alarmAge(alarm.opened_at));
    ageNode.dataset.since = alarm.opened_at;
    if (alarm.site) { // on a central station: the site it is at
      link.dataset.site = alarm.site.id;
      link.append(el("span", "open-alarm-site", alarm.site.name), ": ");
    }
    link.append(el("strong", "open-alarm-camera", where), " " + alarm.event_type + " · ", ageNode,
      " · ", el("span", "open-alarm-handler", who));
    link.title = "Alarm " + alarm.id + ": " + alarm.state + ", handled by " + who;
    const item = el("li");
    item.appendChild(link);
    return item;
  }

  function showOpenAlarms() {
    // Oldest first: the one waiting longest is the one to look at.
    const list = Array.from(openAlarms.values()).sort((a, b) => Date.parse(a.opened_at) - Date.parse(b.opened_at) || a.id - b.id);
    const active = document.activeElement;
    const focusedId = active && openAlarmList.contains(active) ? active.dataset.openAlarmId : null;
    openAlarmList.replaceChildren(...list.map(openAlarmItem));
    stripNode.hidden = list.length === 0;
    // Redrawn on every change: a keyboard user's focus stays on the same alarm while it is open.
    if (!focusedId) return;
    // The alarm just closed: on to the next open one, else to the wall's first card, never to nowhere.
    const again = openAlarmList.querySelector('[data-open-alarm-id="' + focusedId + '"]')
      || openAlarmList.querySelector("[data-open-alarm-id]") || document.querySelector("#wall .event-card");
    if (again) again.focus({preventScroll: true});
  }

  function applyOpenAlarm(message) {
    if (message.type !== "alarm.created" && message.type !== "alarm.updated") return;
    const alarm = message.data;
    if (alarm.state === "resolved") openAlarms.delete(alarm.id);
    else openAlarms.set(alarm.id, alarm);
    showOpenAlarms();
  }

  async function resyncOpenAlarms() {
    const response = await fetch("/api/alarms?state=open", {credentials: "same-origin"});
    if (!response.ok) return;
    openAlarms.clear();
    (await response.json()).alarms.forEach((alarm) => openAlarms.set(alarm.id, alarm));
    showOpenAlarms();
  }

  setInterval(() => {
    openAlarmList.querySelectorAll(".open-alarm-age").forEach((node) => { node.textContent = alarmAge(node.dataset.since); });
  }, 1000);
  JSON.parse(document.getElementById("initial-open-alarms").textContent).forEach((alarm) => openAlarms.set(alarm.id, alarm));
  showOpenAlarms();
  return {apply: applyOpenAlarm, resync: resyncOpenAlarms};
}
