"""Per-frame timings and counters of the node, summarised for /diagnostics.

Latencies are kept in bounded windows (the last ``window`` frames) so p50/p99 describe recent
behaviour; counters are cumulative and rates are taken over the time between two reports.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

MIN_LATENCY_SAMPLES = 100  # frames processed (since activation) before a p99 is judged
STAGES = ("preprocess", "inference", "postprocess", "publish", "end_to_end", "transport")


class NodeStats:
    def __init__(self, window: int = 300):
        self._lock = threading.Lock()  # the subscription callback and the worker both write
        self.latency_ms = {stage: deque(maxlen=window) for stage in STAGES}
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "bad": 0, "failed": 0}
        self._last_report = (time.monotonic(), dict(self.counts))

    def reset(self) -> None:
        """Forget every frame so far (the benchmark drops its warm-up frames this way)."""
        with self._lock:
            for values in self.latency_ms.values():
                values.clear()
            self.counts = dict.fromkeys(self.counts, 0)
            self._last_report = (time.monotonic(), dict(self.counts))

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def record(self, timings_ms: dict[str, float]) -> None:
        with self._lock:
            for stage, ms in timings_ms.items():
                self.latency_ms[stage].append(ms)
            self.counts["processed"] += 1

    def summary(self) -> dict[str, float]:
        """Rates since the previous summary, counters, and p50/p99 of each stage (ms)."""
        now = time.monotonic()
        with self._lock:
            since, before = self._last_report
            counts = dict(self.counts)
            windows = {stage: list(values) for stage, values in self.latency_ms.items()}
            self._last_report = (now, counts)
        elapsed = max(now - since, 1e-9)
        received = counts["received"] - before["received"]
        result = {
            "input_fps": received / elapsed,
            "drop_rate": (counts["dropped"] - before["dropped"]) / received if received else 0.0,
            "processed_fps": (counts["processed"] - before["processed"]) / elapsed,
            **{k: float(v) for k, v in counts.items()},
        }
        for stage, values in windows.items():
            if values:
                p50, p99 = np.percentile(values, [50, 99])
                result[f"{stage}_p50_ms"], result[f"{stage}_p99_ms"] = float(p50), float(p99)
        return result


def warnings_from(summary: dict[str, float], max_drop_rate: float, latency_budget_ms: float):
    """What in a ``summary`` deserves a diagnostics WARN, as sentences (none: healthy)."""
    found = []
    if summary["drop_rate"] > max_drop_rate:
        found.append(
            f"{summary['drop_rate']:.0%} of frames dropped (max_drop_rate {max_drop_rate:.0%}): "
            "the model is slower than the camera"
        )
    p99 = summary.get("end_to_end_p99_ms")
    # Below ~100 frames a p99 is just the slowest frame, and the first frames after activation
    # are the slowest (allocations, the backend's first runs): no verdict on so few.
    enough = summary.get("processed", 0) >= MIN_LATENCY_SAMPLES
    if p99 is not None and enough and p99 > latency_budget_ms:
        found.append(f"end-to-end p99 {p99:.1f} ms exceeds latency_budget_ms {latency_budget_ms:g}")
    return found
