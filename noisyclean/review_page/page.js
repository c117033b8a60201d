"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("nc-data").textContent);
  const IMAGES = new Map(
    Object.entries(JSON.parse(document.getElementById("nc-images").textContent)));
  const ROWS = new Map(Object.entries(DATA.rows));
  const CLASSES = DATA.classes;
  const CARDS = DATA.cards;
  const CLASS_INDEX = new Map(CLASSES.map((n, i) => [n, i]));
  const LOWER = CLASSES.map((n) => n.toLowerCase());
  // The digit keys relabel to class 1–9, 10 only where they reach every class.
  const DIGITS = CLASSES.length <= 10;
  const PICK_MAX = 10;  // matches the class picker shows
  const STORE_KEY = "noisyclean-review:" + DATA.run_id;
  const VALID = new Set(["keep", "relabel", "drop"]);
  const cardById = new Map(CARDS.map((c) => [c.id, c]));
  const elById = new Map();
  let decisions = new Map();
  let visible = [];
  let current = -1;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c);
    return e;
  }
  const say = (text) => { document.getElementById("status").textContent = text; };
  const fmt = (v, d) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

  function thumb(id, title) {
    const uri = IMAGES.get(id);
    if (typeof uri !== "string" || !uri.startsWith("data:image/")) {
      return el("div", { class: "thumb missing", text: "no image", title: title });
    }
    const img = el("img",
      { class: "thumb", alt: title, title: title, loading: "lazy", decoding: "async" });
    img.addEventListener("load", () => {
      if (img.naturalWidth < img.clientWidth) img.classList.add("pix");
    });
    img.src = uri;
    return img;
  }

  function neighbourRow(kind, cls, ids) {
    const row = el("div", { class: "nbrow" },
      el("div", { class: "nbhead", text: kind }, el("span", { text: cls === null ? "–" : cls })));
    if (!ids.length) row.append(el("span", { class: "none", text: "no neighbours of this class" }));
    for (const id of ids) {
      const card = cardById.get(id);
      const info = ROWS.get(id) || (card ? [card.label, card.path] : ["?", ""]);
      row.append(el("figure", { class: "nb" },
        thumb(id, id + " · " + info[0] + " · " + info[1]),
        el("figcaption", { text: info[0], title: info[0] })));
    }
    return row;
  }

  function makeCard(c) {
    const button = (act, text, key) => {
      const b = el("button", { type: "button", "data-act": act },
        text + " ", el("kbd", { text: key }));
      b.addEventListener("click", () => {
        if (act === "pick") openPicker(c.id, "", false);
        else if (act === "keep") decide(c.id, "keep", "");
        else if (act === "relabel") decide(c.id, "relabel", c.suggested);
        else if (act === "drop") decide(c.id, "drop", "");
        else clear(c.id);
      });
      return b;
    };
    const suggested = c.suggested === null ? "–" : c.suggested;
    const relabelBtn = button("relabel", "Relabel → " + suggested, "r");
    if (c.suggested === null) relabelBtn.disabled = true;
    const pickBtn = button("pick", "Relabel to…", "/");
    pickBtn.title = "Relabel to any class: type to search its name";
    const card = el("article", { class: "card", "data-id": c.id, tabIndex: -1 },
      el("figure", { class: "big" }, thumb(c.id, c.id + " · " + c.path)),
      el("div", { class: "info" },
        el("div", { class: "title" },
          el("span", { class: "rank", text: "#" + c.rank }),
          el("span", { class: "lab given", text: c.label, title: "given label" }),
          el("span", { class: "arrow", text: "→" }),
          el("span", { class: "lab sugg", text: suggested, title: "suggested label" }),
          el("span", { class: "verdict" })),
        el("div", { class: "id", text: c.id, title: "id" }),
        el("div", { class: "path", text: c.path, title: "path" }),
        el("div", { class: "scores" },
          el("span", {}, "suspicion ", el("b", { text: fmt(c.suspicion, 3) })),
          el("span", {}, "confidence ", el("b", { text: fmt(c.confidence, 3) })),
          el("span", {}, "neighbour agreement ", el("b", { text: fmt(c.agreement, 2) })))),
      el("div", { class: "nbs" },
        neighbourRow("given class", c.label, c.given),
        neighbourRow("suggested class", c.suggested, c.sugg)),
      el("div", { class: "actions" },
        button("keep", "Keep", "a"), relabelBtn,
        el("span", { class: "pickwrap" }, pickBtn),
        button("drop", "Drop", "d"), button("clear", "Clear", "u")));
    card.addEventListener("click", (ev) => {
      const i = visible.indexOf(c.id);
      if (i >= 0 && i !== current) setCurrent(i, false);
    });
    return card;
  }

  function paint(id) {
    const card = elById.get(id);
    if (!card) return;
    const c = cardById.get(id);
    const d = decisions.get(id);
    card.classList.remove("d-keep", "d-relabel", "d-drop");
    if (d) card.classList.add("d-" + d.decision);
    const toSugg = d && d.decision === "relabel" && d.new_label === c.suggested;
    const toOther = d && d.decision === "relabel" && !toSugg;
    for (const b of card.querySelectorAll("button[data-act]")) {
      const act = b.getAttribute("data-act");
      b.classList.toggle("on", act === "pick" ? !!toOther :
        !!d && act === d.decision && (act !== "relabel" || toSugg));
    }
    card.querySelector(".verdict").textContent = !d ? "" :
      d.decision === "relabel" ? "relabel → " + d.new_label : d.decision;
    card.setAttribute("data-decision", d ? d.decision : "");
  }

  function count() {
    let n = 0;
    for (const c of CARDS) if (decisions.has(c.id)) n += 1;
    document.getElementById("counter").textContent = n + " of " + CARDS.length + " decided";
  }

  function save() {
    try {
      const list = [...decisions].map(([id, d]) => [id, d.decision, d.new_label]);
      localStorage.setItem(STORE_KEY, JSON.stringify({ version: 1, decisions: list }));
    } catch (err) {
      say("Decisions could not be saved in this browser (" + err.name +
        "); export them before closing.");
    }
  }

  function load() {
    try {
      const raw = localStorage.getItem(STORE_KEY);
      if (!raw) return;
      const stored = JSON.parse(raw);
      for (const [id, decision, newLabel] of stored.decisions || []) {
        if (typeof id === "string" && VALID.has(decision)) {
          decisions.set(id, { decision: decision, new_label: String(newLabel || "") });
        }
      }
    } catch (err) {
      say("Saved decisions could not be read (" + err.name + "); starting afresh.");
    }
  }

  function setDecision(id, decision, newLabel) {
    const c = cardById.get(id);
    // Relabelling a row to its own label is keeping it.
    if (decision === "relabel" && c && newLabel === c.label) decision = "keep";
    decisions.set(id, { decision: decision, new_label: decision === "relabel" ? newLabel : "" });
  }

  function decide(id, decision, newLabel) {
    if (decision === "relabel" && (newLabel === null || newLabel === "")) return;
    setDecision(id, decision, newLabel);
    save(); paint(id); count();
  }

  function clear(id) {
    decisions.delete(id);
    save(); paint(id); count();
  }

  function setCurrent(i, scroll) {
    if (current >= 0 && current < visible.length) {
      elById.get(visible[current]).classList.remove("current");
    }
    current = visible.length ? Math.max(0, Math.min(i, visible.length - 1)) : -1;
    if (current < 0) return;
    const card = elById.get(visible[current]);
    card.classList.add("current");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function refresh() {
    closePicker(false);
    const g = document.getElementById("filter-given").value;
    const s = document.getElementById("filter-sugg").value;
    const dir = document.getElementById("sort").value === "asc" ? 1 : -1;
    const keep = current >= 0 ? visible[current] : null;
    const ordered = CARDS.slice().sort((a, b) =>
      dir * ((a.suspicion ?? 0) - (b.suspicion ?? 0)) || dir * (b.rank - a.rank));
    const main = document.getElementById("cards");
    visible = [];
    for (const c of ordered) {
      const card = elById.get(c.id);
      const show = (g === "" || c.label === g) && (s === "" || c.suggested === s);
      card.hidden = !show;
      main.append(card);
      if (show) visible.push(c.id);
    }
    document.getElementById("empty").hidden = visible.length > 0;
    main.append(document.getElementById("empty"));
    const at = keep === null ? -1 : visible.indexOf(keep);
    for (const c of CARDS) elById.get(c.id).classList.remove("current");
    current = -1;
    setCurrent(at >= 0 ? at : 0, false);
  }

  function csvField(v) {
    const s = String(v);
    return /[",\r\n]/.test(s) || s !== s.trim() ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function exportCsv() {
    const lines = ["id,decision,new_label"];
    const done = new Set();
    const add = (id) => {
      const d = decisions.get(id);
      if (!d || done.has(id)) return;
      done.add(id);
      lines.push([id, d.decision, d.new_label].map(csvField).join(","));
    };
    for (const c of CARDS) add(c.id);
    for (const id of decisions.keys()) add(id);  // imported decisions for rows not on this page
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "decisions.csv" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    say("Exported " + done.size +
      " decisions to decisions.csv (undecided rows are kept by apply).");
  }

  function parseCsv(text) {
    const rows = [];
    let row = [], field = "", quoted = false;
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (ch === '"') quoted = false;
        else field += ch;
      } else if (ch === '"') quoted = true;
      else if (ch === ",") { row.push(field); field = ""; }
      else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && text[i + 1] === "\n") i++;
        row.push(field); rows.push(row); row = []; field = "";
      } else field += ch;
    }
    if (field !== "" || row.length) { row.push(field); rows.push(row); }
    return rows.filter((r) => r.length > 1 || r[0] !== "");
  }

  function importCsv(name, text) {
    const rows = parseCsv(text);
    const head = (rows.shift() || []).map((h) => h.trim());
    const col = (n) => head.indexOf(n);
    if (col("id") < 0 || col("decision") < 0) {
      say(name + ": not a decisions file (needs the columns id,decision,new_label);" +
        " nothing imported.");
      return;
    }
    let n = 0, here = 0, skipped = 0;
    for (const r of rows) {
      const id = (r[col("id")] || "").trim();
      const decision = (r[col("decision")] || "").trim().toLowerCase();
      const newLabel = col("new_label") >= 0 ? (r[col("new_label")] || "").trim() : "";
      if (!id || !VALID.has(decision) || (decision === "relabel" && !newLabel)) {
        skipped++;
        continue;
      }
      setDecision(id, decision, newLabel);
      n++;
      if (cardById.has(id)) here++;
    }
    save();
    for (const c of CARDS) paint(c.id);
    count();
    say("Imported " + n + " decisions from " + name + " (" + here + " on this page" +
      (skipped ? ", " + skipped + " rows skipped" : "") + ").");
  }

  // ------------------------------------------------------------------ the class picker
  // One search box for the whole page, moved into the card it relabels: the class list is
  // embedded once, never repeated per card, and filtered in plain JS on each keystroke.
  const picker = el("div", { id: "picker", hidden: true });
  const pickInput = el("input", {
    id: "picker-input", type: "text", autocomplete: "off", spellcheck: false,
    placeholder: "Type a class name…",
  });
  pickInput.setAttribute("role", "combobox");
  pickInput.setAttribute("aria-autocomplete", "list");
  pickInput.setAttribute("aria-controls", "picker-list");
  pickInput.setAttribute("aria-expanded", "true");
  pickInput.setAttribute("aria-label", "Relabel to class");
  const pickList = el("ul", { id: "picker-list" });
  pickList.setAttribute("role", "listbox");
  const pickNote = el("div", { id: "picker-note" });
  picker.append(pickInput, pickList, pickNote);
  let pickFor = null;     // the card's id while the picker is open
  let pickByKey = false;  // opened by key: a choice by Enter moves on, as other keys do
  let matches = [];       // class indices shown, best first
  let active = -1;        // the highlighted one, an index into matches

  const isWordChar = (ch) => /[\p{L}\p{N}]/u.test(ch);

  // Classes whose name contains q (case-insensitive), best first: the exact name, then
  // names that start with q, then names with a word that starts with q, then any other
  // match; each group in class order. Returns at most `max` indices and the total count.
  function searchClasses(q, max) {
    if (q === "") {
      const found = Array.from({ length: Math.min(max, CLASSES.length) }, (_, i) => i);
      return { found: found, total: CLASSES.length };
    }
    const groups = [[], [], [], []];
    let total = 0;
    for (let i = 0; i < LOWER.length; i++) {
      const name = LOWER[i];
      let at = name.indexOf(q);
      if (at < 0) continue;
      total++;
      let g = 3;
      if (at === 0) g = name.length === q.length ? 0 : 1;
      else {
        while (at > 0 && isWordChar(name[at - 1])) at = name.indexOf(q, at + 1);
        if (at > 0) g = 2;
      }
      if (groups[g].length < max) groups[g].push(i);
    }
    return { found: [].concat(...groups).slice(0, max), total: total };
  }

  function option(i, pos, q, c) {
    const name = CLASSES[i];
    const li = el("li", { id: "pick-" + pos, "data-index": String(i) });
    li.setAttribute("role", "option");
    const nameEl = el("span", { class: "name" });
    const at = q === "" ? -1 : LOWER[i].indexOf(q);
    // The matched part in <mark>, by text nodes only (a class name is data, never markup).
    if (at >= 0 && LOWER[i].length === name.length) {
      nameEl.append(name.slice(0, at), el("mark", { text: name.slice(at, at + q.length) }),
        name.slice(at + q.length));
    } else nameEl.textContent = name;
    li.append(nameEl);
    if (name === c.label) li.append(el("span", { class: "tag", text: "given" }));
    if (name === c.suggested) li.append(el("span", { class: "tag", text: "suggested" }));
    li.addEventListener("mousedown", (ev) => ev.preventDefault());  // keep the input's focus
    li.addEventListener("click", () => choose(pos, false));
    return li;
  }

  function filterPicker() {
    if (pickFor === null) return;
    const q = pickInput.value.trim().toLowerCase();
    const { found, total } = searchClasses(q, PICK_MAX);
    const c = cardById.get(pickFor);
    matches = found;
    pickList.replaceChildren(...found.map((i, pos) => option(i, pos, q, c)));
    pickNote.textContent = total === 0 ? "No class matches." :
      total > found.length ? found.length + " of " + total.toLocaleString("en-US") +
        (q === "" ? " classes: type to search" : " matches: type more") :
      total + (total === 1 ? " match" : " matches");
    highlight(found.length ? 0 : -1);
  }

  function highlight(pos) {
    const items = pickList.children;
    if (active >= 0 && active < items.length) items[active].removeAttribute("aria-selected");
    active = pos;
    if (pos >= 0 && pos < items.length) {
      items[pos].setAttribute("aria-selected", "true");
      pickInput.setAttribute("aria-activedescendant", items[pos].id);
      items[pos].scrollIntoView({ block: "nearest" });
    } else pickInput.removeAttribute("aria-activedescendant");
  }

  function openPicker(id, text, byKey) {
    const card = elById.get(id);
    if (!card) return;
    closePicker(false);
    const i = visible.indexOf(id);
    if (i >= 0 && i !== current) setCurrent(i, false);
    pickFor = id;
    pickByKey = byKey;
    card.querySelector(".pickwrap").append(picker);
    picker.hidden = false;
    pickInput.value = text;
    filterPicker();
    pickInput.focus({ preventScroll: true });
    picker.scrollIntoView({ block: "nearest" });
  }

  function closePicker(refocus) {
    if (pickFor === null) return;
    const card = elById.get(pickFor);
    pickFor = null;
    matches = [];
    active = -1;
    picker.hidden = true;
    pickList.replaceChildren();
    if (refocus && card) card.focus({ preventScroll: true });
  }

  function choose(pos, byKey) {
    if (pickFor === null || pos < 0 || pos >= matches.length) return;
    const id = pickFor;
    const moveOn = byKey && pickByKey;
    decide(id, "relabel", CLASSES[matches[pos]]);
    closePicker(true);
    // Like any decision by key, a choice by Enter moves to the next card.
    if (moveOn && visible[current] === id) setCurrent(current + 1, true);
  }

  pickInput.addEventListener("input", filterPicker);
  pickInput.addEventListener("keydown", (ev) => {
    if (ev.isComposing) return;
    const k = ev.key;
    const n = matches.length;
    if (k === "ArrowDown" || k === "ArrowUp") {
      if (n) highlight((active + (k === "ArrowDown" ? 1 : n - 1)) % n);
    } else if (k === "Enter") choose(active, true);
    else if (k === "Escape") closePicker(true);
    else return;
    ev.preventDefault();
    ev.stopPropagation();
  });
  // Focus elsewhere (a click outside, Tab) closes it; checked once the focus has landed,
  // so that moving the picker to another card does not close it.
  picker.addEventListener("focusout", () => setTimeout(() => {
    if (document.activeElement !== pickInput) closePicker(false);
  }, 0));
  picker.addEventListener("click", (ev) => ev.stopPropagation());

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const k = ev.key;
    if (k === "?") { toggleHelp(); ev.preventDefault(); return; }
    const step = k === "j" || k === "ArrowDown" ? 1 : k === "k" || k === "ArrowUp" ? -1 : 0;
    if (step) { setCurrent(current + step, true); ev.preventDefault(); return; }
    if (current < 0) return;
    const id = visible[current];
    const c = cardById.get(id);
    let decided = true;
    if (k === "a") decide(id, "keep", "");
    else if (k === "r" && c.suggested !== null) decide(id, "relabel", c.suggested);
    else if (k === "d") decide(id, "drop", "");
    else if (k === "/" || k === "t") { openPicker(id, "", true); decided = false; }
    else if (/^[0-9]$/.test(k) && !DIGITS) {
      // More classes than digits: a digit starts a search instead (names like "017.Jay").
      openPicker(id, k, true);
      decided = false;
    } else if (/^[0-9]$/.test(k)) {
      const i = k === "0" ? 9 : Number(k) - 1;
      if (i >= CLASSES.length) return;
      decide(id, "relabel", CLASSES[i]);
    } else if (k === "u") { clear(id); decided = false; }
    else return;
    ev.preventDefault();
    // A decision by key moves on, so a reviewer can go down the list without the mouse.
    if (decided) setCurrent(current + 1, true);
  }

  function toggleHelp() {
    const h = document.getElementById("help");
    h.hidden = !h.hidden;
  }

  function fillFilter(id, values) {
    const sel = document.getElementById(id);
    const counts = new Map();
    for (const v of values) if (v !== null) counts.set(v, (counts.get(v) || 0) + 1);
    const names = CLASSES.filter((n) => counts.has(n))
      .concat([...counts.keys()].filter((n) => !CLASS_INDEX.has(n)));
    for (const name of names) {
      sel.append(el("option", { value: name, text: name + " (" + counts.get(name) + ")" }));
    }
    sel.addEventListener("change", refresh);
  }

  document.getElementById("runinfo").textContent = "run " + DATA.run_id + " · top " + CARDS.length +
    " of " + DATA.suspects + " suspects, most suspicious first";
  document.getElementById("classkeys").textContent = DIGITS ? "classes: " +
    CLASSES.map((n, i) => (i === 9 ? "0" : String(i + 1)) + " " + n).join(" · ") :
    CLASSES.length.toLocaleString("en-US") + " classes: the digit keys start a class search" +
      " (they relabel directly only in runs of 10 classes or fewer); press / or t to search.";
  const main = document.getElementById("cards");
  for (const c of CARDS) {
    const card = makeCard(c);
    elById.set(c.id, card);
    main.append(card);
  }
  main.append(el("div", { id: "empty",
    text: CARDS.length ? "No card matches the filters." : "This run has no suspects." }));
  load();
  for (const c of CARDS) paint(c.id);
  count();
  fillFilter("filter-given", CARDS.map((c) => c.label));
  fillFilter("filter-sugg", CARDS.map((c) => c.suggested));
  document.getElementById("sort").addEventListener("change", refresh);
  document.getElementById("export").addEventListener("click", exportCsv);
  document.getElementById("toggle-help").addEventListener("click", toggleHelp);
  document.getElementById("import").addEventListener("change", (ev) => {
    const input = ev.target;
    const file = input.files && input.files[0];
    if (!file) return;
    file.text().then((text) => importCsv(file.name, text))
      .catch((err) => say(file.name + ": could not be read (" + err.name + ")"))
      .finally(() => { input.value = ""; });
  });
  document.addEventListener("keydown", onKey);
  const pad = () => {
    const height = document.querySelector("header").offsetHeight;
    document.documentElement.style.scrollPaddingTop = height + 8 + "px";
  };
  window.addEventListener("resize", pad);
  new ResizeObserver(pad).observe(document.querySelector("header"));
  refresh();
  document.body.setAttribute("data-ready", "1");
})();
