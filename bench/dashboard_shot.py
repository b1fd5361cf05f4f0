"""A screenshot of `autotune dashboard` on a finished study, from headless Chromium (issue 11:
the dashboard tells the truth: infeasible trials greyed and never on its Pareto front).

    python bench/dashboard_shot.py RESULTS_DIR STUDY [--out bench/dashboard.png]   (make dashboard-shot)

Serves the study with autotune's own dashboard app on a free loopback port, renders the study page
with `chromium --headless` (Debian: `apt-get install chromium`), and writes the PNG and, beside
it, what the page's JSON API said (which trials are infeasible, which are on the front), so the
picture can be read against the numbers. Never run by CI (no browser there).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("study")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "dashboard.png")
    args = parser.parse_args()
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        print("dashboard_shot: no headless browser (apt-get install chromium)", file=sys.stderr)
        return 2
    from autotune.dashboard import bind_server

    server = bind_server(args.results_dir / args.study, None, 0)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as response:
            (summary,) = json.loads(response.read())["study_summaries"]
        with urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}", timeout=60) as response:
            detail = json.loads(response.read())
        subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=20000", "--window-size=1400,1000", f"--screenshot={args.out}",
             f"{base}/dashboard/studies/{summary['study_id']}"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    infeasible = [t["number"] for t in detail["trials"] if any(c > 0 for c in t.get("constraints") or [])]
    front = [t["number"] for t in detail["best_trials"]]
    facts = {
        "study": args.study,
        "infeasible": infeasible,
        "front": front,
        "both": sorted(set(infeasible) & set(front)),
    }
    args.out.with_suffix(".json").write_text(json.dumps(facts, indent=1) + "\n")
    print(f"{args.out}: {json.dumps(facts)}")
    return 0 if not facts["both"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
