// The status page's script: refresh the live parts in place, keep the data's age counting,
// filter the lock table by key. Without it the page still shows everything, as of its load.
// Served as a file: the page's CSP allows no inline script.
"use strict";

(() => {
  const body = document.body;
  const period = Math.max(Number(body.dataset.refresh) || 5, 1) * 1000;
  const filter = document.getElementById("filter");
  const exporter = document.getElementById("exporter");
  let loadedAt = performance.now();
  let failingSince = null;

  // The same words as views.ago on the server.
  function ago(seconds) {
    if (seconds < 120) return `${Math.max(Math.round(seconds), 0)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function tick() {
    const elapsed = (performance.now() - loadedAt) / 1000;
    for (const span of document.querySelectorAll(".ago")) {
      span.textContent = ago(Number(span.dataset.ago) + elapsed);
    }
    if (failingSince !== null) {
      const since = (Date.now() - failingSince) / 1000;
      exporter.textContent =
        `The exporter has not answered for ${ago(since)}: everything here is ` +
        `${ago(elapsed)} old, not the current state.`;
    }
  }

  function applyFilter() {
    const wanted = filter.value.trim().toLowerCase();
    const rows = document.querySelectorAll("#locks tbody tr");
    let shown = 0;
    for (const row of rows) {
      row.hidden = wanted !== "" && !row.dataset.key.toLowerCase().includes(wanted);
      if (!row.hidden) shown += 1;
    }
    document.getElementById("shown").textContent =
      wanted ? `${shown} of ${rows.length} shown` : "";
    const url = new URL(window.location.href);
    if (wanted) url.searchParams.set("q", filter.value);
    else url.searchParams.delete("q");
    window.history.replaceState(null, "", url);
  }

  function addCopyButtons() {
    if (!navigator.clipboard) return; // not a secure context: the command selects on click
    for (const code of document.querySelectorAll("code.cmd")) {
      if (code.nextElementSibling?.classList.contains("copy")) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "copy";
      button.addEventListener("click", () => {
        navigator.clipboard.writeText(code.textContent).then(
          () => { button.textContent = "copied"; },
          () => { button.textContent = "select and copy"; },
        );
      });
      code.after(button);
    }
  }

  async function refresh() {
    try {
      const response = await fetch(window.location.pathname, {
        cache: "no-store",
        signal: AbortSignal.timeout(period),
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of document.querySelectorAll("[data-live]")) {
        const next = fresh.getElementById(part.id);
        if (next) part.replaceWith(next);
      }
      document.title = fresh.title;
      loadedAt = performance.now();
      failingSince = null;
      exporter.hidden = true;
      applyFilter();
      addCopyButtons();
    } catch {
      if (failingSince === null) failingSince = Date.now();
      exporter.hidden = false;
      for (const part of document.querySelectorAll("#counts, #charts, #locks")) {
        part.classList.add("stale"); // until a refresh brings the server's word again
      }
    }
    tick();
  }

  async function loop() {
    await refresh();
    window.setTimeout(loop, period);
  }

  filter.value = new URL(window.location.href).searchParams.get("q") || "";
  filter.addEventListener("input", applyFilter);
  document.querySelector(".filter").hidden = false;
  applyFilter();
  addCopyButtons();
  window.setTimeout(loop, period);
  window.setInterval(tick, 1000);
})();
