// Follows a run over many contacts (Automations > Run now) until it is done; the numbers come from the server.
(function () {
  const card = document.getElementById("bulk-run");
  if (!card || card.dataset.finished === "true") return;
  const bar = card.querySelector('[data-role="bar"]');
  const text = card.querySelector('[data-role="text"]');
  const number = (n) => Number(n || 0).toLocaleString("en-US");

  function show(run) {
    const done = run.acted + run.failed;
    if (run.status === "queued") {
      text.textContent = "Waiting for a worker…";
    } else if (run.status === "running") {
      bar.max = run.matched || 1;
      bar.value = done;
      text.textContent = `Acted on ${number(done)} of ${number(run.matched)} matching contacts…`;
    } else if (run.status === "done") {
      bar.max = run.matched || 1;
      bar.value = run.matched || 1;
      const failed = run.failed ? `, ${number(run.failed)} failed` : "";
      text.textContent = `Done: ${number(run.evaluated)} evaluated, ${number(run.matched)} matched, ` +
        `${number(run.acted)} acted on${failed}.`;
    } else {
      text.textContent = `Failed: ${run.error}`;
    }
  }

  async function poll() {
    try {
      const response = await fetch(card.dataset.progressUrl, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const run = await response.json();
        show(run);
        if (run.finished) return;
      }
    } catch (err) {
      // A dropped request is tried again on the next tick.
    }
    setTimeout(poll, 500);
  }
  poll();
})();
