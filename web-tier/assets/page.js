// Uploads each chosen or dropped image through the same endpoint as any client (POST /,
// field "myfile", Accept: application/json) and shows the answer. Everything that comes
// from the client or the server is put into the page as text, never as markup.
"use strict";

const form = document.getElementById("upload");
const input = document.getElementById("myfile");
const results = document.getElementById("results");

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showLabel(body, answer) {
  body.append(el("div", "label", answer.label));
  const table = el("table", "top");
  for (const p of answer.top_k || []) {
    const row = table.insertRow();
    row.insertCell().textContent = p.label;
    row.insertCell().textContent = (p.score * 100).toFixed(1) + " %";
    const bar = el("span", "bar");
    bar.style.width = Math.max(1, Math.round(p.score * 120)) + "px";
    row.insertCell().append(bar);
  }
  body.append(table);
  const t = answer.timings || {};
  body.append(el("div", "meta",
    `worker ${answer.worker} · queued ${t.queued_ms} ms · decode ${t.decode_ms} ms · ` +
    `inference ${t.inference_ms} ms · in the worker ${t.total_ms} ms · id ${answer.id}`));
}

async function upload(file) {
  const item = el("li");
  const thumb = el("img");
  thumb.alt = "";
  thumb.addEventListener("error", () => thumb.remove()); // not an image the browser shows
  thumb.src = URL.createObjectURL(file);
  const body = el("div");
  body.append(el("div", "name", file.name));
  const status = el("div", "status", "uploading…");
  status.setAttribute("role", "status");
  body.append(status);
  item.append(thumb, body);
  results.prepend(item);

  const data = new FormData();
  data.append("myfile", file, file.name);
  const started = performance.now();
  try {
    const response = await fetch("/", { method: "POST", body: data, headers: { Accept: "application/json" } });
    const elapsed = Math.round(performance.now() - started);
    let answer = {};
    try { answer = await response.json(); } catch (_) { answer = { message: response.statusText }; }
    if (response.ok) {
      status.textContent = `answered in ${elapsed} ms`;
      showLabel(body, answer);
    } else {
      status.textContent = `${response.status} after ${elapsed} ms`;
      body.append(el("div", "error", answer.message || answer.error || response.statusText));
    }
  } catch (e) {
    status.textContent = "no answer";
    body.append(el("div", "error", String(e)));
  }
}

function uploadAll(files) {
  for (const file of files) upload(file);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  uploadAll(input.files);
  form.reset();
});
for (const name of ["dragenter", "dragover"]) {
  form.addEventListener(name, (event) => { event.preventDefault(); form.classList.add("dragging"); });
}
for (const name of ["dragleave", "drop"]) {
  form.addEventListener(name, () => form.classList.remove("dragging"));
}
form.addEventListener("drop", (event) => {
  event.preventDefault();
  uploadAll(event.dataTransfer.files);
});
