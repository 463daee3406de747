// The alarms list: kept live over /ws. Any alarm raised, changed or resolved re-reads the list as the page's
// own filters show it (so a resolved alarm leaves the "open" list and the order stays the server's).
import {connectLive, localizeTimes} from "./common.js";

let timer = null;

async function refresh() {
  const response = await fetch(location.pathname + location.search, {credentials: "same-origin"});
  if (!response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("alarm-rows");
  const current = document.getElementById("alarm-rows");
  if (!fresh || !current) return;
  // The rows are redrawn: a keyboard user's focus stays on the same link when that alarm is still listed.
  const focused = current.contains(document.activeElement) && document.activeElement.getAttribute("href");
  current.replaceWith(document.adoptNode(fresh));
  localizeTimes();
  const again = focused && fresh.querySelector('a[href="' + CSS.escape(focused) + '"]');
  if (again) again.focus({preventScroll: true});
}

function refreshSoon() {
  // A raise is several messages in a row (event, alarm, the guard taking it): read the list once for them.
  clearTimeout(timer);
  timer = setTimeout(refresh, 150);
}

connectLive({
  seq: Number(document.body.dataset.seq || 0),
  indicator: document.getElementById("connection"),
  onMessage(message) {
    if (message.type === "alarm.created" || message.type === "alarm.updated") refreshSoon();
  },
  onResync: refresh,
});
