// Focus that survives leaving a page (issue 16, item 8): a guard who opens an event from the wall, or posts a
// form, and comes back (Back, a link, the redirect after the form) finds the focus where it was: on the wall's
// card, the link or the control used. Pages are not kept by the browser (no-store), so this restores it.
// And a tap or click on a card's action focuses the card first, so the wall hands the focus on when it goes.
const STORE = "vmond.focus:";
const FRESH_MS = 10 * 60 * 1000; // an older mark is not "coming back"

let lastClicked = null;

function keyOf(node) {
  if (!node || node === document.body || !node.closest) return null;
  const card = node.closest("[data-event-id]");
  if (card) return {card: card.dataset.eventId};
  if (node.id) return {id: node.id};
  const action = node.closest("[data-action]");
  if (action) return {action: action.dataset.action};
  const link = node.closest("a[href]");
  if (link) return {href: link.getAttribute("href")};
  return null;
}

function find(key) {
  const quoted = (text) => CSS.escape(String(text));
  if (key.card) return document.querySelector('[data-event-id="' + quoted(key.card) + '"]');
  if (key.id) return document.getElementById(key.id);
  if (key.action) return document.querySelector('[data-action="' + quoted(key.action) + '"]');
  if (key.href) return document.querySelector('a[href="' + quoted(key.href) + '"]');
  return null;
}

document.addEventListener("click", (e) => {
  lastClicked = e.target;
  const control = e.target.closest && e.target.closest("[data-event-id] button[data-action]");
  if (control) control.closest("[data-event-id]").focus({preventScroll: true});
}, true);

window.addEventListener("pagehide", () => {
  const key = keyOf(document.activeElement) || keyOf(lastClicked);
  if (key) sessionStorage.setItem(STORE + location.pathname, JSON.stringify({key, at: Date.now()}));
});

window.addEventListener("pageshow", () => {
  const mark = sessionStorage.getItem(STORE + location.pathname);
  if (!mark) return;
  sessionStorage.removeItem(STORE + location.pathname);
  let saved;
  try {
    saved = JSON.parse(mark);
  } catch (error) {
    return;
  }
  if (!saved || !saved.key || Date.now() - saved.at > FRESH_MS) return;
  const node = find(saved.key);
  if (!node || node.disabled) return;
  node.focus({preventScroll: true});
  node.scrollIntoView({block: "nearest"});
});
