// facesphere web UI: plain JavaScript over the service's /v1 endpoints. The API key lives in
// this tab's sessionStorage only and goes out as a bearer token with each request.
"use strict";

const KEY_STORAGE = "facesphere.apiKey";
const COLOURS = ["#22c55e", "#f59e0b", "#38bdf8", "#f472b6", "#a78bfa", "#facc15"];
const UNKNOWN_COLOUR = "#f87171";
const $ = (id) => document.getElementById(id);

const state = { gallery: null, subject: null, thumbnails: [] };

// -- talking to the service -------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

/** Call a /v1 endpoint; the parsed JSON (or a Blob for images), else an ApiError. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY_STORAGE) || ""}` };
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`v1/${path}`, { method, headers, body });
  } catch (err) {
    throw new ApiError(0, "the service could not be reached, or it closed the connection");
  }
  const type = response.headers.get("content-type") || "";
  if (!response.ok) {
    const answer = type.includes("json") ? await response.json() : { detail: await response.text() };
    throw new ApiError(response.status, answer.detail);
  }
  return type.includes("json") ? response.json() : response.blob();
}

/** Multipart form data of files under `field`. */
function filesForm(field, files) {
  const form = new FormData();
  for (const file of files) form.append(field, file, file.name);
  return form;
}

/** A server `detail` as one readable line: a string, a refused enrollment or a 422 list. */
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  if (detail && typeof detail === "object") {
    const parts = [];
    if (detail.no_face && detail.no_face.length) parts.push(`no face in ${detail.no_face.join(", ")}`);
    if (detail.several_faces && detail.several_faces.length) {
      parts.push(`several faces in ${detail.several_faces.join(", ")}`);
    }
    if (detail.unreadable && detail.unreadable.length) {
      parts.push(`not a usable image: ${detail.unreadable.map((u) => `${u.image} (${u.reason})`).join(", ")}`);
    }
    return [detail.message, parts.join("; ")].filter(Boolean).join(": ");
  }
  return String(detail);
}

/** What went wrong, in words, by HTTP status. */
function explain(err) {
  if (!(err instanceof ApiError)) return `${err.message || err}.`.replace(/^./, (c) => c.toUpperCase());
  const detail = detailText(err.detail);
  switch (err.status) {
    case 0: return `Network error: ${detail} (a file over the upload limit can cause this).`;
    case 401: return `Wrong or revoked API key (${detail}). Sign in again.`;
    case 403: return `Not allowed with this key: ${detail}.`;
    case 404: return `Not found: ${detail}.`;
    case 409: return `Conflict: ${detail}.`;
    case 413: return `File too large: ${detail}.`;
    case 415: return `Unsupported upload: ${detail}.`;
    case 422: return `Bad input: ${detail}.`;
    case 429: case 503: return `The service is busy (${detail}); try again in a moment.`;
    default: return `Error ${err.status}: ${detail}.`;
  }
}

// -- messages and views -------------------------------------------------------------------

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

/** Run an action with the page marked busy; errors become the message (401 signs out). */
async function run(action) {
  say("");
  document.body.classList.add("busy");
  try {
    await action();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut();
    say(explain(err), "error");
  } finally {
    document.body.classList.remove("busy");
  }
}

function show(view) {
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${view}`;
  }
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === view);
  }
  if (view === "galleries" || view === "identify") run(loadGalleries);
}

function signedIn() {
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  show("detect");
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  show("signin");
}

// -- drawing ------------------------------------------------------------------------------

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`the browser cannot show ${file.name}`));
    image.src = URL.createObjectURL(file);
  });
}

/** The photo on `canvas` at (width, height) pixels, each face's box, landmarks and label. */
async function drawFaces(canvas, file, faces, size) {
  const image = await loadImage(file);
  const [width, height] = size || [image.naturalWidth, image.naturalHeight];
  canvas.width = width;
  canvas.height = height;
  canvas.hidden = false;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0, width, height);
  URL.revokeObjectURL(image.src);
  faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box;
    const side = Math.max(x2 - x1, y2 - y1);
    const colour = face.colour || COLOURS[i % COLOURS.length];
    ctx.lineWidth = Math.max(2, side / 60);
    ctx.strokeStyle = colour;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = colour;
    for (const [x, y] of face.landmarks || []) {
      ctx.beginPath();
      ctx.arc(x, y, Math.max(2, side / 45), 0, 2 * Math.PI);
      ctx.fill();
    }
    if (face.label) {
      const font = Math.round(Math.max(12, side / 7));
      ctx.font = `600 ${font}px system-ui, sans-serif`;
      const textWidth = ctx.measureText(face.label).width;
      const top = y1 - font - 6 >= 0 ? y1 - font - 6 : y2;
      ctx.fillRect(x1 - ctx.lineWidth / 2, top, textWidth + 8, font + 6);
      ctx.fillStyle = "#0b1220";
      ctx.fillText(face.label, x1 + 4 - ctx.lineWidth / 2, top + font);
    }
  });
}

function cell(row, text, tag = "td") {
  const element = document.createElement(tag);
  element.textContent = text;
  row.append(element);
}

const fixed = (value, digits = 3) => (value === null || value === undefined ? "n/a" : Number(value).toFixed(digits));

// -- detect -------------------------------------------------------------------------------

async function detect(file) {
  const answer = await api("POST", "detect", filesForm("image", [file]));
  const faces = answer.faces.map((f, i) => ({ ...f, label: `${i + 1}: ${fixed(f.score, 2)}` }));
  await drawFaces($("detect-canvas"), file, faces, [answer.width, answer.height]);
  $("detect-result").hidden = false;
  const table = $("detect-faces");
  table.replaceChildren();
  if (!faces.length) {
    $("detect-summary").textContent = `No face found in ${file.name}.`;
    return;
  }
  $("detect-summary").textContent = `${faces.length} face${faces.length > 1 ? "s" : ""} found in ${file.name} (${answer.width}×${answer.height}).`;
  const head = table.insertRow();
  for (const title of ["#", "score", "box (x1, y1, x2, y2)"]) cell(head, title, "th");
  faces.forEach((face, i) => {
    const row = table.insertRow();
    cell(row, String(i + 1));
    cell(row, fixed(face.score));
    cell(row, face.box.map((v) => Math.round(v)).join(", "));
  });
}

// -- compare ------------------------------------------------------------------------------

async function compare() {
  const a = $("compare-a").files[0];
  const b = $("compare-b").files[0];
  if (!a || !b) throw new Error("choose two photos first");
  const form = new FormData();
  form.append("image_a", a, a.name);
  form.append("image_b", b, b.name);
  const answer = await api("POST", "verify", form);
  await drawFaces($("compare-canvas-a"), a, [{ box: answer.box_a }]);
  await drawFaces($("compare-canvas-b"), b, [{ box: answer.box_b }]);
  const verdict = $("compare-result");
  verdict.hidden = false;
  verdict.className = `verdict ${answer.same ? "same" : "different"}`;
  verdict.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = answer.same ? "Same person" : "Different people";
  const facts = document.createElement("dl");
  const rows = [
    ["similarity", fixed(answer.similarity)],
    ["threshold", fixed(answer.threshold)],
    ["false-accept rate", answer.far === null ? "n/a" : String(answer.far)],
    ["model", answer.model],
  ];
  for (const [term, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = term;
    facts.append(dt, dd);
  }
  verdict.append(title, facts);
}

// -- galleries ----------------------------------------------------------------------------

const galleryPath = (rest = "") => `galleries/${encodeURIComponent(state.gallery)}${rest}`;

async function loadGalleries() {
  const names = (await api("GET", "galleries")).galleries;
  if (!names.includes(state.gallery)) state.gallery = names[0] || null;
  const list = $("gallery-list");
  list.replaceChildren();
  for (const name of names) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.className = name === state.gallery ? "chip active" : "chip";
    button.addEventListener("click", () => run(() => openGallery(name)));
    item.append(button);
    list.append(item);
  }
  if (!names.length) list.textContent = "No gallery yet: create one.";
  const select = $("identify-gallery");
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(chosen)) select.value = chosen;
  if (state.gallery) await openGallery(state.gallery);
  else $("gallery-panel").hidden = true;
}

async function thumbnail(faceId) {
  const image = document.createElement("img");
  image.className = "thumb";
  image.alt = "";
  if (faceId === null || faceId === undefined) {
    image.classList.add("none");
    return image;
  }
  try {
    const blob = await api("GET", galleryPath(`/faces/${faceId}/thumbnail`));
    image.src = URL.createObjectURL(blob);
    state.thumbnails.push(image.src);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
    image.classList.add("none"); // enrolled before thumbnails were stored
  }
  return image;
}

function forgetThumbnails() {
  for (const url of state.thumbnails) URL.revokeObjectURL(url);
  state.thumbnails = [];
}

async function openGallery(name) {
  state.gallery = name;
  for (const chip of document.querySelectorAll("#gallery-list .chip")) {
    chip.classList.toggle("active", chip.textContent === name);
  }
  const [info, listing] = await Promise.all([api("GET", galleryPath()), api("GET", galleryPath("/subjects"))]);
  forgetThumbnails();
  $("gallery-panel").hidden = false;
  $("gallery-title").textContent = name;
  $("gallery-info").textContent = `${info.subjects} subject(s), ${info.faces} face(s); model ${info.model} ${info.model_version}`;
  $("subject-names").replaceChildren(...listing.subjects.map((s) => new Option(s.name)));
  const grid = $("subject-grid");
  const cards = [];
  for (const subject of listing.subjects) {
    const card = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "subject";
    button.dataset.subject = subject.name;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = subject.name;
    const count = document.createElement("span");
    count.className = "hint";
    count.textContent = `${subject.faces} face${subject.faces === 1 ? "" : "s"}`;
    button.append(await thumbnail(subject.first_face_id), name, count);
    button.addEventListener("click", () => run(() => openSubject(subject.name)));
    card.append(button);
    cards.push(card);
  }
  grid.replaceChildren(...cards);
  if (!cards.length) grid.textContent = "No subject yet: enroll photos above.";
  const stillThere = listing.subjects.some((s) => s.name === state.subject);
  if (stillThere) await openSubject(state.subject);
  else $("subject-panel").hidden = true;
}

async function openSubject(name) {
  const subject = await api("GET", galleryPath(`/subjects/${encodeURIComponent(name)}`));
  state.subject = subject.name;
  $("subject-panel").hidden = false;
  $("subject-title").textContent = `${subject.name}: ${subject.faces} face${subject.faces === 1 ? "" : "s"}`;
  const items = [];
  for (const face of subject.face_list) {
    const item = document.createElement("li");
    item.className = "face";
    item.dataset.faceId = face.id;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger small";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => run(() => removeFace(face.id)));
    const label = document.createElement("span");
    label.className = "hint";
    label.textContent = `face ${face.id}`;
    item.append(await thumbnail(face.id), label, remove);
    items.push(item);
  }
  $("face-list").replaceChildren(...items);
}

async function createGallery(event) {
  event.preventDefault();
  const name = $("gallery-name").value.trim();
  state.gallery = name;
  await api("PUT", `galleries/${encodeURIComponent(name)}`);
  $("gallery-name").value = "";
  await loadGalleries();
  say(`Gallery ${name} is ready.`);
}

async function deleteGallery() {
  const name = state.gallery;
  if (!window.confirm(`Delete gallery ${name} with all its subjects and faces?`)) return;
  await api("DELETE", galleryPath());
  state.gallery = null;
  state.subject = null;
  await loadGalleries();
  say(`Gallery ${name} deleted.`);
}

/** Enroll the chosen photos as one subject in one request: the service creates the subject
 * when it is new, and a refused enrollment creates nothing. */
async function enroll(event) {
  event.preventDefault();
  const subject = $("enroll-subject").value.trim();
  const files = [...$("enroll-files").files];
  const query = $("enroll-largest").checked ? "?face=largest" : "";
  const path = galleryPath(`/subjects/${encodeURIComponent(subject)}/faces${query}`);
  const report = await api("POST", path, filesForm("images", files));
  $("enroll-form").reset();
  state.subject = report.subject;
  await openGallery(state.gallery);
  const skipped = report.duplicates.length ? `; already enrolled: ${report.duplicates.join(", ")}` : "";
  say(`Enrolled ${report.face_ids.length} face(s) of ${report.subject}${skipped}.`);
}

async function removeFace(faceId) {
  await api("DELETE", galleryPath(`/faces/${faceId}`));
  await openGallery(state.gallery);
  say(`Face ${faceId} removed.`);
}

async function removeSubject() {
  const name = state.subject;
  if (!window.confirm(`Remove ${name} and all their faces?`)) return;
  const answer = await api("DELETE", galleryPath(`/subjects/${encodeURIComponent(name)}`));
  state.subject = null;
  await openGallery(state.gallery);
  say(`${name} removed with ${answer.faces_removed} face(s).`);
}

// -- identify -----------------------------------------------------------------------------

async function identify(file) {
  const gallery = $("identify-gallery").value;
  if (!gallery) throw new Error("create a gallery and enroll someone first");
  const answer = await api("POST", `galleries/${encodeURIComponent(gallery)}/identify`, filesForm("image", [file]));
  const faces = answer.faces.map((f, i) => ({
    ...f,
    label: `${i + 1}: ${f.identity || "unknown"}`,
    colour: f.identity ? COLOURS[0] : UNKNOWN_COLOUR,
  }));
  await drawFaces($("identify-canvas"), file, faces);
  $("identify-result").hidden = false;
  $("identify-summary").textContent = faces.length
    ? `Threshold ${fixed(answer.threshold)} (model ${answer.model}); a face below it is unknown.`
    : `No face found in ${file.name}.`;
  const list = $("identify-faces");
  list.replaceChildren();
  for (const face of faces) {
    const item = document.createElement("li");
    const who = document.createElement("strong");
    who.className = face.identity ? "known" : "unknown";
    who.textContent = face.identity ? `${face.identity} (${fixed(face.score)})` : "unknown";
    const matches = document.createElement("span");
    matches.className = "hint";
    matches.textContent = face.matches.length
      ? ` best matches: ${face.matches.map((m) => `${m.subject} ${fixed(m.score)}`).join(", ")}`
      : " the gallery is empty";
    item.append(who, matches);
    list.append(item);
  }
}

// -- wiring -------------------------------------------------------------------------------

function onFile(input, action) {
  input.addEventListener("change", () => {
    if (input.files.length) run(() => action(input.files[0]));
  });
}

function allowDrops() {
  for (const zone of document.querySelectorAll(".drop")) {
    const input = $(zone.dataset.for);
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    });
  }
}

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    run(async () => {
      await api("GET", "galleries");
      $("api-key").value = "";
      signedIn();
    });
  });
  $("sign-out").addEventListener("click", signOut);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => show(tab.dataset.view));
  }
  onFile($("detect-file"), detect);
  onFile($("identify-file"), identify);
  for (const side of ["a", "b"]) {
    onFile($(`compare-${side}`), (file) => drawFaces($(`compare-canvas-${side}`), file, []));
  }
  $("compare-run").addEventListener("click", () => run(compare));
  $("gallery-create").addEventListener("submit", (event) => run(() => createGallery(event)));
  $("gallery-delete").addEventListener("click", () => run(deleteGallery));
  $("enroll-form").addEventListener("submit", (event) => run(() => enroll(event)));
  $("subject-delete").addEventListener("click", () => run(removeSubject));
  allowDrops();
  if (sessionStorage.getItem(KEY_STORAGE)) signedIn();
  else show("signin");
}

start();
