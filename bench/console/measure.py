"""Loads the console's overview and desktops pages in Chromium and prints a Markdown table of its
weight and timings. Used by bench/console/run.sh: ``measure.py DATA_DIR RUNS``."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("DESKFLEET_CHROMIUM", "/usr/bin/chromium")
PAGES = [
    ("overview (counts over all desktops)", "/console/"),
    ("first page", "/console/desktops"),
    ("filtered (site=lyon, name contains 12)", "/console/desktops?q=12&tag=site%3Dlyon"),
    ("sorted (address, descending, page 100)", "/console/desktops?sort=address&dir=desc&page=100"),
]
TIMING = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  const assets = performance.getEntriesByType('resource')
    .filter(r => r.name.includes('/console/assets/'))
    .reduce((s, r) => s + (r.decodedBodySize || 0), 0);
  return {html: n.decodedBodySize, tti: n.domInteractive, load: n.loadEventEnd,
          server: n.responseStart - n.requestStart, assets,
          rows: document.querySelectorAll('table.desktops tbody tr').length,
          status: (document.querySelector('[role=status]') || {textContent: '-'}).textContent};
}"""


def main() -> None:
    data = Path(sys.argv[1])
    runs = int(sys.argv[2])
    endpoint = (data / "endpoint.url").read_text().strip()
    boot = json.loads((data / "bootstrap.json").read_text())
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(f"{endpoint}/console/login")
        page.get_by_label("User name").fill(boot["user_name"])
        page.get_by_label("Password").fill(boot["password"])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{endpoint}/console/")
        print("| page | rows | matching | HTML (bytes) | CSS+JS (bytes) | server (ms) | TTI (ms) | load (ms) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, path in PAGES:
            # A cold load first: it fetches the assets (weighed), then warm loads (timed).
            cold = context.new_page()
            cold.goto(endpoint + path)
            first = cold.evaluate(TIMING)
            cold.close()
            samples = []
            for _ in range(runs):
                tab = context.new_page()
                tab.goto(endpoint + path)
                samples.append(tab.evaluate(TIMING))
                tab.close()
            med = lambda k: statistics.median(s[k] for s in samples)  # noqa: E731
            matching = first["status"].split(" desktops match")[0].strip() if first["rows"] else "-"
            print(f"| {name} | {first['rows']} | {matching} | {first['html']} | {first['assets']} "
                  f"| {med('server'):.1f} | {med('tti'):.1f} | {med('load'):.1f} |")
        browser.close()


if __name__ == "__main__":
    main()
