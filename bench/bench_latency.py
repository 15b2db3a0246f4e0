"""CPU latency of every backend, and training throughput, for the project's models.

    .venv/bin/python bench/bench_latency.py [--runs 30] [--threads 2] [--investigate] [--skip-train] [--json out.json]

Latency (batch 1, random weights — latency does not depend on them): the student hg_s2_b1_mobile at 1×3×256×256
and LWOP with one refinement stage at 1×3×256×456 on eager torch, eager channels_last, onnxruntime, OpenVINO f32
and OpenVINO at its default precision (bf16 on CPUs with AVX512-BF16/AMX); the teacher hg_s8_b1 on eager torch.
``--investigate`` adds TorchScript (trace + freeze + optimize_for_inference) with and without channels_last.

The machine is shared, so backends are timed *interleaved*: each round calls every backend of a model once, and
the statistics per backend come from the same rounds; load spikes then hit all of them alike. The table shows the
median and the p10–p90 spread, and speed-ups of medians against plain eager.

Training: samples/s of forward + backward + SGD step at batch 8 (MSE against zero targets), hourglass at 64 and
128 px, LWOP at 128 and 256 px.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pose.backends import Backend, OnnxBackend, OpenVinoBackend, TorchBackend  # noqa: E402
from pose.export import FAMILY_DEFAULTS, export_onnx, export_openvino, io_names  # noqa: E402
from pose.models.hourglass import HourglassNet  # noqa: E402
from pose.models.openpose import LightweightOpenPose  # noqa: E402

GOALS = {"torch_channels_last": 1.4, "openvino_f32": 1.8}  # speed-up over plain eager the project aims for


class TorchScriptBackend:
    """Investigation only: traced, frozen and ``optimize_for_inference``-d TorchScript (oneDNN fusions)."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], channels_last: bool = False):
        self.channels_last = channels_last
        m = model.eval()
        example = torch.randn(shape)
        if channels_last:
            import copy
            m = copy.deepcopy(m).to(memory_format=torch.channels_last)
            example = example.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            traced = torch.jit.trace(m, example, strict=False)
            self.module = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        self.name = "torchscript_frozen" + ("_cl" if channels_last else "")
        self.output_names: list[str] = []

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        t = torch.from_numpy(x)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.module(t)
        return [o.contiguous().numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]


def interleaved_latency(backends: list[Backend], inputs: dict[str, np.ndarray], warmup: int,
                        runs: int) -> dict[str, dict[str, float]]:
    """Time each backend once per round, ``runs`` rounds after ``warmup`` rounds; stats per backend in ms."""
    times = {b.name: [] for b in backends}
    for r in range(warmup + runs):
        for b in backends:
            x = inputs[b.name]
            t0 = time.perf_counter()
            b(x)
            dt = (time.perf_counter() - t0) * 1e3
            if r >= warmup:
                times[b.name].append(dt)
    return {k: {"median_ms": float(np.median(v)), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90)), "min_ms": float(np.min(v))} for k, v in times.items()}


def latency_suite(name: str, family: str, model: nn.Module, shape: tuple[int, ...], threads: int, warmup: int,
                  runs: int, tmp: Path, exported: bool, investigate: bool) -> list[dict[str, Any]]:
    model.eval()
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    backends: list[Backend] = [TorchBackend(model), TorchBackend(model, channels_last=True)]
    inputs = {b.name: x for b in backends}
    if investigate:
        for cl in (False, True):
            b = TorchScriptBackend(model, shape, channels_last=cl)
            backends.append(b)
            inputs[b.name] = x
    if exported:
        spec = FAMILY_DEFAULTS[family]
        n_out = len(TorchBackend(model)(x))
        in_name, out_names = io_names(family, n_out)
        onnx_path = export_onnx(model, tmp / f"{name}.onnx", shape, in_name, out_names, dynamic_hw=spec["dynamic_hw"])
        xml_path = export_openvino(onnx_path, tmp / f"{name}.xml", mean=spec["mean"], scale=spec["scale"])
        raw = x * spec["scale"] + spec["mean"] if spec["mean"] is not None else x
        for b, inp in ((OnnxBackend(onnx_path, threads=threads), x),
                       (OpenVinoBackend(xml_path, precision="f32", threads=threads), raw),
                       (OpenVinoBackend(xml_path, precision="default", threads=threads), raw)):
            backends.append(b)
            inputs[b.name] = inp.astype(np.float32)
    stats = interleaved_latency(backends, inputs, warmup, runs)
    base = stats["torch"]["median_ms"]
    rows = []
    for b in backends:
        s = stats[b.name]
        row = {"model": name, "shape": "×".join(map(str, shape)), "backend": b.name, **s,
               "speedup": base / s["median_ms"]}
        if isinstance(b, OpenVinoBackend):
            row["precision"] = b.inference_precision
        rows.append(row)
    return rows


def training_throughput(make: Callable[[], nn.Module], size: tuple[int, int], batch: int, iters: int,
                        warmup: int = 1) -> float:
    """Samples per second of forward + backward + SGD step on random data."""
    torch.manual_seed(0)
    model = make().train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, *size)
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        outs = model(x)
        loss = sum(((o - 0.0) ** 2).mean() for o in outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'model':<18}{'input':<14}{'backend':<22}{'median ms':>10}{'p10':>8}{'p90':>8}{'min':>8}{'× eager':>9}")
    for r in rows:
        extra = f"  ({r['precision']})" if "precision" in r else ""
        print(f"{r['model']:<18}{r['shape']:<14}{r['backend']:<22}{r['median_ms']:>10.1f}{r['p10_ms']:>8.1f}"
              f"{r['p90_ms']:>8.1f}{r['min_ms']:>8.1f}{r['speedup']:>9.2f}{extra}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--investigate", action="store_true", help="add TorchScript frozen variants")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--train-iters", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__}
    if not args.skip_latency:
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as d:
            suites = [
                ("hg_s2_b1_mobile", "hourglass", lambda: HourglassNet(2, 1, mobile=True), (1, 3, 256, 256), True),
                ("lwop_1stage", "openpose", lambda: LightweightOpenPose(1), (1, 3, 256, 456), True),
                ("hg_s8_b1", "hourglass", lambda: HourglassNet(8, 1), (1, 3, 256, 256), False),
            ]
            for name, family, make, shape, exported in suites:
                runs = args.runs if exported else max(5, args.runs // 3)
                rows += latency_suite(name, family, make(), shape, args.threads, args.warmup, runs, Path(d),
                                      exported, args.investigate and exported)
                print(f"[{name} done]", file=sys.stderr, flush=True)
        print_table(rows)
        for r in rows:
            goal = GOALS.get(r["backend"])
            if goal and r["model"] == "hg_s2_b1_mobile":
                print(f"goal {r['backend']} ≥ {goal}× eager: {r['speedup']:.2f}× "
                      f"{'met' if r['speedup'] >= goal else 'NOT met'}")
        result["latency"] = rows
    if not args.skip_train:
        train = []
        for name, make, sizes in [("hg_s2_b1_mobile", lambda: HourglassNet(2, 1, mobile=True), (64, 128)),
                                  ("hg_s8_b1", lambda: HourglassNet(8, 1), (64, 128)),
                                  ("lwop_1stage", lambda: LightweightOpenPose(1), (128, 256))]:
            for s in sizes:
                sps = training_throughput(make, (s, s), batch=8, iters=args.train_iters)
                train.append({"model": name, "size": s, "batch": 8, "samples_per_s": sps})
                print(f"train {name:<16} {s:>4}px batch 8: {sps:7.1f} samples/s", flush=True)
        result["training"] = train
    if args.json:
        from pose.io import write_json
        write_json(args.json, result, indent=1)
    return result


if __name__ == "__main__":
    main()
