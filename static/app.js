// Progress polling for long work: an element with data-poll="<json url>" is refreshed
// every second; when the job is done the page moves on to data-next.
(function () {
  document.querySelectorAll("[data-poll]").forEach(function (el) {
    var url = el.getAttribute("data-poll");
    function tick() {
      fetch(url, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          el.dispatchEvent(new CustomEvent("poll", { detail: s }));
          if (s.state === "done" && el.dataset.next) { window.location = el.dataset.next; return; }
          if (s.state !== "failed" && s.state !== "done") { setTimeout(tick, 1000); }
        })
        .catch(function () { setTimeout(tick, 2000); });
    }
    tick();
  });
})();
