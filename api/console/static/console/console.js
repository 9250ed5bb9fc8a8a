// The console's only script: the Now page's live list, confirm on destructive forms,
// and transcript lines that seek the player. No framework, no build step.
(function () {
  "use strict";

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : text;
    return td;
  }

  // ISO 8601 times become short local ones; the exact value stays in `datetime`.
  var ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;
  function localTime(el) {
    var text = el.getAttribute("datetime") || el.textContent.trim();
    if (!ISO.test(text)) return;
    var when = new Date(text);
    if (isNaN(when)) return;
    el.setAttribute("datetime", text);
    el.title = text;
    var today = new Date().toDateString() === when.toDateString();
    el.textContent = today ? when.toLocaleTimeString() : when.toLocaleString();
  }

  function timeCell(iso) {
    var td = document.createElement("td");
    var el = document.createElement("time");
    el.textContent = iso || "";
    localTime(el);
    td.appendChild(el);
    return td;
  }

  function activeRow(call, base) {
    var tr = document.createElement("tr");
    tr.dataset.callId = call.callId;
    var status = cell("");
    var badge = document.createElement("span");
    badge.className = "st st-" + call.status;
    badge.textContent = call.status;
    status.appendChild(badge);
    tr.appendChild(status);
    var who = cell("");
    var link = document.createElement("a");
    link.href = base + encodeURIComponent(call.callId);
    link.textContent = call.callerId + " \u2192 " + call.receiverId;
    who.appendChild(link);
    tr.appendChild(who);
    tr.appendChild(cell(call.groupId));
    tr.appendChild(timeCell(call.answeredAt || call.createdAt));
    tr.appendChild(cell((call.inChannel || []).join(", ")));
    return tr;
  }

  function renderNow(table, state) {
    var body = table.tBodies[0];
    var base = table.dataset.callUrl;
    while (body.firstChild) body.removeChild(body.firstChild);
    if (!state.active.length) {
      var empty = document.createElement("tr");
      empty.className = "empty";
      var td = cell("No call is ringing or in progress.");
      td.colSpan = 5;
      empty.appendChild(td);
      body.appendChild(empty);
    }
    state.active.forEach(function (call) { body.appendChild(activeRow(call, base)); });
    var set = function (id, value) { var el = document.getElementById(id); if (el) el.textContent = value; };
    set("active-count", state.active.length);
    var updated = document.getElementById("updated");
    if (updated) { updated.removeAttribute("datetime"); updated.textContent = state.at; localTime(updated); }
    set("today-total", state.today.total);
    Object.keys(state.today.byStatus).forEach(function (status) {
      var dd = document.querySelector('#today-status dd[data-key="' + status + '"]');
      if (dd) dd.textContent = state.today.byStatus[status];
    });
  }

  function pollNow(table) {
    var url = table.dataset.poll;
    var busy = false;
    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error("signed out"); }
          return r.json();
        })
        .then(function (state) { renderNow(table, state); table.dataset.polled = String((+table.dataset.polled || 0) + 1); })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    setInterval(tick, 3000);
  }

  function seekable(article) {
    var audio = article.querySelector("audio");
    if (!audio) return;
    var lines = Array.prototype.slice.call(article.querySelectorAll(".seg"));
    article.addEventListener("click", function (event) {
      var target = event.target.closest("[data-start]");
      if (!target || !article.contains(target)) return;
      audio.currentTime = parseFloat(target.dataset.start) || 0;
      var playing = audio.play();
      if (playing && playing.catch) playing.catch(function () {});
    });
    audio.addEventListener("timeupdate", function () {
      var t = audio.currentTime, current = null;
      lines.forEach(function (line) { if (parseFloat(line.dataset.start) <= t) current = line; });
      lines.forEach(function (line) { line.classList.toggle("now", line === current); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("time").forEach(localTime);
    var table = document.getElementById("active");
    if (table && table.dataset.poll) pollNow(table);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
    document.querySelectorAll("article.recording").forEach(seekable);
  });
})();
