// Points in time in the reader's own time zone: <time class="local-time"> (templates/_time.html), and
// window.crmLocalTime(iso) for pages that draw times themselves. Without scripts the UTC text stays.
(function () {
  function localTime(iso) {
    const when = new Date(iso);
    if (isNaN(when)) return "";
    return when.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
    });
  }
  window.crmLocalTime = localTime;
  for (const el of document.querySelectorAll("time.local-time")) {
    const text = localTime(el.getAttribute("datetime"));
    if (text) el.textContent = text;
  }
})();
