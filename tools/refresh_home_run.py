"""Make the home page's pictures and figures from a real default run.

Runs `classifier-train` with no overrides but the run folder (or reuses --run-dir if it holds a finished run),
copies the pictures the home page shows into nbs/images/, and prints the figures and the run-folder listing
that nbs/index.ipynb quotes. Run it after a change that alters what a default run gives:

    .venv/bin/python tools/refresh_home_run.py --run-dir /tmp/docs_run
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"confusion_matrix.png": "confusion_matrix.png", "sample_predictions.png": "sample_predictions.png",
          "top_losses.png": "top_losses.png", "training_history/acc_top1.png": "training_history_acc_top1.png",
          "training_history/loss.png": "training_history_loss.png",
          "reliability_diagram.png": "reliability_diagram.png", "risk_coverage.png": "risk_coverage.png"}


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB": return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def listing(run: Path) -> str:
    lines = [f"{run}/"]
    entries = sorted(run.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    for i, p in enumerate(entries):
        branch = "└── " if i == len(entries) - 1 else "├── "
        if p.is_dir():
            kids = sorted(c.name for c in p.iterdir())
            if p.name == "checkpoints":
                lines.append(f"{branch}{p.name}/")
                for j, c in enumerate(kids):
                    size = human((p / c).stat().st_size)
                    lines.append(f"│   {'└── ' if j == len(kids) - 1 else '├── '}{c:<40} {size:>9}")
            else:
                shown = ", ".join(kids[:2] + (["..."] if len(kids) > 3 else []) + kids[2:][-1:]) if len(kids) > 2 else ", ".join(kids)
                lines.append(f"{branch}{p.name + '/':<28}{shown}")
        else:
            lines.append(f"{branch}{p.name:<28}{human(p.stat().st_size):>9}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="/tmp/docs_run", help="the run folder (reused when it holds a finished run)")
    ap.add_argument("--rerun", action="store_true", help="train again even if the run folder holds a finished run")
    args = ap.parse_args()
    run = Path(args.run_dir)
    if args.rerun or not (run / "metrics.json").is_file():
        if run.exists(): shutil.rmtree(run)
        cmd = [str(Path(sys.executable).parent / "classifier-train"), f"hydra.run.dir={run}",
               "trainer.enable_progress_bar=false"]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    out = ROOT / "nbs" / "images"
    out.mkdir(exist_ok=True)
    for src, dst in IMAGES.items():
        shutil.copyfile(run / src, out / dst)
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "run_manifest.json").read_text())
    export = json.loads((run / "export_report.json").read_text())
    v = export["verification"]
    best = Path(manifest.get("best_checkpoint") or "").name
    print(f"best checkpoint: {best}")
    print(f"val top-1 {metrics['val/acc_top1']:.3f}, test top-1 {metrics['test/acc_top1']:.3f}, "
          f"test macro F1 {metrics['test/f1_macro']:.3f}")
    print("test recall per class:", {k.split('/')[-1]: round(x, 2) for k, x in metrics.items() if k.startswith("test/recall/")})
    print(f"export verification: {json.dumps({k: v[k] for k in v if k not in ('per_batch', 'images')})[:600]}")
    print(f"run time: {manifest.get('duration_s')} s")
    print(listing(run))


if __name__ == "__main__":
    main()
