/* Connected inboxes list: while an inbox is queued or syncing, poll the status JSON every 2 s and
   update its row (progress bar, counts, status, errors, times) in place. Text only, never innerHTML. */
(function () {
  "use strict";

  var table = document.getElementById("inbox-table");
  var labelsNode = document.getElementById("inbox-status-labels");
  if (!table || !labelsNode || !window.fetch) return;

  var url = table.getAttribute("data-status-url");
  var labels = JSON.parse(labelsNode.textContent);
  var ACTIVE = ["new", "queued", "syncing"];
  var EVERY_MS = 2000;
  var AFTER_FAILURE_MS = 10000;
  var timer = null;

  function rows() { return table.querySelectorAll("tr[data-inbox-id]"); }

  function anyActive() {
    return Array.prototype.some.call(rows(), function (row) {
      return ACTIVE.indexOf(row.getAttribute("data-status")) !== -1;
    });
  }

  function number(n) { return Number(n || 0).toLocaleString("en-US"); }

  // Same words as views.relative_time on the server.
  function relative(iso) {
    if (!iso) return "";
    var seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
    var past = seconds >= 0;
    seconds = Math.abs(seconds);
    var amount;
    if (seconds < 45) return past ? "just now" : "in a moment";
    if (seconds < 3600) amount = Math.max(1, Math.round(seconds / 60)) + " min";
    else if (seconds < 86400) amount = Math.round(seconds / 3600) + " h";
    else {
      var days = Math.round(seconds / 86400);
      amount = days + " day" + (days === 1 ? "" : "s");
    }
    return past ? amount + " ago" : "in " + amount;
  }

  function absolute(iso) {
    if (!iso) return "";
    if (window.crmLocalTime) return window.crmLocalTime(iso);  // the reader's time zone (host's local-time.js)
    var d = new Date(iso);
    function pad(n) { return (n < 10 ? "0" : "") + n; }
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }

  function part(row, role) { return row.querySelector("[data-role=" + role + "]"); }

  function setText(el, text) { if (el && el.textContent !== text) el.textContent = text; }

  function show(el, visible) { if (el) el.hidden = !visible; }

  function setTime(el, iso, text) {
    if (!el) return;
    el.setAttribute("datetime", iso || "");
    el.title = absolute(iso);
    setText(el, text);
  }

  function nextSyncText(s) {
    if (s.status === "disabled") return "Not scheduled";
    if (s.status === "needs_attention") return "Paused until fixed";
    if (ACTIVE.indexOf(s.status) !== -1 && s.status !== "new") return "Now";
    if (s.next_sync_at) return relative(s.next_sync_at);
    return "Not scheduled";
  }

  // "Live: new mail arrives within seconds; last change 2 min ago", as list.html renders it.
  function updateWatch(row, w) {
    var box = part(row, "watch");
    if (!box) return;
    show(box, !!w);
    box.className = "hint watch watch-" + (w ? w.mode : "none");
    box.textContent = "";
    if (!w) return;
    var strong = document.createElement("strong");
    strong.textContent = w.label;
    box.appendChild(strong);
    box.appendChild(document.createTextNode(": " + w.detail));
    if (w.last_event) {
      box.appendChild(document.createTextNode("; last change "));
      var time = document.createElement("time");
      setTime(time, w.last_event, relative(w.last_event));
      box.appendChild(time);
    }
  }

  function update(row, s) {
    var hasProblem = s.status === "needs_attention" || s.status === "error";
    row.setAttribute("data-status", s.status);
    row.className = row.className.replace(/\bstate-\S+/, "state-" + s.status);

    var label = part(row, "label");
    setText(label, labels[s.status] || s.status);
    label.className = "status status-" + s.status;

    var progressBox = part(row, "progress");
    show(progressBox, s.status === "syncing");
    var bar = progressBox.querySelector("progress");
    if (s.progress_total > 0) {
      bar.max = s.progress_total;
      bar.value = Math.min(s.progress_done, s.progress_total);
      setText(part(row, "progress-text"), number(s.progress_done) + " / " + number(s.progress_total) + " e-mails");
    } else {
      bar.removeAttribute("value");  // indeterminate until the server has counted
      setText(part(row, "progress-text"), "Counting e-mails\u2026");
    }
    setText(bar, number(s.progress_done) + " / " + number(s.progress_total));

    setText(part(row, "error"), s.error || "");
    show(part(row, "error"), hasProblem && !!s.error);
    setText(part(row, "hint"), s.error_hint || "");
    show(part(row, "hint"), hasProblem && !!s.error_hint);
    show(part(row, "retry"), s.status === "error");
    setText(part(row, "retry-when"), s.next_sync_at ? relative(s.next_sync_at) : "soon");
    show(part(row, "fix"), s.status === "needs_attention");

    setTime(part(row, "last-synced"), s.last_synced_at, s.last_synced_at ? relative(s.last_synced_at) : "Never");
    setTime(part(row, "next-sync"), s.next_sync_at, nextSyncText(s));
    setText(part(row, "message-count"), number(s.message_count));
    updateWatch(row, s.watch);
  }

  function schedule(delay) {
    timer = null;
    if (anyActive()) timer = window.setTimeout(poll, delay);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok || response.redirected) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (statuses) {
        statuses.forEach(function (s) {
          var row = document.getElementById("inbox-" + s.id);
          if (row) update(row, s);
        });
        schedule(EVERY_MS);
      })
      .catch(function () { schedule(AFTER_FAILURE_MS); });
  }

  schedule(EVERY_MS);
})();
