// Times in the viewer's own time zone: every <time datetime="ISO with zone"> element is rewritten
// to the browser's local date and time (the page's text stays UTC without JavaScript, and JSON
// answers always carry UTC). The full UTC value stays in the element's title.
(function () {
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"
  });
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var iso = el.getAttribute("datetime");
    if (!/[zZ]|[+-]\d\d:?\d\d$/.test(iso)) { return; }  // no zone: not an instant, leave it
    var when = new Date(iso);
    if (isNaN(when.getTime())) { return; }
    el.title = iso.replace("T", " ") + " (UTC)";
    el.textContent = format.format(when);
    el.dataset.local = "1";
  });
})();
