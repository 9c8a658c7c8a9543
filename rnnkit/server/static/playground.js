// rnnkit playground: vanilla JS over the `rnnkit serve` HTTP API (no build step, no CDN).
// Every piece of model output goes into the DOM through textContent, never innerHTML.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

// ---------------------------------------------------------------------------------------
// HTTP helpers

/** An error from the server: the message of its JSON `{"error": {...}}` body. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, message);
}

/** POST a JSON body (or FormData) and return the parsed JSON answer. */
async function post(path, body, options = {}) {
  const init = { method: "POST", signal: options.signal };
  if (body instanceof FormData) {
    init.body = body;
  } else {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

// ---------------------------------------------------------------------------------------
// Small DOM helpers

/** Create an element with properties (textContent, className, ...) and children. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "style") Object.assign(node.style, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/** What every panel (`<section data-tab=NAME>`) has: id `panel-NAME`, class and role, the model
 * selector's row first and the error line last. */
function framePanel(panel) {
  panel.id = `panel-${panel.dataset.tab}`;
  panel.className = "panel";
  panel.setAttribute("role", "tabpanel");
  panel.prepend(el("div", { className: "model-row" }));
  panel.append(el("p", { className: "error", role: "alert", hidden: true }));
}

/** The body of a text-in panel: a labelled text box (id `PREFIX-input`), its action button
 * (`PREFIX-go`) and the `outputs` that show the answer, after the model row; returns the box
 * and the button. */
function textForm(panel, prefix, { label, rows, action, spellcheck = true }, ...outputs) {
  const input = el("textarea", { id: `${prefix}-input`, rows, ...(spellcheck ? {} : { spellcheck: false }) });
  const go = el("button", { id: `${prefix}-go`, type: "button", className: "primary", textContent: action });
  $(".model-row", panel).after(
    el("label", { htmlFor: input.id, textContent: label }), input,
    el("div", { className: "buttons" }, go), ...outputs);
  return { input, go };
}

/** Show a range input's value, two decimals, in its `<output>` as it moves. */
function showValue(range, output) {
  range.addEventListener("input", () => { output.textContent = Number(range.value).toFixed(2); });
}

function showError(panel, err) {
  const box = $(".error", panel);
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

/** Run `fn` for a panel's action: clear the old error, show a new one, disable the button. */
async function guarded(panel, button, fn) {
  showError(panel, null);
  if (button) button.disabled = true;
  panel.setAttribute("aria-busy", "true");
  try {
    await fn();
  } catch (err) {
    if (err.name !== "AbortError") showError(panel, err);
  } finally {
    if (button) button.disabled = false;
    panel.removeAttribute("aria-busy");
  }
}

function numberOr(input, fallback) {
  const v = input.value.trim();
  return v === "" || Number.isNaN(Number(v)) ? fallback : Number(v);
}

/** A bar whose filled share is `fraction` (0–1). */
function bar(fraction, label) {
  const fill = el("span", { style: { width: `${Math.max(0, Math.min(1, fraction)) * 100}%` } });
  return el("div", { className: "bar", role: "img", "aria-label": label }, fill);
}

/** A stable colour per string (tags, series). */
function hue(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

/** Size a canvas's drawing buffer to its displayed size (crisp on HiDPI); returns its 2D context. */
function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = Math.round(width * (canvas.height / canvas.width)) || canvas.height;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, width, height };
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// ---------------------------------------------------------------------------------------
// Tabs and model selectors

const state = { models: [] };

/** The id of the model chosen in a panel's selector. */
function modelOf(panel) {
  return $(".model-select", panel).value;
}

/** Fill a panel's model selector with the models that answer its endpoint. */
function setupModelSelect(panel, fitting, onChange) {
  const row = $(".model-row", panel);
  const id = `${panel.id}-model`;
  const select = el("select", { id, className: "model-select" });
  for (const m of fitting) {
    select.append(el("option", { value: m.id, textContent: `${m.id} (${m.task}${m.level ? ", " + m.level : ""})` }));
  }
  if (fitting.length > 1) {
    row.append(el("label", { htmlFor: id }, "Model ", select));
  } else {
    select.hidden = true; // one model fits: nothing to choose
    row.append(select);
  }
  if (onChange) select.addEventListener("change", onChange);
}

function selectTab(name) {
  for (const button of document.querySelectorAll("#tabs [role=tab]")) {
    const on = button.dataset.tab === name;
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;
    $(`#panel-${button.dataset.tab}`).hidden = !on;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

function buildTabs(models) {
  const nav = $("#tabs");
  const panels = [...document.querySelectorAll("section.panel")];
  const shown = [];
  for (const panel of panels) {
    const fitting = models.filter((m) => (m.answers || []).includes(panel.dataset.answers));
    if (!fitting.length) continue;
    const name = panel.dataset.tab;
    const button = el("button", {
      type: "button", role: "tab", id: `tab-${name}`, textContent: panel.dataset.title,
    });
    button.dataset.tab = name;
    button.setAttribute("aria-controls", panel.id);
    panel.setAttribute("aria-labelledby", button.id);
    button.addEventListener("click", () => selectTab(name));
    nav.append(button);
    shown.push({ panel, fitting });
  }
  // arrow keys move between tabs (the WAI-ARIA tabs pattern)
  nav.addEventListener("keydown", (event) => {
    const tabs = [...nav.querySelectorAll("[role=tab]")];
    const at = tabs.indexOf(document.activeElement);
    if (at < 0) return;
    let to = null;
    if (event.key === "ArrowRight") to = (at + 1) % tabs.length;
    else if (event.key === "ArrowLeft") to = (at - 1 + tabs.length) % tabs.length;
    else if (event.key === "Home") to = 0;
    else if (event.key === "End") to = tabs.length - 1;
    if (to === null) return;
    event.preventDefault();
    tabs[to].focus();
    selectTab(tabs[to].dataset.tab);
  });
  return shown;
}

// ---------------------------------------------------------------------------------------
// 1. Keyboard: a session on the server carries the model's state; we feed what is typed.

const KEY_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"];

function setupKeyboard(panel) {
  const input = $("#keyboard-input");
  const bar = $("#suggestions");
  const kb = { sid: null, sent: "", queue: Promise.resolve(), generation: 0 };

  function renderSuggestions(list) {
    bar.replaceChildren();
    for (const s of list || []) {
      const button = el("button", {
        type: "button", className: "suggestion", textContent: s.word,
        title: `p = ${Number(s.probability).toFixed(3)}`,
      });
      button.addEventListener("click", () => {
        input.value += s.continuation + " ";
        changed();
        input.focus();
      });
      bar.append(button);
    }
  }

  async function newSession(text, generation) {
    const answer = await post("/v1/sessions", { model: modelOf(panel), text, k: 3 });
    if (generation === kb.generation) kb.sid = answer.id; // not if the model changed meanwhile
    return answer;
  }

  /** One server call bringing the session from the text it had to `full`. */
  async function sync(full, appended, generation) {
    if (generation !== kb.generation) return; // queued for a model no longer chosen
    let answer;
    if (!kb.sid) {
      answer = await newSession(full, generation);
    } else {
      const body = appended !== null ? { text: appended } : { text: full, replace: true };
      try {
        answer = await post(`/v1/sessions/${encodeURIComponent(kb.sid)}/feed`, body);
      } catch (err) {
        if (err.status !== 404) throw err;
        answer = await newSession(full, generation); // the session expired: start again
      }
    }
    // only the answer for the text now in the box (and this model) updates the bar
    if (generation === kb.generation && full === input.value) {
      showError(panel, null);
      renderSuggestions(answer.suggestions);
      bar.dataset.text = full; // the text these suggestions follow (tests wait on it)
    }
  }

  /** Queue a sync for the box's current text: an append feeds only the new characters. */
  function changed() {
    const full = input.value;
    if (full === kb.sent) return;
    const appended = full.startsWith(kb.sent) ? full.slice(kb.sent.length) : null;
    kb.sent = full;
    const generation = kb.generation;
    kb.queue = kb.queue
      .then(() => sync(full, appended, generation))
      .catch((err) => {
        if (generation !== kb.generation) return;
        kb.sid = null; // resynchronise from scratch at the next change
        kb.sent = "";
        showError(panel, err);
      });
  }

  /** A (new) model: drop the session and start one with the text in the box. */
  function restart() {
    kb.generation += 1;
    kb.sid = null;
    kb.sent = "";
    renderSuggestions([]);
    if (input.value === "") {
      const generation = kb.generation;
      kb.queue = kb.queue
        .then(() => sync("", "", generation))
        .catch((err) => showError(panel, err));
    } else {
      changed();
    }
  }

  // the on-screen keys: letters, backspace, space
  const keys = $("#keys");
  const press = (ch) => {
    input.value += ch;
    changed();
  };
  KEY_ROWS.forEach((row, i) => {
    const line = el("div", { className: "key-row" });
    for (const ch of row) {
      const key = el("button", { type: "button", textContent: ch, "aria-label": ch });
      key.addEventListener("click", () => press(ch));
      line.append(key);
    }
    if (i === KEY_ROWS.length - 1) {
      const back = el("button", { type: "button", className: "wide", textContent: "⌫", "aria-label": "Backspace" });
      back.addEventListener("click", () => {
        input.value = [...input.value].slice(0, -1).join("");
        changed();
      });
      line.append(back);
    }
    keys.append(line);
  });
  const bottom = el("div", { className: "key-row" });
  const space = el("button", { type: "button", className: "space", textContent: "space", "aria-label": "Space" });
  space.addEventListener("click", () => press(" "));
  bottom.append(space);
  keys.append(bottom);

  input.addEventListener("input", changed);
  return restart;
}

// ---------------------------------------------------------------------------------------
// 2. Generate: POST /v1/completions with stream=true, read the SSE body incrementally.

function setupGenerate(panel) {
  const start = $("#gen-start");
  const stop = $("#gen-stop");
  const output = $("#gen-output");
  const rate = $("#gen-rate");
  const temp = $("#gen-temp");
  let controller = null;

  showValue(temp, $("#gen-temp-value"));
  stop.addEventListener("click", () => controller && controller.abort());

  start.addEventListener("click", async () => {
    showError(panel, null);
    output.textContent = "";
    delete output.dataset.done;
    rate.textContent = "";
    controller = new AbortController();
    start.disabled = true;
    stop.disabled = false;
    const body = {
      model: modelOf(panel),
      prompt: $("#gen-prompt").value,
      max_tokens: numberOr($("#gen-max"), 200),
      temperature: Number(temp.value),
      stream: true,
    };
    const topK = numberOr($("#gen-topk"), null);
    const seed = numberOr($("#gen-seed"), null);
    if (topK !== null) body.top_k = topK;
    if (seed !== null) body.seed = seed;
    const began = performance.now();
    let pieces = 0;
    let finish = null;
    try {
      const response = await fetch("/v1/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw await errorOf(response);
      // each event is `data: <json>` ended by a blank line; the stream ends with `data: [DONE]`
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        const event = JSON.parse(data);
        if (event.error) throw new ApiError(0, event.error.message || "stream error");
        for (const choice of event.choices || []) {
          if (choice.text) {
            output.append(document.createTextNode(choice.text));
            pieces += 1;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    } catch (err) {
      if (err.name === "AbortError") finish = "stopped";
      else showError(panel, err);
    } finally {
      const seconds = (performance.now() - began) / 1000;
      if (pieces) {
        rate.textContent = `${pieces} tokens in ${seconds.toFixed(2)} s — ` +
          `${(pieces / Math.max(seconds, 1e-6)).toFixed(1)} tokens/s` + (finish ? ` (${finish})` : "");
      }
      output.dataset.done = "true";
      start.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });
}

/** The `data:` payloads of a server-sent-events body, as they arrive. */
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "");
        buffer = buffer.slice(nl + 1);
        if (line === "") { // a blank line ends an event
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } // comments (":") and other fields are ignored
      }
    }
    if (data.length) yield data.join("\n");
  } finally {
    reader.releaseLock();
  }
}

// ---------------------------------------------------------------------------------------
// 3. Rank: score alternatives, bars from a softmax of their log-probabilities.

function setupRank(panel) {
  const list = el("ol", { id: "rank-output", className: "ranked" });
  const { input, go } = textForm(panel, "rank",
    { label: "Alternatives, one per line", rows: 5, action: "Rank", spellcheck: false }, list);
  go.addEventListener("click", () => guarded(panel, go, async () => {
    const texts = input.value.split("\n").map((t) => t.trim()).filter(Boolean);
    if (!texts.length) throw new Error("Write at least one sentence (one per line).");
    const answer = await post("/v1/score", { model: modelOf(panel), texts });
    const scores = [...answer.scores].sort((a, b) => a.rank - b.rank);
    const top = Math.max(...scores.map((s) => s.log_prob ?? -Infinity));
    const weights = scores.map((s) => (s.log_prob == null ? 0 : Math.exp(s.log_prob - top)));
    const total = weights.reduce((a, b) => a + b, 0) || 1;
    list.replaceChildren();
    scores.forEach((s, i) => {
      const share = weights[i] / total;
      const ppl = s.perplexity == null ? "—" : Number(s.perplexity).toFixed(2);
      list.append(el("li", {},
        el("span", { className: "rank", textContent: `#${s.rank}` }),
        el("span", { textContent: s.text }),
        el("span", { className: "muted", textContent: `${(share * 100).toFixed(1)}% · ppl ${ppl}` }),
        bar(share, `relative probability ${(share * 100).toFixed(1)}%`)));
    });
  }));
}

// ---------------------------------------------------------------------------------------
// 4. Classify: label, bars per class, tokens tinted by their saliency.

function setupClassify(panel) {
  const out = el("div", { id: "cls-output" });
  const { input, go } = textForm(panel, "cls", { label: "Text", rows: 4, action: "Classify" }, out);
  go.addEventListener("click", () => guarded(panel, go, async () => {
    const text = input.value;
    const answer = await post("/v1/classify", { model: modelOf(panel), texts: [text], saliency: true });
    const p = answer.predictions[0];
    out.replaceChildren();
    out.append(el("p", { className: "label-big" }, "Label: ",
      el("strong", { textContent: p.label }), ` (${(p.probability * 100).toFixed(1)}%)`));
    const probs = el("div", { className: "probs" });
    const entries = Object.entries(p.probabilities || {}).sort((a, b) => b[1] - a[1]);
    for (const [label, prob] of entries) {
      probs.append(el("span", { textContent: label }), bar(prob, `${label} ${(prob * 100).toFixed(1)}%`),
        el("span", { className: "muted", textContent: `${(prob * 100).toFixed(1)}%` }));
    }
    out.append(probs);
    if (p.saliency && p.saliency.length) {
      const peak = Math.max(...p.saliency.map((s) => Math.abs(s.weight) || 0)) || 1;
      const line = el("p", { className: "saliency", "aria-label": "Token saliency" });
      p.saliency.forEach((s, i) => {
        const a = Math.min(1, Math.abs(s.weight) / peak) * 0.75;
        // green: pushed toward the predicted label; red: pushed away from it
        const colour = s.weight >= 0 ? `rgba(34, 160, 70, ${a})` : `rgba(215, 48, 48, ${a})`;
        if (i) line.append(" ");
        line.append(el("span", {
          textContent: s.token, title: `weight ${Number(s.weight).toFixed(3)}`,
          style: { background: colour },
        }));
      });
      out.append(el("p", { className: "muted", textContent: "Saliency (green: toward the label, red: against it):" }), line);
    }
  }));
}

// ---------------------------------------------------------------------------------------
// 5. Tag: tokens with a coloured tag under each.

function setupTag(panel) {
  const out = el("div", { id: "tag-output", className: "tagged" });
  const { input, go } = textForm(panel, "tag", { label: "Sentence", rows: 3, action: "Tag" }, out);
  go.addEventListener("click", () => guarded(panel, go, async () => {
    const answer = await post("/v1/tag", { model: modelOf(panel), texts: [input.value] });
    const s = answer.sentences[0];
    out.replaceChildren();
    s.tokens.forEach((tok, i) => {
      const tag = String(s.tags[i] ?? "");
      const h = hue(tag.replace(/^[BIES]-/, "")); // B-PER and I-PER share a colour
      out.append(el("span", {
        className: "tok", style: { background: `hsla(${h}, 70%, 55%, 0.22)`, borderColor: `hsl(${h}, 60%, 50%)` },
      }, el("span", { textContent: tok }), el("small", { textContent: tag })));
    });
  }));
}

// ---------------------------------------------------------------------------------------
// 6. Translate: the best translation and its attention as a table heatmap.

function setupTranslate(panel) {
  const out = el("p", { id: "tr-output", className: "output-line", "aria-live": "polite" });
  const heat = el("div", { id: "tr-attention", className: "heatmap-wrap" });
  const { input, go } = textForm(panel, "tr",
    { label: "Source text", rows: 3, action: "Translate" }, out, heat);
  go.addEventListener("click", () => guarded(panel, go, async () => {
    const answer = await post("/v1/translate", {
      model: modelOf(panel), texts: [input.value], beam_size: 5, attention: true,
    });
    const t = answer.translations[0];
    out.textContent = t.translation;
    heat.replaceChildren();
    if (!t.attention || !t.attention.length) return;
    const table = el("table", { className: "heatmap" });
    table.append(el("caption", { className: "muted", textContent: "Attention: rows = target tokens, columns = source tokens" }));
    const head = el("tr", {}, el("th"));
    for (const s of t.source_tokens) head.append(el("th", { scope: "col", textContent: s }));
    table.append(el("thead", {}, head));
    const body = el("tbody");
    t.attention.forEach((row, i) => {
      const tr = el("tr", {}, el("th", { scope: "row", textContent: t.tokens[i] ?? "" }));
      for (const w of row) {
        tr.append(el("td", {
          title: Number(w).toFixed(3),
          style: { background: `rgba(47, 111, 222, ${Math.max(0, Math.min(1, w))})` },
        }));
      }
      body.append(tr);
    });
    table.append(body);
    heat.append(table);
  }));
}

// ---------------------------------------------------------------------------------------
// 7. Music: ABC text, a piano roll, playback with Web Audio (a beat is a quarter note).

const BEATS_PER_MINUTE = 120;

function setupMusic(panel) {
  const go = $("#mu-go");
  const play = $("#mu-play");
  const stopBtn = $("#mu-stop");
  const temp = $("#mu-temp");
  const roll = $("#mu-roll");
  let notes = [];
  let audio = null;

  showValue(temp, $("#mu-temp-value"));

  function stopPlaying() {
    if (audio) audio.close();
    audio = null;
    stopBtn.disabled = true;
  }

  go.addEventListener("click", () => guarded(panel, go, async () => {
    stopPlaying();
    const body = { model: modelOf(panel), tunes: 1, temperature: Number(temp.value) };
    const key = $("#mu-key").value.trim();
    const meter = $("#mu-meter").value.trim();
    const seed = numberOr($("#mu-seed"), null);
    if (key) body.key = key;
    if (meter) body.meter = meter;
    if (seed !== null) body.seed = seed;
    const answer = await post("/v1/music", body);
    const tune = answer.tunes[0];
    $("#mu-abc").textContent = tune.abc;
    notes = tune.notes || [];
    play.disabled = !notes.length;
    if (!tune.notes && tune.notes_error) showError(panel, new Error(`Cannot play this tune: ${tune.notes_error}`));
    drawRoll(roll, notes);
  }));

  play.addEventListener("click", () => {
    stopPlaying();
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) { showError(panel, new Error("This browser has no Web Audio API.")); return; }
    audio = new Ctx();
    const secondsPerBeat = 60 / BEATS_PER_MINUTE;
    const t0 = audio.currentTime + 0.1;
    const master = audio.createGain();
    master.gain.value = 0.25;
    master.connect(audio.destination);
    let end = 0;
    for (const [start, duration, pitch] of notes) {
      const on = t0 + start * secondsPerBeat;
      const off = on + Math.max(0.05, duration * secondsPerBeat);
      const osc = audio.createOscillator();
      const env = audio.createGain();
      osc.type = "triangle";
      osc.frequency.value = 440 * Math.pow(2, (pitch - 69) / 12);
      // a short attack, a sustain, and a release before the note's end
      env.gain.setValueAtTime(0, on);
      env.gain.linearRampToValueAtTime(1, on + 0.01);
      env.gain.setValueAtTime(0.8, Math.max(on + 0.02, off - 0.05));
      env.gain.linearRampToValueAtTime(0, off);
      osc.connect(env).connect(master);
      osc.start(on);
      osc.stop(off + 0.02);
      end = Math.max(end, off);
    }
    stopBtn.disabled = false;
    const mine = audio;
    setTimeout(() => { if (audio === mine) stopPlaying(); }, (end - audio.currentTime + 0.3) * 1000);
  });
  stopBtn.addEventListener("click", stopPlaying);
}

function drawRoll(canvas, notes) {
  const { ctx, width, height } = fitCanvas(canvas);
  ctx.clearRect(0, 0, width, height);
  if (!notes.length) return;
  const lo = Math.min(...notes.map((n) => n[2])) - 1;
  const hi = Math.max(...notes.map((n) => n[2])) + 1;
  const last = Math.max(...notes.map((n) => n[0] + n[1]));
  const x = (beat) => 8 + (beat / last) * (width - 16);
  const rowH = (height - 16) / (hi - lo + 1);
  ctx.strokeStyle = cssVar("--line");
  for (let beat = 0; beat <= last; beat += 1) { // a faint line per beat
    ctx.beginPath();
    ctx.moveTo(x(beat), 4);
    ctx.lineTo(x(beat), height - 4);
    ctx.stroke();
  }
  ctx.fillStyle = cssVar("--accent");
  for (const [start, duration, pitch] of notes) {
    const y = 8 + (hi - pitch) * rowH;
    ctx.fillRect(x(start), y, Math.max(2, x(start + duration) - x(start) - 1), Math.max(2, rowH - 1));
  }
}

// ---------------------------------------------------------------------------------------
// 8. Caption: upload a photo as multipart/form-data.

function setupCaption(panel) {
  const go = $("#cap-go");
  const file = $("#cap-file");
  const preview = $("#cap-preview");
  const out = $("#cap-output");
  let url = null;
  file.addEventListener("change", () => {
    if (url) URL.revokeObjectURL(url);
    url = file.files[0] ? URL.createObjectURL(file.files[0]) : null;
    preview.hidden = !url;
    if (url) { preview.src = url; preview.alt = `The photo ${file.files[0].name}`; }
    out.textContent = "";
  });
  go.addEventListener("click", () => guarded(panel, go, async () => {
    if (!file.files[0]) throw new Error("Choose a photo first.");
    const form = new FormData();
    form.append("model", modelOf(panel));
    form.append("beam_size", String(numberOr($("#cap-beam"), 3)));
    form.append("file", file.files[0]);
    const answer = await post("/v1/caption", form);
    const c = answer.captions[0];
    out.textContent = c.caption;
    preview.alt = c.caption;
  }));
}

// ---------------------------------------------------------------------------------------
// 9. Forecast: history, forecast mean and the interval band on a canvas.

/** Numbers typed as one series (commas/spaces) or rows of several values (one row per line). */
function parseHistory(text) {
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  const rows = lines.map((l) => l.split(/[\s,;]+/).filter(Boolean).map(Number));
  if (rows.some((r) => r.some((v) => !Number.isFinite(v)))) throw new Error("The history holds something that is not a number.");
  const multi = rows.length > 1 && rows.every((r) => r.length === rows[0].length && r.length > 1);
  const history = multi ? rows : rows.flat().map((v) => [v]);
  if (!history.length) throw new Error("Type a few numbers first.");
  return history;
}

function setupForecast(panel) {
  const go = $("#fc-go");
  go.addEventListener("click", () => guarded(panel, go, async () => {
    const history = parseHistory($("#fc-input").value);
    const answer = await post("/v1/forecast", {
      model: modelOf(panel), history,
      horizon: numberOr($("#fc-horizon"), null),
      level: numberOr($("#fc-level"), 0.8),
    });
    drawForecast($("#fc-chart"), history, answer);
  }));
}

function drawForecast(canvas, history, answer) {
  const { ctx, width, height } = fitCanvas(canvas);
  ctx.clearRect(0, 0, width, height);
  const { mean, lower, upper } = answer;
  const T = history.length;
  const total = T + mean.length;
  const values = [history, mean, lower || [], upper || []].flat(2).filter((v) => v != null && Number.isFinite(v));
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = 24;
  const x = (t) => pad + (t / Math.max(1, total - 1)) * (width - 2 * pad);
  const y = (v) => height - pad - ((v - lo) / (hi - lo)) * (height - 2 * pad);
  // the boundary between history and forecast
  ctx.strokeStyle = cssVar("--line");
  ctx.setLineDash([4, 4]);
  ctx.beginPath(); ctx.moveTo(x(T - 0.5), pad / 2); ctx.lineTo(x(T - 0.5), height - pad / 2); ctx.stroke();
  ctx.setLineDash([]);
  const columns = history[0].length;
  for (let c = 0; c < columns; c += 1) {
    const h = columns === 1 ? 218 : hue(`series${c}`);
    if (lower && upper) { // the interval band
      ctx.fillStyle = `hsla(${h}, 70%, 55%, 0.2)`;
      ctx.beginPath();
      ctx.moveTo(x(T - 1), y(history[T - 1][c]));
      upper.forEach((row, i) => ctx.lineTo(x(T + i), y(row[c])));
      for (let i = lower.length - 1; i >= 0; i -= 1) ctx.lineTo(x(T + i), y(lower[i][c]));
      ctx.closePath();
      ctx.fill();
    }
    const line = (points, dash) => {
      ctx.strokeStyle = `hsl(${h}, 65%, 48%)`;
      ctx.lineWidth = 2;
      ctx.setLineDash(dash);
      ctx.beginPath();
      points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
      ctx.setLineDash([]);
    };
    line(history.map((row, t) => [t, row[c]]), []);
    line([[T - 1, history[T - 1][c]], ...mean.map((row, i) => [T + i, row[c]])], [6, 4]);
  }
  ctx.fillStyle = cssVar("--muted");
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(hi.toPrecision(4), 2, pad - 6);
  ctx.fillText(lo.toPrecision(4), 2, height - 6);
}

// ---------------------------------------------------------------------------------------
// Start: list the models, build the tabs that some model answers, wire each panel.

const SETUP = {
  keyboard: setupKeyboard, generate: setupGenerate, rank: setupRank, classify: setupClassify,
  tag: setupTag, translate: setupTranslate, music: setupMusic, caption: setupCaption,
  forecast: setupForecast,
};

async function main() {
  document.querySelectorAll("main section[data-tab]").forEach(framePanel);
  const status = $("#status");
  let models;
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw await errorOf(response);
    models = (await response.json()).data || [];
  } catch (err) {
    status.textContent = `Could not list the models: ${err.message}`;
    status.classList.add("error");
    return;
  }
  state.models = models;
  status.textContent = `${models.length} model${models.length === 1 ? "" : "s"}: ${models.map((m) => m.id).join(", ")}`;
  const shown = buildTabs(models);
  if (!shown.length) { $("#no-models").hidden = false; return; }
  for (const { panel, fitting } of shown) {
    const onModel = SETUP[panel.dataset.tab](panel); // may return a "model changed" callback
    setupModelSelect(panel, fitting, onModel);
    if (onModel) onModel();
  }
  const wanted = location.hash.slice(1);
  const names = shown.map((s) => s.panel.dataset.tab);
  selectTab(names.includes(wanted) ? wanted : names[0]);
  document.body.dataset.ready = "true";
}

main();
