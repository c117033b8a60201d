"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("nc-data").textContent);
  const IMAGES = new Map(
    Object.entries(JSON.parse(document.getElementById("nc-images").textContent)));
  const ROWS = new Map(Object.entries(DATA.rows));
  const CLASSES = DATA.classes;
  const CARDS = DATA.cards;
  const OUTLIERS = DATA.outliers || [];
  const GROUPS = DATA.groups || [];
  const MEMBERS_SHOWN = DATA.members_shown || 12;
  const CLASS_INDEX = new Map(CLASSES.map((n, i) => [n, i]));
  const LOWER = CLASSES.map((n) => n.toLowerCase());
  // The digit keys relabel to class 1–9, 10 only where they reach every class.
  const DIGITS = CLASSES.length <= 10;
  const PICK_MAX = 10;  // matches the class picker shows
  const UNDO_MAX = 200;  // actions the Undo button remembers (this page load only)
  const STORE_KEY = "noisyclean-review:" + DATA.run_id;
  const VALID = new Set(["keep", "relabel", "drop"]);
  const cardById = new Map(CARDS.map((c) => [c.id, c]));
  const outlierById = new Map(OUTLIERS.map((c) => [c.id, c]));
  const groupByKey = new Map(GROUPS.map((g) => [String(g.group), g]));
  // Every row's given label that the page knows: a relabel to it is a keep.
  const LABEL = new Map();
  for (const [id, info] of ROWS) LABEL.set(id, info[0]);
  for (const g of GROUPS) for (const m of g.members) LABEL.set(m.id, m.label);
  for (const c of OUTLIERS) LABEL.set(c.id, c.label);
  for (const c of CARDS) LABEL.set(c.id, c.label);
  // Elements that show a row's decision, besides its card: group members, and the groups.
  const memberEls = new Map();     // row id → [figure]
  const groupsOfRow = new Map();   // row id → [group key]
  let decisions = new Map();
  const undoStack = [];

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
  const plural = (n, one, many) => n.toLocaleString("en-US") + " " + (n === 1 ? one : many);

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

  function rowInfo(id) {
    const card = cardById.get(id) || outlierById.get(id);
    return ROWS.get(id) || (card ? [card.label, card.path] : [LABEL.get(id) || "?", ""]);
  }

  function neighbourRow(kind, cls, ids) {
    const row = el("div", { class: "nbrow" },
      el("div", { class: "nbhead", text: kind }, el("span", { text: cls === null ? "–" : cls })));
    if (!ids.length) row.append(el("span", { class: "none", text: "no neighbours of this class" }));
    for (const id of ids) {
      const info = rowInfo(id);
      row.append(el("figure", { class: "nb" },
        thumb(id, id + " · " + info[0] + " · " + info[1]),
        el("figcaption", { text: info[0], title: info[0] })));
    }
    return row;
  }

  const keyButton = (act, text, key, onClick) => {
    const b = el("button", { type: "button", "data-act": act }, text + " ", el("kbd", { text: key }));
    b.addEventListener("click", onClick);
    return b;
  };

  // ------------------------------------------------------------------ Wrong labels cards
  function conflictBadge(c) {
    if (!Array.isArray(c.conflict)) return null;
    const text = c.conflict.length ?
      "conflict: " + (c.conflict.length === 1 ? "copy" : "copies") + " labelled " +
        c.conflict.join(", ") :
      "in a conflicting duplicate group";
    return el("span", { class: "badge conflict", text: text,
      title: "A near-copy of this image carries another label (see the Duplicates tab)" });
  }

  function makeCard(c) {
    const act = (a) => () => {
      if (a === "pick") openPicker(cardTarget(c.id), "", false);
      else if (a === "keep") decide(c.id, "keep", "");
      else if (a === "relabel") decide(c.id, "relabel", c.suggested);
      else if (a === "drop") decide(c.id, "drop", "");
      else clear(c.id);
    };
    const suggested = c.suggested === null ? "–" : c.suggested;
    const relabelBtn = keyButton("relabel", "Relabel → " + suggested, "r", act("relabel"));
    if (c.suggested === null) relabelBtn.disabled = true;
    const pickBtn = keyButton("pick", "Relabel to…", "/", act("pick"));
    pickBtn.title = "Relabel to any class: type to search its name";
    const title = el("div", { class: "title" },
      el("span", { class: "rank", text: "#" + c.rank }),
      el("span", { class: "lab given", text: c.label, title: "given label" }),
      el("span", { class: "arrow", text: "→" }),
      el("span", { class: "lab sugg", text: suggested, title: "suggested label" }));
    const badge = conflictBadge(c);
    if (badge) title.append(badge);
    title.append(el("span", { class: "verdict" }));
    const card = el("article", { class: "card", "data-id": c.id, tabIndex: -1 },
      el("figure", { class: "big" }, thumb(c.id, c.id + " · " + c.path)),
      el("div", { class: "info" },
        title,
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
        keyButton("keep", "Keep", "a", act("keep")), relabelBtn,
        el("span", { class: "pickwrap" }, pickBtn),
        keyButton("drop", "Drop", "d", act("drop")), keyButton("clear", "Clear", "u", act("clear"))));
    return card;
  }

  // ------------------------------------------------------------------ Outlier cards
  function makeOutlier(c) {
    const card = el("article", { class: "ocard", "data-id": c.id, tabIndex: -1 },
      el("figure", { class: "big" }, thumb(c.id, c.id + " · " + c.path)),
      el("div", { class: "info" },
        el("div", { class: "title" },
          el("span", { class: "lab given", text: c.label, title: "given label" }),
          el("span", { class: "badge suggestion",
            text: "suggestion: " + (c.suggestion || "drop"),
            title: "No class fits this image well: relabelling cannot fix it" }),
          el("span", { class: "verdict" })),
        el("div", { class: "id", text: c.id, title: "id" }),
        el("div", { class: "path", text: c.path, title: "path" }),
        el("div", { class: "scores" },
          el("span", {}, "outlier score ", el("b", { text: fmt(c.outlier, 2) })))),
      el("div", { class: "actions" },
        keyButton("drop", "Drop", "d", () => decide(c.id, "drop", "")),
        keyButton("keep", "Keep", "a", () => decide(c.id, "keep", "")),
        keyButton("clear", "Clear", "u", () => clear(c.id))));
    return card;
  }

  // ------------------------------------------------------------------ duplicate groups
  function groupTags(g) {
    const tags = new Map();
    for (const m of g.members) tags.set(m.label, ["in group"]);
    tags.set(g.target, ["most common"]);
    return tags;
  }

  function makeGroup(g) {
    const key = String(g.group);
    const n = g.members.length;
    const flags = g.flags.filter((f) => f !== g.kind);
    const head = el("div", { class: "title" },
      el("span", { class: "kind kind-" + (["conflict", "leak", "exact", "near"].includes(g.kind) ?
        g.kind : "other"), text: g.kind }),
      el("span", { class: "rank", text: "group " + g.group }),
      el("span", { class: "gsize", text: plural(n, "member", "members") }));
    if (flags.length) head.append(el("span", { class: "gflags", text: "also " + flags.join(", ") }));
    head.append(el("span", { class: "verdict" }));
    const strip = el("div", { class: "members" });
    g.members.slice(0, MEMBERS_SHOWN).forEach((m, i) => {
      const path = (ROWS.get(m.id) || ["", ""])[1];
      const keepThis = el("button", { type: "button", "data-act": "keep-only",
        text: "keep this one", title: "Keep this copy, drop the other members" });
      keepThis.addEventListener("click", () => keepOne(g, m.id));
      const fig = el("figure", { class: "member", "data-id": m.id },
        thumb(m.id, m.id + " · " + m.label + " · " + path),
        el("figcaption", {},
          el("span", { class: "lab given", text: m.label, title: "given label" }),
          el("span", { class: "id", text: m.id, title: m.id + (path ? " · " + path : "") }),
          el("span", { class: "mmeta", text: (m.split || "–") + " · " +
            (i === 0 ? "first" : "sim " + fmt(m.similarity, 3) + (m.measured ? "" : " ≥")),
            title: i === 0 ? "the group's first member" : m.measured ?
              "cosine similarity to the first member" :
              "at least this similar to the first member (a bound)" }),
          el("span", { class: "mverdict" })),
        keepThis);
      strip.append(fig);
      if (!memberEls.has(m.id)) memberEls.set(m.id, []);
      memberEls.get(m.id).push(fig);
    });
    for (const m of g.members) {
      if (!groupsOfRow.has(m.id)) groupsOfRow.set(m.id, []);
      groupsOfRow.get(m.id).push(key);
    }
    const pickBtn = el("button", { type: "button", "data-act": "pick", text: "Relabel all to…",
      title: "Relabel every member to any class: type to search its name" });
    pickBtn.addEventListener("click", () => openPicker(groupTarget(g), "", false));
    const button = (act, text, title, onClick) => {
      const b = el("button", { type: "button", "data-act": act, text: text, title: title });
      b.addEventListener("click", onClick);
      return b;
    };
    const card = el("article", { class: "gcard", "data-group": key, tabIndex: -1 },
      head,
      strip,
      n > MEMBERS_SHOWN ? el("div", { class: "more", text: "+ " +
        plural(n - MEMBERS_SHOWN, "more member", "more members") +
        " not shown (the group's actions decide them too)" }) : "",
      el("div", { class: "actions" },
        button("keep-one", "Keep one", "Keep the first member, drop the others (or click " +
          "“keep this one” under another member)", () => keepOne(g, g.members[0].id)),
        button("relabel-all", "Relabel all → " + g.target, "Relabel every member to the " +
          "group's most common label (members that carry it are kept)",
          () => relabelAll(g, g.target)),
        el("span", { class: "pickwrap" }, pickBtn),
        button("drop-all", "Drop all", "Drop every member", () => dropAll(g)),
        button("clear", "Clear", "Clear the members' decisions",
          () => change("clear of group " + g.group, g.members.map((m) => [m.id, null, ""])))));
    return card;
  }

  function keepOne(g, keeper) {
    const done = change("keep one of group " + g.group,
      g.members.map((m) => [m.id, m.id === keeper ? "keep" : "drop", ""]));
    say("Group " + g.group + ": kept " + keeper + ", dropped " +
      plural(g.members.length - 1, "other member", "other members") + (done ? "." : " (no change)."));
  }

  function relabelAll(g, label) {
    change("relabel all of group " + g.group + " → " + label,
      g.members.map((m) => [m.id, "relabel", label]));
    say("Group " + g.group + ": every member relabelled to " + label +
      " (members already labelled so are kept).");
  }

  function dropAll(g) {
    change("drop all of group " + g.group, g.members.map((m) => [m.id, "drop", ""]));
    say("Group " + g.group + ": dropped " + plural(g.members.length, "member", "members") + ".");
  }

  // The flag rule's figures, as train printed them: estimate, interval, expected precision.
  function estimate(n) {
    if (!n || n.noise == null) return "";
    const pct = (x) => (100 * x).toFixed(1) + "%";
    let text = " · estimated wrong labels " + pct(n.noise) + " (95% interval " +
      pct(n.noise_low) + "–" + pct(n.noise_high) + ")";
    if (n.expected_precision != null) {
      text += " · " + n.flagged + " flagged" + (n.budget != null ? " (budget " + n.budget + ")" : "") +
        ", expected precision " + n.expected_precision.toFixed(2);
    }
    return text;
  }

  // ------------------------------------------------------------------ tabs
  const TABS = [
    {
      key: "labels", items: CARDS, total: DATA.suspects, keyOf: (c) => c.id, make: makeCard,
      rows: (c) => [c.id],
      given: (c) => [c.label], sugg: (c) => [c.suggested],
      score: (c) => c.suspicion ?? 0, tie: (c) => -c.rank,
      sorts: ["suspicion, highest first", "suspicion, lowest first"],
      info: () => "top " + CARDS.length + " of " + DATA.suspects + " suspects, most suspicious first" +
        estimate(DATA.noise),
      empty: () => (CARDS.length ? "No card matches the filters." : "This run has no suspects."),
    },
    {
      key: "dups", items: GROUPS, total: DATA.n_groups || 0, keyOf: (g) => String(g.group),
      make: makeGroup, rows: (g) => g.members.map((m) => m.id),
      given: (g) => g.members.map((m) => m.label), sugg: (g) => [g.target],
      score: (g) => -GROUPS.indexOf(g), tie: () => 0,
      sorts: ["most urgent first", "least urgent first"],
      info: () => {
        const kinds = Object.entries(DATA.group_kinds || {}).map(([k, n]) => n + " " + k);
        return GROUPS.length + " of " + plural(DATA.n_groups || 0, "near-duplicate group",
          "near-duplicate groups") + (kinds.length ? " (" + kinds.join(" · ") + ")" : "") +
          ", conflicts first";
      },
      empty: () => (!DATA.has_duplicates ?
        "This run has no duplicates.parquet (it was written by an older noisyclean): " +
          "rerun noisyclean train to find near-duplicate groups." :
        GROUPS.length ? "No group matches the filters." : "This run has no near-duplicate groups."),
    },
    {
      key: "outliers", items: OUTLIERS, total: DATA.n_outliers || 0, keyOf: (c) => c.id,
      make: makeOutlier, rows: (c) => [c.id],
      given: (c) => [c.label], sugg: () => [],
      score: (c) => c.outlier ?? -Infinity, tie: (c) => -OUTLIERS.indexOf(c),
      sorts: ["outlier score, highest first", "outlier score, lowest first"],
      info: () => "top " + OUTLIERS.length + " of " + plural(DATA.n_outliers || 0, "outlier",
        "outliers") + ", most outlying first",
      empty: () => (!DATA.has_outliers ?
        "This run has no outlier scores (it was written by an older noisyclean): " +
          "rerun noisyclean train to score outliers." :
        OUTLIERS.length ? "No outlier matches the filters." : "This run has no outliers."),
    },
  ];
  const TAB = new Map(TABS.map((t) => [t.key, t]));
  for (const t of TABS) {
    t.els = new Map();
    t.visible = [];
    t.current = -1;
    t.panel = document.getElementById("panel-" + t.key);
    t.byKey = new Map(t.items.map((x) => [t.keyOf(x), x]));
  }
  let tab = TAB.get("labels");

  function isDecided(t, item) {
    return t.rows(item).some((id) => decisions.has(id));
  }

  // ------------------------------------------------------------------ painting
  function paintCard(card, id, suggested) {
    const d = decisions.get(id);
    card.classList.remove("d-keep", "d-relabel", "d-drop");
    if (d) card.classList.add("d-" + d.decision);
    const toSugg = d && d.decision === "relabel" && d.new_label === suggested;
    const toOther = d && d.decision === "relabel" && !toSugg;
    for (const b of card.querySelectorAll(":scope > .actions button[data-act]")) {
      const act = b.getAttribute("data-act");
      b.classList.toggle("on", act === "pick" ? !!toOther :
        !!d && act === d.decision && (act !== "relabel" || toSugg));
    }
    card.querySelector(".verdict").textContent = verdict(d);
    card.setAttribute("data-decision", d ? d.decision : "");
  }

  const verdict = (d) => (!d ? "" : d.decision === "relabel" ? "relabel → " + d.new_label :
    d.decision);

  function paintGroup(key) {
    const g = groupByKey.get(key);
    const card = TAB.get("dups").els.get(key);
    if (!g || !card) return;
    const ds = g.members.map((m) => decisions.get(m.id));
    const counts = new Map();
    let undecided = 0;
    for (const d of ds) {
      if (!d) { undecided++; continue; }
      const v = verdict(d);
      counts.set(v, (counts.get(v) || 0) + 1);
    }
    const parts = [...counts].map(([v, n]) => v + " " + n);
    if (undecided && parts.length) parts.push("undecided " + undecided);
    card.querySelector(".verdict").textContent = parts.join(" · ");
    card.setAttribute("data-state", !parts.length ? "" : undecided ? "partial" : "decided");
    const n = g.members.length;
    const all = (f) => ds.every((d, i) => d && f(d, g.members[i]));
    // The label every member ends with, where one relabel-all made it so.
    const relabelTo = ds.find((d) => d && d.decision === "relabel");
    const same = relabelTo && all((d, m) =>
      (d.decision === "relabel" && d.new_label === relabelTo.new_label) ||
      (d.decision === "keep" && m.label === relabelTo.new_label));
    const on = {
      "keep-one": n > 1 && ds.filter((d) => d && d.decision === "keep").length === 1 &&
        ds.filter((d) => d && d.decision === "drop").length === n - 1,
      "relabel-all": !!same && relabelTo.new_label === g.target,
      "pick": !!same && relabelTo.new_label !== g.target,
      "drop-all": all((d) => d.decision === "drop"),
    };
    for (const b of card.querySelectorAll(":scope > .actions button[data-act]")) {
      b.classList.toggle("on", !!on[b.getAttribute("data-act")]);
    }
  }

  // Paint rows wherever they are shown (their card, their member figures), then each
  // group that holds one of them, once.
  function paint(ids) {
    const groups = new Set();
    for (const id of ids) {
      paintRow(id);
      for (const key of groupsOfRow.get(id) || []) groups.add(key);
    }
    for (const key of groups) paintGroup(key);
  }

  function paintRow(id) {
    const card = TAB.get("labels").els.get(id);
    if (card) paintCard(card, id, cardById.get(id).suggested);
    const ocard = TAB.get("outliers").els.get(id);
    if (ocard) paintCard(ocard, id, undefined);
    const d = decisions.get(id);
    for (const fig of memberEls.get(id) || []) {
      fig.classList.remove("d-keep", "d-relabel", "d-drop");
      if (d) fig.classList.add("d-" + d.decision);
      fig.setAttribute("data-decision", d ? d.decision : "");
      fig.querySelector(".mverdict").textContent = verdict(d);
    }
  }

  function count() {
    let n = 0, of = 0;
    for (const item of tab.items) {
      for (const id of tab.rows(item)) { of++; if (decisions.has(id)) n++; }
    }
    document.getElementById("counter").textContent = n + " of " + of + " decided";
    for (const t of TABS) {
      document.getElementById("n-" + t.key).textContent = t.total.toLocaleString("en-US");
    }
    updateBulk();
  }

  // ------------------------------------------------------------------ decisions
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
    // Relabelling a row to its own label is keeping it.
    if (decision === "relabel" && newLabel === LABEL.get(id)) decision = "keep";
    decisions.set(id, { decision: decision, new_label: decision === "relabel" ? newLabel : "" });
  }

  const sameDecision = (a, b) => (!a && !b) ||
    (!!a && !!b && a.decision === b.decision && a.new_label === b.new_label);

  // Apply [id, decision or null (clear), new_label] updates as one action that Undo can
  // take back: it remembers the earlier decision of exactly the rows it changed.
  function change(what, updates) {
    const before = new Map();
    for (const [id, decision, newLabel] of updates) {
      if (decision === "relabel" && (newLabel === null || newLabel === "")) continue;
      if (!before.has(id)) before.set(id, decisions.get(id) || null);
      if (decision === null) decisions.delete(id);
      else setDecision(id, decision, newLabel);
    }
    const changed = new Map([...before].filter(([id, d]) => !sameDecision(d, decisions.get(id))));
    if (changed.size) {
      undoStack.push({ what: what, before: changed });
      if (undoStack.length > UNDO_MAX) undoStack.shift();
      save();
      paint(changed.keys());
    }
    count();
    return changed.size;
  }

  function decide(id, decision, newLabel) {
    if (decision === "relabel" && (newLabel === null || newLabel === "")) return;
    change(decision === "relabel" ? "relabel of " + id + " → " + newLabel :
      decision + " of " + id, [[id, decision, newLabel]]);
  }

  function clear(id) {
    change("clear of " + id, [[id, null, ""]]);
  }

  function undo() {
    const last = undoStack.pop();
    if (!last) { say("Nothing to undo."); return; }
    for (const [id, d] of last.before) {
      if (d) decisions.set(id, d);
      else decisions.delete(id);
    }
    save();
    paint(last.before.keys());
    count();
    say("Undid the " + last.what + " (" + plural(last.before.size, "row", "rows") +
      " restored).");
  }

  // ------------------------------------------------------------------ bulk actions
  // On the undecided cards (groups) the current tab and filters show.
  const BULK = {
    labels: {
      accept: ["Accept shown suggestions", "Relabel every undecided card shown to its " +
        "suggested label", (c) => (c.suggested === null ? [] : [[c.id, "relabel", c.suggested]]),
        "suggestions accepted"],
      keep: (c) => [[c.id, "keep", ""]],
    },
    dups: {
      accept: ["Keep one of each shown group", "In every undecided group shown, keep the " +
        "first member and drop the others",
        (g) => g.members.map((m, i) => [m.id, i === 0 ? "keep" : "drop", ""]),
        "groups reduced to one member"],
      keep: (g) => g.members.map((m) => [m.id, "keep", ""]),
    },
    outliers: {
      accept: ["Drop shown outliers", "Drop every undecided outlier shown",
        (c) => [[c.id, "drop", ""]], "outliers dropped"],
      keep: (c) => [[c.id, "keep", ""]],
    },
  };

  function pending(accept) {
    const rule = BULK[tab.key];
    return tab.visible.map((k) => tab.byKey.get(k)).filter((item) => !isDecided(tab, item) &&
      (accept ? rule.accept[2](item) : rule.keep(item)).length > 0);
  }

  function updateBulk() {
    const rule = BULK[tab.key];
    const unit = tab.key === "dups" ? ["group", "groups"] : ["card", "cards"];
    const accept = document.getElementById("bulk-accept");
    const n = pending(true).length;
    accept.textContent = rule.accept[0] + " (" + n + ")";
    accept.title = rule.accept[1] + " (" + plural(n, unit[0], unit[1]) + "); Undo takes it back.";
    accept.disabled = n === 0;
    const keep = document.getElementById("bulk-keep");
    const k = pending(false).length;
    keep.textContent = "Keep all shown (" + k + ")";
    keep.title = "Keep every row of the undecided " + unit[1] + " shown (" +
      plural(k, unit[0], unit[1]) + "); Undo takes it back.";
    keep.disabled = k === 0;
    const u = document.getElementById("undo");
    const last = undoStack[undoStack.length - 1];
    u.disabled = !last;
    u.title = last ? "Undo the " + last.what + " (z)" : "Nothing to undo";
  }

  function bulk(accept) {
    const rule = BULK[tab.key];
    const items = pending(accept);
    const updates = items.flatMap((item) => (accept ? rule.accept[2](item) : rule.keep(item)));
    const unit = tab.key === "dups" ? ["group", "groups"] : ["card", "cards"];
    const what = "bulk action “" + (accept ? rule.accept[0] : "Keep all shown") + "” on " +
      plural(items.length, unit[0], unit[1]);
    const n = change(what, updates);
    say((accept ? items.length + " " + rule.accept[3] : plural(items.length, unit[0], unit[1]) +
      " kept") + " (" + plural(n, "row", "rows") + " decided); Undo (z) takes it back.");
  }

  // ------------------------------------------------------------------ navigation
  function setCurrent(i, scroll) {
    const t = tab;
    if (t.current >= 0 && t.current < t.visible.length) {
      t.els.get(t.visible[t.current]).classList.remove("current");
    }
    t.current = t.visible.length ? Math.max(0, Math.min(i, t.visible.length - 1)) : -1;
    if (t.current < 0) return;
    const card = t.els.get(t.visible[t.current]);
    card.classList.add("current");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function refresh() {
    closePicker(false);
    const g = document.getElementById("filter-given").value;
    const s = document.getElementById("filter-sugg").value;
    const dir = document.getElementById("sort").value === "asc" ? 1 : -1;
    const t = tab;
    const keep = t.current >= 0 ? t.visible[t.current] : null;
    const ordered = t.items.slice().sort((a, b) =>
      dir * (t.score(a) - t.score(b)) || dir * (t.tie(a) - t.tie(b)));
    t.visible = [];
    for (const item of ordered) {
      const key = t.keyOf(item);
      const card = t.els.get(key);
      const show = (g === "" || t.given(item).includes(g)) &&
        (s === "" || t.sugg(item).includes(s));
      card.hidden = !show;
      t.panel.append(card);
      if (show) t.visible.push(key);
    }
    const empty = document.getElementById("empty");
    empty.textContent = t.empty();
    empty.hidden = t.visible.length > 0;
    t.panel.append(empty);
    const at = keep === null ? -1 : t.visible.indexOf(keep);
    for (const card of t.els.values()) card.classList.remove("current");
    t.current = -1;
    setCurrent(at >= 0 ? at : 0, false);
    updateBulk();
  }

  function fillFilter(id, values, enabled) {
    const sel = document.getElementById(id);
    const counts = new Map();
    for (const v of values) if (v !== null && v !== undefined) counts.set(v, (counts.get(v) || 0) + 1);
    const names = CLASSES.filter((n) => counts.has(n))
      .concat([...counts.keys()].filter((n) => !CLASS_INDEX.has(n)));
    sel.replaceChildren(el("option", { value: "", text: "all classes" }),
      ...names.map((name) => el("option", { value: name, text: name + " (" + counts.get(name) + ")" })));
    sel.value = "";
    sel.disabled = !enabled;
  }

  function showTab(key) {
    closePicker(false);
    tab = TAB.get(key);
    for (const t of TABS) {
      const on = t === tab;
      t.panel.hidden = !on;
      const b = document.getElementById("tab-" + t.key);
      b.setAttribute("aria-selected", on ? "true" : "false");
      b.classList.toggle("on", on);
    }
    // A card (group) counts once per class it holds: its given label(s), its suggestion.
    fillFilter("filter-given", tab.items.flatMap((x) => [...new Set(tab.given(x))]), true);
    fillFilter("filter-sugg", tab.items.flatMap((x) => tab.sugg(x)), tab.key !== "outliers");
    const sort = document.getElementById("sort");
    sort.options[0].textContent = tab.sorts[0];
    sort.options[1].textContent = tab.sorts[1];
    sort.value = "desc";
    document.getElementById("runinfo").textContent = "run " + DATA.run_id + " · " + tab.info();
    refresh();
    count();
  }

  // ------------------------------------------------------------------ export, import
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
    // One line per row, whichever tab decided it (a row has one decision: the last).
    for (const t of TABS) for (const item of t.items) for (const id of t.rows(item)) add(id);
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
    const updates = [];
    for (const r of rows) {
      const id = (r[col("id")] || "").trim();
      const decision = (r[col("decision")] || "").trim().toLowerCase();
      const newLabel = col("new_label") >= 0 ? (r[col("new_label")] || "").trim() : "";
      if (!id || !VALID.has(decision) || (decision === "relabel" && !newLabel)) {
        skipped++;
        continue;
      }
      updates.push([id, decision, newLabel]);
      n++;
      if (cardById.has(id) || outlierById.has(id) || groupsOfRow.has(id)) here++;
    }
    change("import of " + name, updates);
    say("Imported " + n + " decisions from " + name + " (" + here + " on this page" +
      (skipped ? ", " + skipped + " rows skipped" : "") + ").");
  }

  // ------------------------------------------------------------------ the class picker
  // One search box for the whole page, moved into the card it relabels: the class list is
  // embedded once, never repeated per card, and filtered in plain JS on each keystroke.
  // A target says where it opens and what a choice does: relabel a card, or a whole group.
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
  let pickFor = null;     // the target while the picker is open
  let pickByKey = false;  // opened by key: a choice by Enter moves on, as other keys do
  let matches = [];       // class indices shown, best first
  let active = -1;        // the highlighted one, an index into matches

  function cardTarget(id) {
    const c = cardById.get(id);
    const tags = new Map();
    const tag = (name, text) => { if (!tags.has(name)) tags.set(name, []); tags.get(name).push(text); };
    tag(c.label, "given");
    if (c.suggested !== null) tag(c.suggested, "suggested");
    return { tab: "labels", key: id, tags: tags,
      choose: (name) => decide(id, "relabel", name) };
  }

  function groupTarget(g) {
    return { tab: "dups", key: String(g.group), tags: groupTags(g),
      choose: (name) => relabelAll(g, name) };
  }

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

  function option(i, pos, q, tags) {
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
    for (const text of tags.get(name) || []) li.append(el("span", { class: "tag", text: text }));
    li.addEventListener("mousedown", (ev) => ev.preventDefault());  // keep the input's focus
    li.addEventListener("click", () => choose(pos, false));
    return li;
  }

  function filterPicker() {
    if (pickFor === null) return;
    const q = pickInput.value.trim().toLowerCase();
    const { found, total } = searchClasses(q, PICK_MAX);
    matches = found;
    pickList.replaceChildren(...found.map((i, pos) => option(i, pos, q, pickFor.tags)));
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

  function openPicker(target, text, byKey) {
    const t = TAB.get(target.tab);
    const card = t.els.get(target.key);
    if (!card || t !== tab) return;
    closePicker(false);
    const i = t.visible.indexOf(target.key);
    if (i >= 0 && i !== t.current) setCurrent(i, false);
    pickFor = target;
    pickByKey = byKey;
    card.querySelector(":scope > .actions .pickwrap").append(picker);
    picker.hidden = false;
    pickInput.value = text;
    filterPicker();
    pickInput.focus({ preventScroll: true });
    picker.scrollIntoView({ block: "nearest" });
  }

  function closePicker(refocus) {
    if (pickFor === null) return;
    const card = TAB.get(pickFor.tab).els.get(pickFor.key);
    pickFor = null;
    matches = [];
    active = -1;
    picker.hidden = true;
    pickList.replaceChildren();
    if (refocus && card) card.focus({ preventScroll: true });
  }

  function choose(pos, byKey) {
    if (pickFor === null || pos < 0 || pos >= matches.length) return;
    const target = pickFor;
    const moveOn = byKey && pickByKey;
    target.choose(CLASSES[matches[pos]]);
    closePicker(true);
    // Like any decision by key, a choice by Enter moves to the next card.
    if (moveOn && tab.visible[tab.current] === target.key) setCurrent(tab.current + 1, true);
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

  // ------------------------------------------------------------------ keys
  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const k = ev.key;
    if (k === "?") { toggleHelp(); ev.preventDefault(); return; }
    if (k === "z") { undo(); ev.preventDefault(); return; }
    const step = k === "j" || k === "ArrowDown" ? 1 : k === "k" || k === "ArrowUp" ? -1 : 0;
    if (step) { setCurrent(tab.current + step, true); ev.preventDefault(); return; }
    // Deciding keys: on the cards of the Wrong labels tab, and keep/drop/clear on outliers.
    if (tab.current < 0 || tab.key === "dups") return;
    const id = tab.visible[tab.current];
    const c = cardById.get(id);
    const labels = tab.key === "labels";
    let decided = true;
    if (k === "a") decide(id, "keep", "");
    else if (k === "d") decide(id, "drop", "");
    else if (k === "u") { clear(id); decided = false; }
    else if (!labels) return;
    else if (k === "r" && c.suggested !== null) decide(id, "relabel", c.suggested);
    else if (k === "/" || k === "t") { openPicker(cardTarget(id), "", true); decided = false; }
    else if (/^[0-9]$/.test(k) && !DIGITS) {
      // More classes than digits: a digit starts a search instead (names like "017.Jay").
      openPicker(cardTarget(id), k, true);
      decided = false;
    } else if (/^[0-9]$/.test(k)) {
      const i = k === "0" ? 9 : Number(k) - 1;
      if (i >= CLASSES.length) return;
      decide(id, "relabel", CLASSES[i]);
    } else return;
    ev.preventDefault();
    // A decision by key moves on, so a reviewer can go down the list without the mouse.
    if (decided) setCurrent(tab.current + 1, true);
  }

  function toggleHelp() {
    const h = document.getElementById("help");
    h.hidden = !h.hidden;
  }

  // ------------------------------------------------------------------ start
  document.getElementById("classkeys").textContent = DIGITS ? "classes: " +
    CLASSES.map((n, i) => (i === 9 ? "0" : String(i + 1)) + " " + n).join(" · ") :
    CLASSES.length.toLocaleString("en-US") + " classes: the digit keys start a class search" +
      " (they relabel directly only in runs of 10 classes or fewer); press / or t to search.";
  for (const t of TABS) {
    for (const item of t.items) {
      const key = t.keyOf(item);
      const card = t.make(item);
      card.addEventListener("click", () => {
        const i = t.visible.indexOf(key);
        if (t === tab && i >= 0 && i !== t.current) setCurrent(i, false);
      });
      t.els.set(key, card);
      t.panel.append(card);
    }
    document.getElementById("tab-" + t.key).addEventListener("click", () => showTab(t.key));
  }
  document.getElementById("panel-labels").append(el("div", { id: "empty" }));
  load();
  paint(TABS.flatMap((t) => t.items.flatMap((item) => t.rows(item))));
  for (const sel of ["filter-given", "filter-sugg", "sort"]) {
    document.getElementById(sel).addEventListener("change", refresh);
  }
  document.getElementById("export").addEventListener("click", exportCsv);
  document.getElementById("toggle-help").addEventListener("click", toggleHelp);
  document.getElementById("bulk-accept").addEventListener("click", () => bulk(true));
  document.getElementById("bulk-keep").addEventListener("click", () => bulk(false));
  document.getElementById("undo").addEventListener("click", undo);
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
  showTab("labels");
  document.body.setAttribute("data-ready", "1");
})();
