"""Peak memory of a block of work (CPU resident memory sampled in a thread; CUDA from torch)."""

from __future__ import annotations

import threading
import time

import psutil


class PeakRSS:
    """Peak resident memory of this process during a block, sampled in a thread.

    ``peak_bytes`` is the absolute peak; ``added_bytes`` the peak above the level at entry (what
    the block itself needed, unless memory freed earlier in the process was reused).
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()
        self.start_bytes = self.peak_bytes = 0

    @property
    def added_bytes(self) -> int:
        return self.peak_bytes - self.start_bytes

    def __enter__(self) -> PeakRSS:
        self.start_bytes = self.peak_bytes = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self.process.memory_info().rss)


def cuda_peak_bytes(device) -> int | None:
    """Peak CUDA memory allocated since the last reset on ``device`` (None on CPU)."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(device))
