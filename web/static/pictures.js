// A central station's event page (issue 18): a site's picture that has not arrived yet says so, and is loaded
// again when the event changes (the site's file came; eventpage.js calls retry). Built with DOM calls only.
import {el} from "./common.js";

export function watchPictures(root) {
  const missing = new Set();
  let attempt = 0;
  const noteOf = (img) => img.parentElement.querySelector(".picture-missing");
  const markMissing = (img) => {
    missing.add(img);
    img.hidden = true;
    if (!noteOf(img)) img.after(el("span", "picture-missing muted", "Picture not available yet"));
  };
  const markLoaded = (img) => {
    missing.delete(img);
    img.hidden = false;
    const note = noteOf(img);
    if (note) note.remove();
  };
  for (const img of root.querySelectorAll(".pictures img")) {
    img.addEventListener("error", () => markMissing(img));
    img.addEventListener("load", () => markLoaded(img));
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) markMissing(img);
  }
  return function retry() {
    attempt += 1;
    for (const img of missing) {
      const url = new URL(img.src, location.href);
      url.searchParams.set("retry", String(attempt));
      img.src = url.pathname + url.search;
    }
  };
}
