// <time class="local-time"> in the reader's own time zone; the UTC text stays for readers without scripts.
for (const el of document.querySelectorAll("time.local-time")) {
  const when = new Date(el.getAttribute("datetime"));
  if (!isNaN(when)) {
    el.textContent = when.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
    });
  }
}
