"""Cost of the sampling thread on the measured training step, measured interleaved.

Blocks of back-to-back steps alternate between "thread off" and "thread on" (ABBA order, so a slow drift
of the machine cancels); the overhead is the mean of the paired block differences, with its 95 %
confidence interval. Resolving 1 % takes thousands of short steps: the default is the tiny model
(about 17 ms a step on a 2-core CPU), blocks of 40 steps (several sampling intervals each).

    python bench/monitor_overhead.py                                   # default interval (100 ms)
    python bench/monitor_overhead.py --interval-ms 20 --block 4        # a faster thread, for scale
    python bench/monitor_overhead.py --architecture ssdlite320_mobilenet_v3_large --steps-per-arm 300
    python bench/monitor_overhead.py --device cuda --architecture fasterrcnn_resnet50_fpn --batch 4 --size 512
"""

from __future__ import annotations

import argparse
import statistics
import sys

from pytest_mlestimate.core.devices import resolve_device
from pytest_mlestimate.profiling.models import build_model
from pytest_mlestimate.profiling.monitor import ResourceMonitor
from pytest_mlestimate.profiling.session import Session
from pytest_mlestimate.scenarios.scenario import DEFAULT_SAMPLE_INTERVAL_MS, Scenario


def block(session: Session, steps: int) -> float:
    return statistics.fmean(session.train_step(phased=False)[0] for _ in range(steps))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architecture", default="pytest_mlestimate.tiny:tiny_detector")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps-per-arm", type=int, default=6000)
    parser.add_argument("--block", type=int, default=40)
    parser.add_argument("--interval-ms", type=int, default=DEFAULT_SAMPLE_INTERVAL_MS)
    args = parser.parse_args()

    scenario = Scenario(
        task_type="detection",
        architecture=args.architecture,
        dataset_size=1,
        batch_size=args.batch,
        image_size=(args.size, args.size),
        device=args.device,
        threading=True,
        sample_interval_ms=args.interval_ms,
    )
    device = resolve_device(scenario.device)
    threaded = ResourceMonitor(device, args.interval_ms / 1000, threaded=True)
    session = Session(scenario, build_model(scenario).to(device).train(), device, threaded)
    session.optimizer = session.make_optimizer()
    block(session, 5)  # warm-up

    pairs = args.steps_per_arm // args.block
    differences, off_means = [], []
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        means = {}
        for with_thread in order:
            if with_thread:
                threaded.start_phase()
            means[with_thread] = block(session, args.block)
            if with_thread:
                samples = threaded.end_phase().samples
        differences.append((means[True] - means[False]) / means[False])
        off_means.append(means[False])
    overhead = statistics.fmean(differences)
    half_width = 1.96 * statistics.stdev(differences) / len(differences) ** 0.5
    print(
        f"{args.architecture} batch {args.batch} on {device}: {pairs * args.block} steps per arm, "
        f"step {statistics.fmean(off_means) * 1000:.1f} ms without the thread; sampling every "
        f"{args.interval_ms} ms ({samples} samples in the last block)"
    )
    print(
        f"overhead of the sampling thread: {overhead:+.2%} (95 % CI {overhead - half_width:+.2%} .. "
        f"{overhead + half_width:+.2%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
