// deskfleet console: progressive enhancement only. Every page works without this file;
// it adds "select all" checkboxes, copy buttons, and live job progress (polling the job's
// progress JSON once a second until the job has finished).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    const name = all.dataset.selectAll;
    const boxes = () => all.form.querySelectorAll(`input[type=checkbox][name="${name}"]`);
    all.addEventListener("change", () => {
      for (const box of boxes()) box.checked = all.checked;
    });
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      source.select();
      try {
        await navigator.clipboard.writeText(source.value);
        button.textContent = "Copied";
      } catch (_) {
        // Without clipboard access the text stays selected, ready for Ctrl+C.
        button.textContent = "Selected: press Ctrl+C";
      }
    });
  }
  for (const el of document.querySelectorAll("[data-job]")) {
    if (el.dataset.finished !== "true") follow(el.dataset.job);
  }
});

function setText(selector, text) {
  for (const el of document.querySelectorAll(selector)) el.textContent = text;
}

function follow(job) {
  const tick = async () => {
    let state;
    try {
      const r = await fetch(`/console/jobs/${encodeURIComponent(job)}/progress`, {
        credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) return setTimeout(tick, 5000);
      state = await r.json();
    } catch (_) {
      return setTimeout(tick, 5000);
    }
    for (const bar of document.querySelectorAll(`progress[data-progress="${job}"]`)) {
      bar.value = state.percent;
      bar.textContent = `${state.percent}%`;
    }
    setText(`[data-job-status="${job}"]`, state.status);
    setText(`[data-job-counts="${job}"]`, state.text);
    if (state.fail_reason) setText(`[data-job-reason="${job}"]`, state.fail_reason);
    if (state.ended) setText(`[data-job-ended="${job}"]`, state.ended);
    for (const s of state.sub_jobs) {
      setText(`[data-sub-status="${s.id}"]`, s.status);
      setText(`[data-sub-reason="${s.id}"]`, s.reason);
      for (const bar of document.querySelectorAll(`progress[data-sub-progress="${s.id}"]`)) {
        bar.value = s.process;
        bar.textContent = `${s.process}%`;
      }
    }
    if (!state.finished) setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}
