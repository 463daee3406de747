// On a central station: what became of the operator's actions on a site's event or alarm (issue 18). Each was
// sent to the site as a command: pending until the site answers, then done or refused with the site's reason.
import {el, localTime} from "./common.js";

export const LABELS = {dismiss: "Dismiss", restore: "Restore", alarm: "Raise alarm", acknowledge: "Take over",
  note: "Note", step: "Step", resolve: "Resolve", media: "Pictures"};

export function commandText(command, siteName) {
  const site = siteName || command.site_name || command.site;
  const what = (LABELS[command.action] || command.action) + ": ";
  if (command.state === "pending") return what + "sent to " + site + ", waiting";
  if (command.state === "done") return what + "done at " + site;
  return what + "refused by " + site + ": " + (command.error || "no reason given");
}

// The page's #commands list (see the commands_block macro) redrawn from *commands*, newest first.
export function showCommands(commands) {
  const section = document.getElementById("commands");
  if (!section || !commands) return;
  const list = document.getElementById("command-list");
  list.replaceChildren(...commands.map((command) => {
    const item = el("li");
    item.dataset.commandId = command.id;
    item.dataset.state = command.state;
    item.appendChild(el("span", "meta", localTime(command.created_at)));
    item.appendChild(document.createTextNode(" " + commandText(command, section.dataset.siteName)));
    return item;
  }));
  section.hidden = commands.length === 0;
}

// Whether a live message is about one of the commands of this page's event or alarm.
// An operator's action sent to a site; the central's own fetches of a site's pictures ("media") are not shown.
export function isCommandMessage(message) {
  return (message.type === "command.created" || message.type === "command.updated")
    && !(message.data && message.data.action === "media");
}

// A wall card's line about the newest command sent about its event (none: no line); its buttons wait while the
// command is pending.
export function showOnCard(card, command, siteName) {
  let line = card.querySelector(".event-command");
  if (!command) {
    if (line) line.remove();
    return;
  }
  if (!line) {
    line = el("p", "event-command");
    line.setAttribute("role", "status");
    card.querySelector(".event-body").appendChild(line);
  }
  line.dataset.state = command.state;
  line.textContent = commandText(command, siteName);
  card.querySelectorAll("button[data-action]").forEach((control) => { control.disabled = command.state === "pending"; });
}
