// raftdb's status page. Polls GET /v1/cluster/status every second (2 s timeout)
// and renders the cluster as the node serving this page sees it; the key browser
// lists keys and reads values through the same node. Every value shown is set
// with textContent: nothing from an answer is ever parsed as HTML.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 2000;
  const KV_TIMEOUT_MS = 10000;
  const RATE_WINDOW_S = 5;
  const SHOWN_BYTES = 65536;
  const TOKEN_KEY = "raftdb.token";
  const NONE = "–";

  const $ = (id) => document.getElementById(id);
  const samples = []; // {at, writes, reads, commit}, oldest first
  const memberRows = new Map(); // member id → its <tr>
  let shownChanges = null; // the leader changes on the page, as JSON
  let downSince = null;

  // -- requests ---------------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  // GET path (relative to the page), with the token; resolves to the whole answer.
  async function get(path, timeoutMs) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    const token = storedToken();
    try {
      const response = await fetch(path, {
        headers: token ? { Authorization: "Bearer " + token } : {},
        signal: controller.signal,
        cache: "no-store",
      });
      const body = new Uint8Array(await response.arrayBuffer());
      return { status: response.status, ok: response.ok, headers: response.headers, body };
    } finally {
      clearTimeout(timer);
    }
  }

  function parseJson(bytes) {
    try {
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (e) {
      return null;
    }
  }

  // The API's own words for an error answer ({"error", "message"}).
  function messageOf(answer) {
    const body = parseJson(answer.body);
    return body && typeof body.message === "string" ? body.message : "HTTP " + answer.status;
  }

  // -- small helpers ----------------------------------------------------------

  function hms(date) {
    const two = (n) => String(n).padStart(2, "0");
    return two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds());
  }

  // Seconds since a contact, as people read them: "40 ms", "3.2 s", "5 min".
  function ago(seconds) {
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 120) return seconds.toFixed(1) + " s";
    return Math.round(seconds / 60) + " min";
  }

  function show(el, value) {
    el.textContent = value === null || value === undefined ? NONE : String(value);
  }

  function element(tag, text, className) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    if (className) el.className = className;
    return el;
  }

  // -- state and banner -------------------------------------------------------

  const STATE_TEXT = {
    ok: "live",
    down: "not answering",
    "no-leader": "no leader",
    unauthorized: "needs a token",
  };

  function setState(state, banner) {
    const el = $("node-state");
    el.dataset.state = state;
    el.textContent = STATE_TEXT[state];
    const bar = $("banner");
    bar.dataset.state = state;
    bar.textContent = banner || "";
    bar.hidden = !banner;
    document.body.classList.toggle("stale", state === "down" || state === "unauthorized");
  }

  function down(what) {
    if (downSince === null) downSince = new Date();
    setState(
      "down",
      "the node at " + location.origin + " " + what + " (since " + hms(downSince) + "); retrying",
    );
  }

  function unauthorized(answer) {
    downSince = null;
    const why =
      answer.status === 401
        ? "this view needs a token with role read: enter one under Keys"
        : "this view needs a token with role read; the node says: " + messageOf(answer);
    setState("unauthorized", why);
  }

  // -- rendering --------------------------------------------------------------

  function render(st) {
    downSince = null;
    show($("cluster-id"), st.cluster_id === null ? "none" : st.cluster_id);
    show($("node-id"), st.id);
    const role = $("node-role");
    role.textContent = st.role;
    role.dataset.role = st.role;
    const leader = $("leader");
    leader.textContent = st.leader === null ? "none" : String(st.leader);
    leader.dataset.leader = st.leader === null ? "" : String(st.leader);
    show($("term"), st.term);
    show($("commit-index"), st.commit_index);
    show($("applied-index"), st.applied_index);
    show($("log-range"), st.first_index + "–" + st.last_index);
    show($("total-writes"), st.counters.writes);
    show($("total-reads-linearizable"), st.counters.reads_linearizable);
    show($("total-reads-stale"), st.counters.reads_stale);
    renderMembers(st);
    renderRates(st);
    renderChanges(st.leader_changes);
    const updated = $("updated");
    updated.textContent = "updated " + hms(new Date(st.at * 1000));
    updated.dataset.at = String(st.at);
    if (st.leader === null) {
      setState("no-leader", "no leader: writes and linearizable reads wait until one is elected");
    } else {
      setState("ok", "");
    }
  }

  function renderMembers(st) {
    const note =
      st.view === "leader"
        ? "Node " + st.id + " leads: every row carries its progress of that member."
        : "Node " + st.id + " is a " + st.role + ": only the leader tracks the other " +
          "members' logs, so " + NONE + " marks what only the leader knows. " +
          "The leader's own page shows every row.";
    $("view-note").textContent = note;
    const rows = st.members.map((m) => {
      const tr = memberRow(m.id);
      tr.dataset.role = m.role;
      tr.dataset.self = String(m.self);
      tr.dataset.reachable = m.reachable === null ? "unknown" : String(m.reachable);
      const cells = [
        [String(m.id), "num"],
        [m.peer_url, "url"],
        [m.role, "role"],
        [m.match_index, "num"],
        [m.lag, "num"],
        [m.reachable === null ? null : m.reachable ? "yes" : "no", "reach"],
        [m.last_contact_s === null ? null : ago(m.last_contact_s), "num"],
      ];
      cells.forEach(([value, className], i) => {
        const td = tr.children[i];
        const text = value === null ? NONE : String(value);
        if (td.textContent !== text) td.textContent = text;
        td.className = value === null ? className + " unknown" : className;
        td.title = value !== null ? "" : m.self ? "not applicable" : "known only to the leader";
      });
      tr.children[2].dataset.role = m.role;
      return tr;
    });
    const ids = new Set(st.members.map((m) => m.id));
    for (const id of memberRows.keys()) if (!ids.has(id)) memberRows.delete(id);
    const body = $("members").tBodies[0];
    const same = body.children.length === rows.length && rows.every((tr, i) => body.children[i] === tr);
    if (!same) body.replaceChildren(...rows);
  }

  // The row of member ``id``: the same element from one poll to the next (only its
  // text and attributes change), so that a selection or a test's reference holds.
  function memberRow(id) {
    let tr = memberRows.get(id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.memberId = String(id);
      for (let i = 0; i < 7; i++) tr.appendChild(document.createElement("td"));
      memberRows.set(id, tr);
    }
    return tr;
  }

  function rate(delta, seconds) {
    if (!(seconds > 0) || delta < 0) return NONE;
    const value = delta / seconds;
    return value >= 100 ? String(Math.round(value)) : value.toFixed(1);
  }

  function renderRates(st) {
    const c = st.counters;
    const now = {
      at: st.at,
      writes: c.writes,
      reads: c.reads_linearizable + c.reads_stale,
      commit: st.commit_index,
    };
    const last = samples[samples.length - 1];
    if (last && (now.at <= last.at || now.writes < last.writes || now.reads < last.reads)) {
      samples.length = 0; // the node restarted (or the clock stepped back): start again
    }
    samples.push(now);
    while (samples.length > 2 && now.at - samples[1].at >= RATE_WINDOW_S) samples.shift();
    const first = samples[0];
    const seconds = now.at - first.at;
    for (const name of ["writes", "reads"]) {
      const el = document.querySelector('#rates [data-rate="' + name + '"]');
      el.textContent = samples.length < 2 ? NONE : rate(now[name] - first[name], seconds);
    }
    const commits = document.querySelector('#rates [data-rate="commits"]');
    commits.textContent = samples.length < 2 ? NONE : rate(now.commit - first.commit, seconds);
  }

  function renderChanges(changes) {
    const seen = JSON.stringify(changes);
    if (seen === shownChanges) return; // unchanged: keep the elements
    shownChanges = seen;
    const items = changes
      .slice()
      .reverse()
      .map((change) => {
        const li = document.createElement("li");
        li.dataset.term = String(change.term);
        li.dataset.leader = change.leader === null ? "" : String(change.leader);
        li.appendChild(element("time", hms(new Date(change.at * 1000))));
        li.appendChild(element("span", "term " + change.term, "term"));
        li.appendChild(
          change.leader === null
            ? element("span", "no leader", "who none")
            : element("span", "leader " + change.leader, "who"),
        );
        return li;
      });
    if (items.length === 0) items.push(element("li", "none seen yet", "empty"));
    $("leader-changes").replaceChildren(...items);
  }

  // -- the poll loop ----------------------------------------------------------

  async function poll() {
    const started = Date.now();
    try {
      const answer = await get("v1/cluster/status", TIMEOUT_MS);
      if (answer.status === 401 || answer.status === 403) {
        unauthorized(answer);
      } else if (!answer.ok) {
        down("answers " + answer.status + " (" + messageOf(answer) + ")");
      } else {
        const st = parseJson(answer.body);
        if (st && Array.isArray(st.members)) render(st);
        else down("answers something that is not its status");
      }
    } catch (e) {
      down("does not answer");
    }
    setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }

  // -- keys ---------------------------------------------------------------------

  function utf8(text) {
    return new TextEncoder().encode(text);
  }

  function fromBase64(text) {
    return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  }

  // A key as one path segment: every byte but the unreserved ones percent-encoded.
  function keyPath(bytes) {
    let out = "";
    for (const b of bytes) {
      const ch = String.fromCharCode(b);
      out += /[A-Za-z0-9_~-]/.test(ch) ? ch : "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }
    return out;
  }

  function hex(bytes) {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const row = Array.from(bytes.subarray(i, i + 16), (b) => b.toString(16).padStart(2, "0"));
      lines.push(row.join(" "));
    }
    return lines.join("\n");
  }

  function kvError(message) {
    $("kv-error").textContent = message;
  }

  async function listKeys() {
    kvError("");
    $("kv-value").textContent = "";
    const prefix = $("kv-prefix").value;
    let answer;
    try {
      answer = await get("v1/kv?prefix=" + encodeURIComponent(prefix) + "&limit=100", KV_TIMEOUT_MS);
    } catch (e) {
      kvError("the node did not answer the listing");
      return;
    }
    if (!answer.ok) {
      $("kv-keys").replaceChildren();
      $("kv-count").textContent = "";
      kvError(messageOf(answer));
      return;
    }
    const entries = parseJson(answer.body);
    if (!Array.isArray(entries)) {
      kvError("the listing is not a JSON list");
      return;
    }
    const items = entries.map((entry) => {
      const binary = entry.key_encoding === "base64";
      const bytes = binary ? fromBase64(entry.key) : utf8(entry.key);
      const li = element("li", binary ? "0x" + hex(bytes).replace(/\s/g, "") : entry.key);
      li.dataset.key = entry.key;
      if (binary) li.dataset.keyEncoding = "base64";
      li.tabIndex = 0;
      li.title = "mod index " + entry.mod_index;
      li.addEventListener("click", () => showValue(li, bytes));
      li.addEventListener("keydown", (event) => {
        if (event.key === "Enter") showValue(li, bytes);
      });
      return li;
    });
    $("kv-keys").replaceChildren(...items);
    const more = answer.headers.get("link") ? " (more follow: narrow the prefix)" : "";
    $("kv-count").textContent = entries.length + (entries.length === 1 ? " key" : " keys") + more;
  }

  async function showValue(li, keyBytes) {
    for (const other of $("kv-keys").children) other.classList.toggle("selected", other === li);
    kvError("");
    const pre = $("kv-value");
    pre.textContent = "";
    let answer;
    try {
      answer = await get("v1/kv/" + keyPath(keyBytes), KV_TIMEOUT_MS);
    } catch (e) {
      kvError("the node did not answer the read");
      return;
    }
    if (!answer.ok) {
      $("kv-meta").textContent = "";
      kvError(messageOf(answer));
      return;
    }
    const value = answer.body;
    const shown = value.subarray(0, SHOWN_BYTES);
    let text = null;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(value);
    } catch (e) {
      text = null;
    }
    const etag = answer.headers.get("etag") || "";
    const size = value.length === 1 ? "1 byte" : value.length + " bytes";
    const meta = [li.textContent, size, text === null ? "hex" : "text"];
    if (etag) meta.push("mod index " + etag.replace(/"/g, ""));
    if (value.length > SHOWN_BYTES) meta.push("first " + SHOWN_BYTES + " bytes shown");
    $("kv-meta").textContent = meta.join(" · ");
    pre.textContent = text === null ? hex(shown) : text.slice(0, SHOWN_BYTES);
  }

  // -- start --------------------------------------------------------------------

  function saveToken() {
    const value = $("token").value.trim();
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      $("token-note").textContent = value ? "token in use (this tab only)" : "no token";
    } catch (e) {
      $("token-note").textContent = "this browser keeps no session storage";
    }
  }

  function start() {
    $("token").value = storedToken();
    $("token-note").textContent = storedToken() ? "token in use (this tab only)" : "";
    $("token-save").addEventListener("click", saveToken);
    $("token").addEventListener("keydown", (event) => {
      if (event.key === "Enter") saveToken();
    });
    $("kv-list").addEventListener("click", listKeys);
    $("kv-prefix").addEventListener("keydown", (event) => {
      if (event.key === "Enter") listKeys();
    });
    renderChanges([]);
    poll();
  }

  start();
})();
