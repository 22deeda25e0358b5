// Small helpers for the pages of the three servers; every page still works without them.
(function () {
  // The menu is one line that scrolls sideways on a phone (style.css): the current page's entry is
  // scrolled into view, and the right edge fades while more entries are hidden there.
  var menu = document.querySelector("header.topbar nav");
  if (menu) {
    var current = menu.querySelector("a.active");
    if (current && menu.scrollWidth > menu.clientWidth) {
      menu.scrollLeft = current.offsetLeft - menu.offsetLeft - (menu.clientWidth - current.offsetWidth) / 2;
    }
    var edges = function () {
      menu.classList.toggle("scrolls", menu.scrollWidth > menu.clientWidth + 1);
      menu.classList.toggle("at-end", menu.scrollLeft + menu.clientWidth >= menu.scrollWidth - 1);
    };
    edges();
    menu.addEventListener("scroll", edges, { passive: true });
    window.addEventListener("resize", edges);
  }

  // Progress polling for long work: an element with data-poll="<json url>" is refreshed
  // twice a second; when the job is done the page moves on to data-next. Each answer
  // {"state", "done", "total", "error", ...} is shown in the element: [data-field=<key>]
  // gets the value (hidden while empty when it has data-hide-empty), ".progress > span"
  // the bar's width, and [data-when=<state>] shows only in that state.
  function showProgress(el, s) {
    el.querySelectorAll("[data-field]").forEach(function (f) {
      var v = s[f.getAttribute("data-field")];
      f.textContent = v == null ? "" : v;
      if (f.hasAttribute("data-hide-empty")) { f.hidden = !v; }
    });
    var bar = el.querySelector(".progress > span");
    if (bar) { bar.style.width = (s.total ? 100 * s.done / s.total : 0) + "%"; }
    el.querySelectorAll("[data-when]").forEach(function (w) { w.hidden = w.getAttribute("data-when") !== s.state; });
  }
  document.querySelectorAll("[data-poll]").forEach(function (el) {
    var url = el.getAttribute("data-poll");
    function tick() {
      fetch(url, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          showProgress(el, s);
          if (s.state === "done" && el.dataset.next) {
            // let the full bar show for a moment before moving on
            setTimeout(function () { window.location = el.dataset.next; }, 300);
            return;
          }
          if (s.state !== "failed" && s.state !== "done") { setTimeout(tick, 500); }
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  });

  // Progress of several items on one page (the videos of an analysis): [data-poll-items=<json url>] holds
  // rows [data-item=<id>] with their [data-state]; each answer's "videos" fill their rows as showProgress
  // does, and the page reloads when an item's state changes (to show its results).
  document.querySelectorAll("[data-poll-items]").forEach(function (el) {
    var url = el.getAttribute("data-poll-items");
    function tick() {
      fetch(url, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          var changed = false;
          (s.videos || []).forEach(function (v) {
            var row = el.querySelector('[data-item="' + v.video + '"]');
            if (!row) { return; }
            changed = changed || row.getAttribute("data-state") !== v.state;
            showProgress(row, v);
          });
          if (changed) { window.location.reload(); return; }
          if (s.state !== "failed" && s.state !== "done") { setTimeout(tick, 1000); }
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  });

  // A button that prints the page (the screen-time report: print CSS hides the menus).
  document.querySelectorAll("button[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });

  // A player opened at a moment (the screen time's thumbnails): video.moment[data-start] starts there
  // (the #t= fragment does it too; this covers browsers that ignore it).
  document.querySelectorAll("video.moment[data-start]").forEach(function (v) {
    v.addEventListener("loadedmetadata", function () {
      var t = parseFloat(v.getAttribute("data-start")) || 0;
      if (Math.abs(v.currentTime - t) > 0.5) { v.currentTime = t; }
    });
  });

  // A form that was sent says so on its button and cannot be sent twice by a double click;
  // uploads and recognition can take a while. Coming back with the Back button re-enables it.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || (form.method || "").toLowerCase() !== "post") { return; }
    var button = event.submitter;
    if (button && button.tagName === "BUTTON") {
      button.dataset.label = button.textContent;
      button.textContent = form.querySelector("input[type=file]") ? "Uploading…" : "Working…";
    }
    setTimeout(function () {  // after the browser has read the form (and which button was used)
      form.querySelectorAll("button[type=submit], button:not([type])").forEach(function (b) {
        if (!b.disabled) { b.disabled = true; b.dataset.sent = "1"; }
      });
    }, 0);
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form button[data-sent], form button[data-label]").forEach(function (b) {
      if (b.dataset.label) { b.textContent = b.dataset.label; delete b.dataset.label; }
      if (b.dataset.sent) { b.disabled = false; delete b.dataset.sent; }
    });
  });

  // A form with data-confirm="<question>" asks before it is sent (deleting, revoking); the
  // Content-Security-Policy forbids inline onsubmit handlers, so the question lives here.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); event.stopImmediatePropagation(); }
  }, true);

  // "Go back" on an error page reached from elsewhere: back in the history (no javascript: links under the CSP).
  document.querySelectorAll("a[data-history-back]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
    });
  });

  // A link with data-apply-first="<form id>" (e.g. "Continue to import" on the cleaning
  // page) first sends that form when boxes in it are ticked, so ticks are never lost.
  document.querySelectorAll("a[data-apply-first]").forEach(function (link) {
    var form = document.getElementById(link.getAttribute("data-apply-first"));
    if (!form) { return; }
    function ticked() { return form.querySelectorAll("input[type=checkbox]:checked").length > 0; }
    function showPending() {
      form.querySelectorAll(".pending").forEach(function (p) { p.hidden = !ticked(); });
    }
    form.addEventListener("change", showPending);
    showPending();
    link.addEventListener("click", function (event) {
      if (!ticked()) { return; }
      event.preventDefault();
      link.setAttribute("aria-busy", "true");
      fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" })
        .then(function (r) {
          if (r.ok) { window.location = link.href; } else { form.submit(); }  // shows the error page
        })
        .catch(function () { form.submit(); });
    });
  });
})();
