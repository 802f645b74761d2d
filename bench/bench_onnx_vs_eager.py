"""onnxruntime vs PyTorch eager inference speed on CPU, through the library's own export path.

For resnet18 and mobilenetv3_large_100 (pretrained=False: speed does not depend on the weights), at batch sizes
1 and 32 and 224 px: the model is exported with `classifier_training.export.export_graph` (the exporter that
`export_onnx` uses by default: exporter='auto', i.e. the TorchScript one; dynamic batch, opset 18) and timed against eager PyTorch on
the same real sample images (prepared by the evaluation transform), the two alternating run by run so that
load from other processes hits both alike. onnxruntime runs with spinning threads off, so that its idle
threads do not steal the CPU from the eager runs in between. Aim: onnxruntime at least as fast as eager
(speed-up >= 1). Anchors measured earlier on this kind of machine (2 cores, fp32, bs 1): about 1.5x for
resnet18 and 4x for mobilenetv3_large_100. On a machine busy with other work, use `--threads 1`: with several
threads, eager PyTorch's OpenMP barriers collapse under contention and the ratio is overstated.

    .venv/bin/python bench/bench_onnx_vs_eager.py                      # appends a section to bench/RESULTS.md
    .venv/bin/python bench/bench_onnx_vs_eager.py --threads 1 --no-write
    .venv/bin/python bench/bench_onnx_vs_eager.py --models resnet18 --batch-sizes 1 --repeats 5 --no-write
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Figure, append_results, time_interleaved  # noqa: E402

import onnxruntime as ort  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from classifier_training.core import PreprocessingConfig  # noqa: E402
from classifier_training.data.datasets import load_image_rgb  # noqa: E402
from classifier_training.data.sample import write_sample_subset  # noqa: E402
from classifier_training.data.transforms import build_eval_transform  # noqa: E402
from classifier_training.export import _Logits, export_graph  # noqa: E402

AIMS_BS1 = {"resnet18": 1.5, "mobilenetv3_large_100": 3.0}  # the aims at batch size 1
ANCHORS = {"resnet18": 1.5, "mobilenetv3_large_100": 4.0}  # onnxruntime speed-up at bs 1, measured earlier


def real_batch(size: int, image_size: int) -> torch.Tensor:
    "`size` real sample images (40 distinct, cycled) through the evaluation transform."
    with tempfile.TemporaryDirectory() as tmp:
        root = write_sample_subset(Path(tmp) / "sample", per_class=4, splits=("val",))
        transform = build_eval_transform(PreprocessingConfig(image_size=image_size))
        images = [transform(load_image_rgb(p)) for p in sorted(root.rglob("*.png"))]
    return torch.stack([images[i % len(images)] for i in range(size)])


def session_for(proto, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads: options.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(ANCHORS))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=10, help="timed runs at bs 1 (larger batches: a third, at least 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads (default: the libraries' own)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    batch = real_batch(max(args.batch_sizes), args.image_size)
    figures, lines = [], []
    for name in args.models:
        torch.manual_seed(0)
        model = _Logits(timm.create_model(name, pretrained=False, num_classes=1000)).eval()
        session = session_for(export_graph(model, batch[:2])[0], args.threads)
        for bs in args.batch_sizes:
            x = batch[:bs]
            feed = {"images": x.numpy()}
            with torch.no_grad():
                diff = float(np.abs(session.run(None, feed)[0] - model(x).numpy()).max())
                repeats = args.repeats if bs == 1 else max(3, args.repeats // 3)
                eager, onnx_t = time_interleaved([lambda: model(x), lambda: session.run(None, feed)], repeats=repeats)
            speedup = eager.median / onnx_t.median
            line = (f"{name} bs {bs}: eager {eager.rate(bs):.1f} img/s ({eager}), onnxruntime {onnx_t.rate(bs):.1f} img/s "
                    f"({onnx_t}), speed-up {speedup:.2f}x, max |diff| {diff:.1e}"
                    + (f"; anchor ~{ANCHORS[name]}x" if bs == 1 and name in ANCHORS else ""))
            print(line, flush=True)
            lines.append(line)
            aim = AIMS_BS1.get(name) if bs == 1 else None
            figures += [Figure.at_least(f"{name} bs {bs}: onnxruntime / eager speed", speedup, "x", aim) if aim
                        else Figure(f"{name} bs {bs}: onnxruntime / eager speed", speedup, "x"),
                        Figure(f"{name} bs {bs}: eager", eager.rate(bs), "img/s"),
                        Figure(f"{name} bs {bs}: onnxruntime", onnx_t.rate(bs), "img/s")]
    if not args.no_write:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        notes = (f"{args.image_size} px, fp32, CPU, pretrained=False, threads {args.threads or 'default'}, load average {load}; "
                 "anchors at bs 1: resnet18 ~1.5x, mobilenetv3_large_100 ~4x.\n\n" + "\n".join(f"- {l}" for l in lines))
        print(f"appended to {append_results('ONNX export: onnxruntime vs PyTorch eager inference', figures, notes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
