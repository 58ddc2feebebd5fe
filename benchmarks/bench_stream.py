"""Streaming latency of a detector on one CPU thread: the compute per hop (one window through
normalisation + model) and the whole push path (45 single-frame pushes + the decision), for
every pain model, in PyTorch and (if installed) onnxruntime. Target: far below one hop (0.75 s);
aim: under 1 ms of compute per window for L-SFAN.

    python benchmarks/bench_stream.py [--hops 400]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from poolwise.pain.data.layout import CHANNEL_NAMES
from poolwise.pain.deploy.detector import Detector, DetectorConfig, save_detector
from poolwise.pain.deploy.export import export_detector
from poolwise.pain.deploy.streaming import StreamingDetector
from poolwise.pain.models import create_model, list_models


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    window = rng.normal(size=(1, 30, 180)).astype(np.float32)
    frames = rng.normal(size=(180 + 45 * args.hops, 30)).astype(np.float32)
    print(f"one thread; median over {args.hops} hops; hop = 45 frames = 750 ms")
    print("| model | torch ms/window | onnxruntime ms/window | push path ms/hop (torch) |")
    print("|---|---|---|---|")
    for name in list_models():
        config = DetectorConfig(model=name, model_kwargs={}, channel_names=CHANNEL_NAMES,
                                frame_rate=60.0, window=180, hop=45, mean=[0.0] * 30,
                                std=[1.0] * 30)
        path = save_detector(folder / f"{name}.safetensors", config,
                             create_model(name).state_dict())
        detector = Detector.load(path)
        x = torch.from_numpy(window)

        def torch_once(detector=detector, x=x):
            with torch.inference_mode():
                detector.net(x)

        for _ in range(20):
            torch_once()
        t_torch = median_ms(torch_once, args.hops)
        t_ort = float("nan")
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(export_detector(path, folder / f"{name}.onnx")),
                                           options, providers=["CPUExecutionProvider"])
            for _ in range(20):
                session.run(None, {"windows": window})
            t_ort = median_ms(lambda s=session: s.run(None, {"windows": window}), args.hops)
        except ImportError:
            pass
        stream = StreamingDetector(detector)
        stream.push(frames[:180 - 1])
        per_hop = []
        for h in range(args.hops):
            chunk = frames[179 + 45 * h: 179 + 45 * (h + 1)]
            t = time.perf_counter()
            for frame in chunk:
                stream.push(frame)
            per_hop.append(time.perf_counter() - t)
        print(f"| {name} | {t_torch:.3f} | {t_ort:.3f} | {1000 * np.median(per_hop):.3f} |")


if __name__ == "__main__":
    main()
