"""Per-frame cost of the 16 -> 24 kHz resamplers on 85 ms microphone frames of speech-like audio.

    python -m bench.resampler_cost [--frames 2000] [--batches 15]
    python -m bench.resampler_cost --only soxr --frames 500 --batches 1     # under valgrind --tool=callgrind

Each resampler streams the same frames (one fresh resampler per batch, as a session would); the figure is CPU time
(``time.process_time_ns``) per frame: the minimum over batches is the least disturbed by other work on the
machine, the median shows the spread. Under ``valgrind --tool=callgrind`` the instruction counts are exact and do
not depend on the machine's load: run once with ``--frames 0`` (start-up only) and once with frames, and divide
the difference by the number of frames.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from proxy.audio import RESAMPLER_KINDS, new_resampler

from .speech import mic_frames


def cost_ns_per_frame(kind: str, frames: int, batches: int) -> list[float]:
    """CPU nanoseconds per frame for each batch of ``frames`` frames."""
    table = mic_frames()
    results = []
    for _ in range(batches):
        resampler = new_resampler(kind)  # type: ignore[arg-type]
        resampler.push(table[0])  # the first push creates the filter: not a steady-state cost
        start = time.process_time_ns()
        for index in range(frames):
            resampler.push(table[index % len(table)])
        results.append((time.process_time_ns() - start) / max(frames, 1))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resampler_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2_000, help="frames per batch (default 2000)")
    parser.add_argument("--batches", type=int, default=15, help="batches per resampler (default 15)")
    parser.add_argument("--only", choices=RESAMPLER_KINDS, help="measure one resampler (for callgrind)")
    args = parser.parse_args(argv)
    kinds = (args.only,) if args.only else RESAMPLER_KINDS
    print("| resampler | CPU µs per 85 ms frame: min | median | max |")
    print("|---|---|---|---|")
    for kind in kinds:
        costs = cost_ns_per_frame(kind, args.frames, args.batches)
        print(f"| {kind} | {min(costs) / 1e3:.1f} | {statistics.median(costs) / 1e3:.1f} | {max(costs) / 1e3:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
