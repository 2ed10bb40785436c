"""Peak memory of a block of work (CPU resident memory sampled in a thread; CUDA from torch)."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()
        self.peak_bytes = 0

    def __enter__(self) -> PeakRSS:
        self.start = self.process.memory_info().rss
        self._peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self.process.memory_info().rss)
        self.peak_bytes = self._peak - self.start


def cuda_peak_bytes(device) -> int | None:
    """Peak CUDA memory allocated since the last reset on ``device`` (None on CPU)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))
