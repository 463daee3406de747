// The event page of a site's event on a central station (issue 18): what became of the actions sent to the site,
// the event's status as the site reports it, and its pictures as they arrive, kept current over the live
// connection.
import {connectLive, localizeTimes} from "./common.js";
import {isCommandMessage, showCommands} from "./commands.js";
import {watchPictures} from "./pictures.js";

const body = document.body;
const eventId = Number(body.dataset.eventId);
const pictures = document.querySelector("[data-site-event]");
const retryPictures = pictures ? watchPictures(pictures) : () => {};

async function refresh() {
  const response = await fetch("/api/events/" + eventId, {credentials: "same-origin"});
  if (!response.ok) return;
  const event = await response.json();
  showCommands(event.commands);
  const status = document.getElementById("status");
  if (status.textContent !== event.status) {
    status.textContent = event.status;
    status.className = "state state-" + event.status;
    // The buttons follow the status (Dismiss, Restore, Open alarm): taken fresh from the server.
    const page = await fetch("/events/" + eventId, {credentials: "same-origin"});
    if (!page.ok) return;
    const fresh = new DOMParser().parseFromString(await page.text(), "text/html").getElementById("event-actions");
    const current = document.getElementById("event-actions");
    if (fresh && current) current.replaceWith(document.adoptNode(fresh));
  }
  localizeTimes();
}

connectLive({
  seq: Number(body.dataset.seq || 0),
  onMessage(message) {
    const data = message.data || {};
    if ((isCommandMessage(message) && data.event_id === eventId) || (data.id === eventId && message.type.startsWith("event."))) {
      refresh();
    }
    if (message.type === "event.updated" && data.id === eventId) retryPictures();
  },
  onResync() {
    refresh();
    retryPictures();
  },
});
