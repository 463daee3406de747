// The wall on a central station (issue 18): each card names its site ([data-site]); a filter shows one site's
// queue (the page's ?site=, as the server rendered it), and the cards may be grouped by site: each group in queue
// order, the groups in the order of their most urgent card, so the first card is still the next to handle.
// On an appliance (no event has a site) none of this shows.
import {el} from "./common.js";

const GROUP_KEY = "vmond.groupBySite";

export function wallSites({wall, events, queueBefore}) {
  const filter = document.body.dataset.siteFilter || "";
  const groupBox = document.getElementById("group-by-site");
  const select = document.getElementById("site-filter");

  if (select) select.addEventListener("change", () => select.form.submit());
  if (groupBox) {
    groupBox.checked = localStorage.getItem(GROUP_KEY) === "on";
    groupBox.addEventListener("change", () => {
      localStorage.setItem(GROUP_KEY, groupBox.checked ? "on" : "off");
      arrange(true);
    });
  }

  function grouped() {
    return Boolean(groupBox && groupBox.checked);
  }

  function accepts(event) {
    return !filter || Boolean(event.site && event.site.id === filter);
  }

  function decorate(card, event) {
    if (!event.site) return;
    card.dataset.site = event.site.id;
    card.setAttribute("aria-label", card.getAttribute("aria-label") + ", " + event.site.name);
    const label = el("p", "event-site", event.site.name);
    label.title = "Site " + event.site.id;
    card.querySelector(".event-body").prepend(label);
  }

  function arrange(changed = false) {
    // The groups' headings are redrawn from the cards; with grouping off the queue order stands as placed.
    const headings = wall.querySelectorAll(":scope > .site-group");
    if (!grouped()) {
      headings.forEach((node) => node.remove());
      if (changed) restoreQueueOrder();
      return;
    }
    const cards = sortedCards();
    const groups = new Map();
    cards.forEach(([card, event]) => {
      const key = event.site ? event.site.id : "";
      if (!groups.has(key)) groups.set(key, {name: event.site ? event.site.name : "This station", cards: []});
      groups.get(key).cards.push(card);
    });
    const wanted = [];
    groups.forEach((group, key) => {
      const heading = Array.from(headings).find((node) => node.dataset.siteGroup === key)
        || el("h2", "site-group", group.name);
      heading.dataset.siteGroup = key;
      wanted.push(heading, ...group.cards);
    });
    const current = Array.from(wall.children).filter((node) => node.matches("[data-event-id], .site-group"));
    headings.forEach((node) => { if (!wanted.includes(node)) node.remove(); });
    if (wanted.length === current.length && wanted.every((node, i) => node === current[i])) return;
    place(wanted);
  }

  function sortedCards() {
    return Array.from(wall.querySelectorAll(":scope > [data-event-id]"))
      .map((card) => [card, events.get(Number(card.dataset.eventId))])
      .filter(([, event]) => event)
      .sort(([, a], [, b]) => (queueBefore(a, b) ? -1 : queueBefore(b, a) ? 1 : 0));
  }

  function restoreQueueOrder() {
    place(sortedCards().map(([card]) => card));
  }

  function place(nodes) {
    // Moving a node takes the focus from it: the keys stay on the card they were on.
    const active = document.activeElement;
    const focused = active && wall.contains(active) ? active : null;
    nodes.forEach((node) => wall.appendChild(node));
    if (focused && document.activeElement !== focused) focused.focus({preventScroll: true});
  }

  return {
    accepts,
    decorate,
    arrange,
    query: filter ? "&site=" + encodeURIComponent(filter) : "",
    siteName: (event) => (event.site ? event.site.name : null),
  };
}
