// The account editor's "Add a contact" button. Without JavaScript it posts the form, and the server shows it again,
// as typed, with one more empty row; here it adds that row in the page instead, from the <template> the server
// rendered (whose names say "__i__" where the row's number goes).

const button = document.querySelector('[data-action="add-contact"]');
const template = document.getElementById("contact-row");
const body = document.querySelector(".contacts-editor tbody");

function nextIndex() {
  let next = 0;
  body.querySelectorAll("input[name^='contacts-']").forEach((input) => {
    const match = /^contacts-(\d+)-/.exec(input.name);
    if (match) next = Math.max(next, Number(match[1]) + 1);
  });
  return next;
}

function limitReached() {
  return body.rows.length >= Number(button.dataset.max || Infinity);
}

if (button && template && body) {
  button.disabled = limitReached();
  button.addEventListener("click", (event) => {
    event.preventDefault();
    if (limitReached()) return;
    const index = nextIndex();
    const row = template.content.firstElementChild.cloneNode(true);
    row.querySelectorAll("[name]").forEach((input) => {
      input.name = input.name.replace("__i__", String(index));
    });
    row.querySelector("[name$='-priority']").value = String(body.rows.length + 1);
    body.append(row);
    row.querySelector("[name$='-name']").focus();
    button.disabled = limitReached();
  });
}
