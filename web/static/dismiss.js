// Dismiss made safe on the wall (issue 16): an Undo bar for 10 s after a dismiss, and cards selected (a checkbox
// per card, or X on the focused card) to dismiss together. The wall keeps its cards; this module only adds to them,
// and finds the cards it decorates by watching the wall, since a card is rebuilt whenever its event changes.
import {el, holdKeys, post} from "./common.js";

const UNDO_MS = 10000; // the server lets the guard who dismissed take it back for as long (vmond/store/dismissals.py)

export function safeDismiss({wall, events, upsert, remove, flash}) {
  const selected = new Set();

  // --- selecting cards, and dismissing them together ----------------------------------------------------------
  const bar = el("div", "select-bar");
  bar.hidden = true;
  const selectedCount = el("span", "select-count");
  const dismissSelected = el("button", "dismiss-selected", "Dismiss selected");
  dismissSelected.type = "button";
  dismissSelected.dataset.action = "dismiss-selected";
  const clear = el("button", null, "Clear selection");
  clear.type = "button";
  bar.append(selectedCount, dismissSelected, clear);
  wall.before(bar);

  function showSelection() {
    for (const id of selected) if (!events.has(id)) selected.delete(id);
    bar.hidden = selected.size === 0;
    selectedCount.textContent = selected.size === 1 ? "1 card selected" : selected.size + " cards selected";
    wall.querySelectorAll("[data-event-id]").forEach((card) => {
      const box = card.querySelector("input[data-select]");
      const on = selected.has(Number(card.dataset.eventId));
      card.classList.toggle("is-selected", on);
      if (box) box.checked = on;
    });
  }

  function decorate(card) {
    if (card.querySelector("input[data-select]")) return;
    const label = el("label", "select-card");
    const box = el("input");
    box.type = "checkbox";
    box.dataset.select = "";
    box.tabIndex = -1; // the card has the focus, X toggles it
    label.append(box, " Select");
    label.title = "Select to dismiss together (X)";
    (card.querySelector(".event-actions") || card).prepend(label);
  }

  function toggle(id, on) {
    if (on) selected.add(id);
    else selected.delete(id);
    showSelection();
  }

  new MutationObserver(() => {
    wall.querySelectorAll("[data-event-id]").forEach(decorate);
    showSelection();
  }).observe(wall, {childList: true});
  wall.querySelectorAll("[data-event-id]").forEach(decorate);

  wall.addEventListener("change", (e) => {
    const box = e.target.closest("input[data-select]");
    const card = box && box.closest("[data-event-id]");
    if (!card) return;
    toggle(Number(card.dataset.eventId), box.checked);
    // The keys (D, A, X, arrows) act on the focused card and not from a checkbox: hand the focus back to the card.
    card.focus({preventScroll: true});
  });
  clear.addEventListener("click", () => {
    selected.clear();
    showSelection();
  });
  dismissSelected.addEventListener("click", async () => {
    const ids = Array.from(selected);
    if (!ids.length || dismissSelected.disabled) return;
    dismissSelected.disabled = true;
    const shown = new Map(ids.map((id) => [id, events.get(id)])); // live messages may remove cards meanwhile
    try {
      const result = await post("/api/events/dismiss", {ids});
      const gone = result.dismissed.map((id) => shown.get(id)).filter(Boolean);
      result.dismissed.forEach((id) => remove(id));
      selected.clear();
      showSelection();
      if (gone.length) offerUndo(gone);
      if (result.commands && result.commands.length) {  // on a central: sent to the sites, the cards follow
        flash(result.commands.length + " sent to their sites to dismiss");
      }
      if (result.skipped.some((skip) => skip.reason === "no_command_secret")) {
        flash("Some were not sent: this central has no command secret for their site");
      } else if (result.skipped.length) {
        flash(result.skipped.length + " of the selected were no longer on the wall (alarmed or dismissed by someone"
          + " else)");
      }
    } catch (error) {
      flash("Could not dismiss the selected events: " + error.message);
    } finally {
      dismissSelected.disabled = false;
    }
  });

  // --- undo ---------------------------------------------------------------------------------------------------
  const undoBar = el("div", "undo-bar");
  undoBar.setAttribute("role", "status");
  undoBar.hidden = true;
  const undoText = el("span", "undo-text");
  const undoButton = el("button", "undo", "Undo");
  undoButton.type = "button";
  undoButton.dataset.action = "undo";
  undoButton.title = "Put it back on the wall (U)";
  undoBar.append(undoText, undoButton);
  wall.after(undoBar);
  let undoable = [];
  let undoTimer = null;

  function describe(list) {
    if (list.length !== 1) return list.length + " events dismissed";
    const event = list[0];
    return "Dismissed " + event.event_type + (event.camera ? " · " + event.camera.name : "");
  }

  function endUndo() {
    clearTimeout(undoTimer);
    undoable = [];
    undoBar.hidden = true;
  }

  // Offered for the newest dismiss only: a guard who dismissed two things in a row takes back the last.
  function offerUndo(list) {
    endUndo();
    list = list.filter(Boolean);
    if (!list.length) return;
    undoable = list.map((event) => event.id);
    undoText.textContent = describe(list);
    undoBar.hidden = false;
    undoTimer = setTimeout(endUndo, UNDO_MS);
  }

  async function undo() {
    const ids = undoable;
    if (!ids.length || undoButton.disabled) return;
    endUndo();
    const failed = [];
    for (const id of ids) {
      try {
        upsert(await post("/api/events/" + id + "/restore"), false);
      } catch (error) {
        failed.push(error.message);
      }
    }
    const back = wall.querySelector('[data-event-id="' + String(ids[0]) + '"]');
    if (back) back.focus();
    if (failed.length) flash("Could not undo: " + failed[0]);
  }
  undoButton.addEventListener("click", undo);

  // --- keys: X selects the focused card, U undoes; acting keys wait while the link is down ---------------------
  holdKeys(["d", "a", "u"]);
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
    const card = document.activeElement && document.activeElement.closest("[data-event-id]");
    if (card && (e.key === "x" || e.key === "X")) {
      e.preventDefault();
      const id = Number(card.dataset.eventId);
      toggle(id, !selected.has(id));
    } else if ((e.key === "u" || e.key === "U") && undoable.length) {
      e.preventDefault();
      undo();
    }
  });
  const hint = document.querySelector(".keys");
  if (hint) {
    const key = (name) => el("kbd", null, name);
    hint.append(" · ", key("X"), " select · ", key("U"), " undo");
  }

  return {offerUndo};
}
