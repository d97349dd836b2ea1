// The chat page (docs/web.md). Hand-written, no dependencies. Text from the model is only
// ever put in the page with textContent: the Markdown below builds elements, never HTML.
// Every error is shown from the server's `view` (gatehouse/web/chatwords.py): no wording here
// except for a network that fails before the server could answer.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("chat-data").textContent);
  const $ = (id) => document.getElementById(id);
  const messagesEl = $("messages"), input = $("input"), modelEl = $("model");
  const DRAFT = "gatehouse-chat-draft";
  let conversation = data.conversation;
  let running = null; // {message, controller}
  let editing = null; // a user message id
  let listBefore = null;

  // -- small DOM helpers ----------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }
  function api(path, options) {
    const o = Object.assign({ headers: {} }, options || {});
    o.headers = Object.assign({ accept: "application/json", "x-csrf-token": data.csrf }, o.headers);
    o.credentials = "same-origin";
    return fetch(path, o);
  }

  // -- Markdown, safely -------------------------------------------------------------------
  const KEYWORDS = new Set(("if else elif for while return def class function const let var import from as " +
    "try except catch finally raise throw new with yield async await in of not and or is None null true false " +
    "True False this self fn pub struct impl use match case switch break continue do end").split(" "));
  function highlight(code, text) {
    const re = /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/)|("(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`[^`]*`)|(\b\d[\d._]*\b)|([A-Za-z_]\w*)/g;
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) code.append(text.slice(last, m.index));
      const kind = m[1] ? "c" : m[2] ? "s" : m[3] ? "n" : KEYWORDS.has(m[4]) ? "k" : null;
      code.append(kind ? el("span", { class: "tok-" + kind, text: m[0] }) : m[0]);
      last = re.lastIndex;
    }
    if (last < text.length) code.append(text.slice(last));
  }
  function codeBlock(text, lang) {
    const code = el("code", lang ? { "data-lang": lang } : {});
    highlight(code, text);
    const copy = el("button", { type: "button", class: "copy", text: "Copy" });
    copy.addEventListener("click", () => copyText(text, copy));
    return el("pre", {}, copy, code);
  }
  function inline(parent, text) {
    const re = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s][^*\n]*\*|(?<!\w)_[^_\n]+_(?!\w))|(\[[^\]\n]+\]\((https?:\/\/[^)\s]+)\))/g;
    let last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      if (m[1]) parent.append(el("code", { text: m[1].slice(1, -1) }));
      else if (m[2]) parent.append(el("strong", { text: m[2].slice(2, -2) }));
      else if (m[3]) parent.append(el("em", { text: m[3].slice(1, -1) }));
      else {
        const label = m[4].slice(1, m[4].indexOf("]("));
        parent.append(el("a", { href: m[5], rel: "noopener noreferrer nofollow", target: "_blank", text: label }));
      }
      last = re.lastIndex;
    }
    if (last < text.length) parent.append(text.slice(last));
  }
  function markdown(text) {
    const out = document.createDocumentFragment();
    const lines = text.split("\n");
    let para = [], list = null;
    const flush = () => {
      if (para.length) { const p = el("p"); inline(p, para.join("\n")); out.append(p); para = []; }
      list = null;
    };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = /^\s*```\s*([\w+-]*)/.exec(line);
      if (fence) {
        flush();
        const body = [];
        for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) body.push(lines[i]);
        out.append(codeBlock(body.join("\n"), fence[1]));
        continue;
      }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
      const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
      const quote = /^>\s?(.*)$/.exec(line);
      if (!line.trim()) { flush(); continue; }
      if (heading) { flush(); const h = el("h" + Math.min(6, heading[1].length + 2)); inline(h, heading[2]); out.append(h); continue; }
      if (bullet || numbered) {
        if (para.length) { const keep = list; flush(); list = keep; }
        const tag = bullet ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== tag) { list = el(tag); out.append(list); }
        const li = el("li"); inline(li, (bullet || numbered)[1]); list.append(li);
        continue;
      }
      if (quote) { flush(); const q = el("blockquote"); inline(q, quote[1]); out.append(q); continue; }
      list = null;
      para.push(line);
    }
    flush();
    return out;
  }

  // -- clipboard and support details ------------------------------------------------------
  function copyText(text, button) {
    const done = () => { const was = button.textContent; button.textContent = "Copied"; setTimeout(() => { button.textContent = was; }, 1500); };
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, () => {});
  }
  // "17:00", or "Tue, Dec 1, 17:00" when that is not today here (a monthly budget, an hour
  // that ends after midnight): a time alone would read as today's
  function localTime(ts, withZone) {
    const d = new Date(ts * 1000), now = new Date();
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    const shown = { hour: "2-digit", minute: "2-digit" };
    let t;
    if (d.toDateString() === now.toDateString()) t = d.toLocaleTimeString([], shown);
    else {  // one call: the locale joins day and time its own way
      Object.assign(shown, { weekday: "short", month: "short", day: "numeric" });
      if (d.getFullYear() !== now.getFullYear()) shown.year = "numeric";
      t = d.toLocaleString([], shown);
    }
    return withZone && zone ? t + " (" + zone + ")" : t;
  }
  function supportDetails(view) {
    const now = new Date();
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    return ["Time: " + now.toString() + (zone ? " [" + zone + "]" : ""),
      "Request ID: " + (view.request_id || "none"),
      "Ray ID: " + (view.ray_id || "none"),
      "Error: " + (view.code || "") + " " + (view.title || ""),
      "Conversation: " + location.origin + (conversation ? "/c/" + conversation : "/"),
      "Browser: " + navigator.userAgent].join("\n");
  }

  // -- the error view ---------------------------------------------------------------------
  function renderView(view, retry) {
    const box = el("div", { class: "view" + (view.code === "at_capacity" || view.code === "challenge_required" ? " wait" : ""), role: "alert", "data-code": view.code || "" });
    box.append(el("h2", { text: view.title }));
    if (view.message) box.append(el("p", { class: "what", text: view.message }));
    let next = view.next || "";
    if (next.includes("{resets}")) next = next.replace("{resets}", view.resets_at ? localTime(view.resets_at, true) : "the end of its window");
    box.append(el("p", { class: "next", text: next }));
    const ids = el("p", { class: "ids" });
    if (view.request_id) ids.append("Request ID ", el("code", { class: "rid", text: view.request_id }));
    if (view.ray_id) ids.append(" · Ray ID ", el("code", { class: "ray", text: view.ray_id }));
    box.append(ids);
    if (view.action === "retry" && retry) box.append(el("button", { type: "button", class: "retry", text: "Retry", onclick: retry }));
    if (view.action === "sign_in") box.append(el("a", { class: "button sign-in", href: "/login?reason=session_expired&next=" + encodeURIComponent(location.pathname), text: "Sign in again" }));
    if (view.action === "new_chat") box.append(el("button", { type: "button", class: "new-chat", text: "Start a new conversation", onclick: newChat }));
    if (view.action === "reload") box.append(el("button", { type: "button", class: "reload", text: "Reload", onclick: () => location.reload() }));
    if (view.status_link) box.append(el("a", { href: "/status", class: "status-link", text: "Service status" }));
    const copy = el("button", { type: "button", class: "support", text: "Copy support details" });
    copy.addEventListener("click", () => copyText(supportDetails(view), copy));
    box.append(copy);
    return box;
  }
  function offline(err) {
    return { title: "No connection to the service", message: String(err && err.message || err || ""),
      next: "Check your network; your message is kept. Then retry.", action: "retry", code: "network" };
  }

  // -- messages ---------------------------------------------------------------------------
  const MARKS = { stopped: "Stopped — the answer is partial.", incomplete: "Incomplete — the answer broke off." };
  function messageEl(m) {
    const node = el("div", { class: "msg " + m.role, "data-id": m.id || "", "data-status": m.status || "done" });
    node._m = m;
    fill(node);
    return node;
  }
  function fill(node) {
    const m = node._m;
    node.replaceChildren();
    node.dataset.status = m.status;
    if (m.role === "user") node.append(el("div", { class: "text", text: m.content }));
    else node.append(el("div", { class: "text" }, markdown(m.content)));
    const meta = el("div", { class: "meta" });
    if (m.role === "assistant") {
      if (MARKS[m.status]) meta.append(el("span", { class: "mark", text: MARKS[m.status] }));
      if (m.request_id) meta.append(el("span", { class: "rid", text: m.request_id }));
      if (m.status !== "streaming" && isLast(node)) meta.append(el("button", { type: "button", class: "regenerate", text: m.status === "done" ? "Regenerate" : "Retry", onclick: regenerate }));
    } else if (m.id && !running) {
      meta.append(el("button", { type: "button", class: "edit", text: "Edit", onclick: () => startEdit(m) }));
    }
    node.append(meta);
    if (m.view && m.status !== "done") node.append(renderView(m.view, regenerate));
  }
  function isLast(node) { return !node.nextElementSibling || node.nextElementSibling === null; }
  function refreshMeta() { for (const n of messagesEl.children) if (n._m) fill(n); }
  let pending = null;
  function repaint(node) {
    if (pending) return;
    pending = requestAnimationFrame(() => { pending = null; fill(node); scrollDown(); });
  }
  function scrollDown() { messagesEl.scrollTop = messagesEl.scrollHeight; }
  function setRunning(r) {
    running = r;
    $("stop").hidden = !r; $("send").disabled = !!r;
  }

  // -- server-sent events from a fetch body -----------------------------------------------
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const raw = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        let name = "message", payload = "";
        for (const line of raw.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) payload += line.slice(6);
        }
        if (payload) onEvent(name, JSON.parse(payload));
      }
    }
  }
  function onAnswerEvent(node) {
    return (name, ev) => {
      const m = node._m;
      if (name === "delta") { m.content += ev.text; repaint(node); }
      else if (name === "end") { m.status = ev.status; m.view = ev.view; m.ended = true; fill(node); refreshMeta(); }
    };
  }
  async function follow(node) {
    // resume an answer still being made (after a reload or a broken connection)
    const m = node._m;
    const controller = new AbortController();
    setRunning({ message: m, controller });
    try {
      const r = await api("/chat/messages/" + m.id + "/events?from=" + m.content.length, { signal: controller.signal });
      if (r.ok) await readEvents(r, onAnswerEvent(node));
    } catch (e) { /* aborted or offline: what we have is shown */ }
    setRunning(null);
    refreshMeta();
  }

  // -- sending ----------------------------------------------------------------------------
  async function send(body, userText) {
    $("problem") && $("problem").remove();
    const controller = new AbortController();
    let userNode = null;
    if (userText !== null) {
      userNode = messageEl({ role: "user", content: userText, status: "done" });
      messagesEl.append(userNode);
    }
    const answer = messageEl({ role: "assistant", content: "", status: "streaming" });
    messagesEl.append(answer);
    scrollDown();
    setRunning({ message: answer._m, controller });
    let response;
    try {
      response = await api("/chat/send", { method: "POST", signal: controller.signal,
        headers: { "content-type": "application/json", accept: "text/event-stream, application/json" },
        body: JSON.stringify(Object.assign({ conversation: conversation, model: modelEl.value }, body)) });
    } catch (e) {
      answer.remove();
      return failed(offline(e), body, userNode, userText);
    }
    if (!response.ok) {
      answer.remove();
      if (response.headers.get("gatehouse-mitigated") === "challenge") {
        keepDraft(userText); location.reload(); return;
      }
      let parsed = {};
      try { parsed = await response.json(); } catch (e) { /* not JSON */ }
      const view = parsed.view || offline("HTTP " + response.status);
      if (view.code === "session_expired") keepDraft(userText);
      return failed(view, body, userNode, userText);
    }
    input.value = ""; clearDraft(); stopEditing();
    try {
      await readEvents(response, (name, ev) => {
        if (name === "meta") {
          answer._m.id = ev.message; answer._m.request_id = ev.request_id;
          answer.dataset.id = ev.message;
          if (userNode) { userNode._m.id = ev.user_message; userNode.dataset.id = ev.user_message || ""; }
          if (conversation !== ev.conversation) {
            conversation = ev.conversation;
            history.replaceState(null, "", "/c/" + conversation);
            $("title").textContent = ev.title;
            loadList();
          }
        } else onAnswerEvent(answer)(name, ev);
      });
    } catch (e) {
      if (!answer._m.ended && answer._m.id && !(running && running.stopping)) {
        // the connection broke, not the answer: it is still being made (or saved); pick it up
        setRunning(null);
        return follow(answer);
      }
    }
    if (!answer._m.ended && !(running && running.stopping)) {
      answer._m.status = "incomplete";
    }
    setRunning(null);
    refreshMeta();
  }
  function failed(view, body, userNode, userText) {
    setRunning(null);
    if (userNode) userNode.remove();
    if (userText !== null && !input.value) input.value = userText; // the message is kept
    const box = renderView(view, () => { const b = input.value; input.value = ""; send(body.regenerate ? body : Object.assign({}, body, { content: b }), body.regenerate ? null : b); });
    box.id = "problem";
    messagesEl.append(box);
    scrollDown();
    refreshMeta();
  }
  function regenerate() {
    if (running || !conversation) return;
    const last = messagesEl.lastElementChild;
    if (last && last._m && last._m.role === "assistant") last.remove();
    const p = $("problem"); if (p) p.remove();
    send({ regenerate: true }, null);
  }
  function startEdit(m) {
    editing = m.id; input.value = m.content; input.focus();
    $("editing").hidden = false;
  }
  function stopEditing() { editing = null; $("editing").hidden = true; }
  function keepDraft(text) { if (text) sessionStorage.setItem(DRAFT, JSON.stringify({ path: location.pathname, text })); }
  function clearDraft() { sessionStorage.removeItem(DRAFT); }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || running) return;
    if (editing) {
      const id = editing;
      let node = messagesEl.querySelector('.msg[data-id="' + CSS.escape(id) + '"]');
      while (node) { const next = node.nextElementSibling; node.remove(); node = next; }
      send({ edit: id, content: text }, text);
    } else send({ content: text }, text);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  input.addEventListener("input", () => { if (input.value) keepDraft(input.value); });
  $("cancel-edit").addEventListener("click", () => { stopEditing(); input.value = ""; });
  $("stop").addEventListener("click", async () => {
    if (!running) return;
    const r = running; r.stopping = true;
    if (r.message.id) {
      try { await api("/chat/messages/" + r.message.id + "/stop", { method: "POST" }); } catch (e) { /* shown below */ }
    }
    // the server's end event marks it stopped; if it does not come, mark it here
    setTimeout(() => { if (!r.message.ended) { r.controller.abort(); r.message.status = "stopped"; refreshMeta(); } }, 3000);
  });

  // -- conversations ----------------------------------------------------------------------
  function newChat() {
    if (running) return;
    conversation = null; history.pushState(null, "", "/");
    messagesEl.replaceChildren(); $("title").textContent = "New chat"; input.focus(); loadList();
  }
  $("new-chat").addEventListener("click", newChat);
  $("toggle-list").addEventListener("click", () => {
    const open = $("sidebar").classList.toggle("open");
    $("toggle-list").setAttribute("aria-expanded", String(open));
  });
  async function loadList(more) {
    const q = new URLSearchParams({ find: $("find").value });
    if (more && listBefore) q.set("before", String(listBefore));
    const r = await api("/chat/conversations?" + q);
    if (!r.ok) return;
    const page = await r.json();
    const ul = $("conversations");
    if (!more) ul.replaceChildren();
    for (const c of page.data) {
      const a = el("a", { href: "/c/" + c.id, text: c.title, title: c.title });
      if (c.id === conversation) a.setAttribute("aria-current", "page");
      a.addEventListener("click", (e) => { e.preventDefault(); open(c.id, true); });
      const rename = el("button", { type: "button", class: "rename", text: "Rename", "aria-label": "Rename " + c.title });
      rename.addEventListener("click", async () => {
        const title = prompt("New name for this conversation", c.title);
        if (!title) return;
        await api("/chat/conversations/" + c.id, { method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify({ title }) });
        if (c.id === conversation) $("title").textContent = title;
        loadList();
      });
      const del = el("button", { type: "button", class: "delete", text: "Delete", "aria-label": "Delete " + c.title });
      del.addEventListener("click", async () => {
        if (!confirm("Delete “" + c.title + "”? This cannot be undone.")) return;
        await api("/chat/conversations/" + c.id, { method: "DELETE" });
        if (c.id === conversation) newChat(); else loadList();
      });
      ul.append(el("li", { "data-id": c.id }, a, rename, del));
    }
    listBefore = page.next;
    $("more").hidden = !page.next;
  }
  $("more").addEventListener("click", () => loadList(true));
  let findTimer = null;
  $("find").addEventListener("input", () => { clearTimeout(findTimer); findTimer = setTimeout(() => loadList(), 250); });

  async function open(id, push) {
    if (running) return;
    const r = await api("/chat/conversations/" + encodeURIComponent(id));
    if (!r.ok) {
      let parsed = {}; try { parsed = await r.json(); } catch (e) { /* */ }
      messagesEl.replaceChildren(renderView(parsed.view || offline("HTTP " + r.status), null));
      return;
    }
    const c = await r.json();
    conversation = c.id;
    if (push) history.pushState(null, "", "/c/" + c.id);
    $("title").textContent = c.title;
    if ([...modelEl.options].some((o) => o.value === c.model)) modelEl.value = c.model;
    messagesEl.replaceChildren(...c.messages.map(messageEl));
    refreshMeta();
    scrollDown();
    for (const a of $("conversations").querySelectorAll("a")) {
      if (a.getAttribute("href") === "/c/" + c.id) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const live = [...messagesEl.children].find((n) => n._m && n._m.status === "streaming");
    if (live) follow(live);
  }
  window.addEventListener("popstate", () => {
    const m = /^\/c\/([\w-]+)$/.exec(location.pathname);
    if (m) open(m[1], false); else newChat();
  });

  // -- start ------------------------------------------------------------------------------
  const saved = sessionStorage.getItem(DRAFT);
  if (saved) {
    try {
      const d = JSON.parse(saved);
      if (d.path === location.pathname && !input.value) input.value = d.text;
    } catch (e) { clearDraft(); }
  }
  loadList();
  if (conversation) open(conversation, false);
  input.focus();
})();
