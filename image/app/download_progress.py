"""Progress of a download or a copy, read from what the tools print (pure functions, no I/O).

`hf download` (huggingface_hub's CLI) draws tqdm bars on stderr. tqdm redraws a bar with `\\r`
and ends it with `\\n`, so the output is split on both. The bars this module reads:

    Fetching 6 files:  33%|###3      | 2/6 [00:01<00:02,  1.52it/s]                  <- files
    model-00001-of-00003.safetensors:  42%|####2     | 504k/1.20M [00:00<00:01, 1.01MB/s]  <- bytes

tqdm's grammar: `<desc>: <percent>%|<bar>| <n>/<total> [<elapsed><<remaining>, <rate>]`; with
`unit_scale` the counts carry an SI prefix (k, M, G, T; powers of 1000) and the rate ends in
`B/s`. Every bar that counts bytes is one file (huggingface_hub draws one per file, up to 8 at
once), so the download's bytes are the sum over bars, each at its latest redraw. At the end the
CLI prints the snapshot directory on stdout (`.../snapshots/<40-hex commit>`).

rsync (`--info=progress2`) prints one whole-transfer line, also redrawn with `\\r`:

    1,048,576  33%  100.00MB/s    0:00:00 (xfr#1, to-chk=3/6)

Lines that are neither (warnings, the error a failed download ends with) are kept as `tail`,
for the message when the tool fails.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field

_SI = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_BAR = re.compile(
    r"(?P<desc>.*?):\s+(?P<pct>\d{1,3})%\|[^|]*\|\s*(?P<n>\d+(?:\.\d+)?)(?P<nu>[kMGTP]?)/"
    r"(?P<total>\d+(?:\.\d+)?)(?P<tu>[kMGTP]?)\s*\[[^,\]]*,\s*(?P<rate>[^\]]*)\]")
_FILES_DESC = re.compile(r"Fetching (\d+) files?")
_SNAPSHOT = re.compile(r"/snapshots/(?P<commit>[0-9a-f]{40})/?$")
_RSYNC = re.compile(r"\s*(?P<bytes>[\d,]+)\s+(?P<pct>\d{1,3})%\s+\S+/s\s+\d+:\d\d:\d\d")
_RATE_WINDOW_S = 5.0


def split_redraws(buffer: str) -> tuple[list[str], str]:
    """Complete lines (split on \\r and \\n) and the unfinished rest, kept for the next chunk."""
    parts = re.split(r"[\r\n]", buffer)
    return [p for p in parts[:-1] if p.strip()], parts[-1]


def _count(number: str, prefix: str) -> int:
    return int(float(number) * _SI[prefix])


@dataclass
class Progress:
    """What one transfer has done so far; `feed()` it output as it arrives."""

    bytes_done: int = 0
    bytes_total: int | None = None
    files_done: int = 0
    files_total: int | None = None
    snapshot_commit: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    _bars: dict[str, tuple[int, int]] = field(default_factory=dict)
    _samples: deque[tuple[float, int]] = field(default_factory=deque)
    _pending: str = ""

    def feed(self, text: str, now: float | None = None) -> None:
        lines, self._pending = split_redraws(self._pending + text)
        for line in lines:
            self._read_line(line.strip())
        # tqdm puts `\r` BEFORE a redraw, so the latest one is always unterminated: read it if it
        # is a whole bar (reading a bar twice is harmless: it sets, never adds).
        if _BAR.fullmatch(self._pending.strip()):
            self._read_line(self._pending.strip())
        self._sample(time.monotonic() if now is None else now)

    def _read_line(self, line: str) -> None:
        bar = _BAR.fullmatch(line)
        if bar and (files := _FILES_DESC.fullmatch(bar["desc"].strip())):
            self.files_total = int(files.group(1))
            self.files_done = int(float(bar["n"]))
        elif bar and bar["rate"].rstrip().endswith("B/s"):
            self._bars[bar["desc"].strip()] = (_count(bar["n"], bar["nu"]), _count(bar["total"], bar["tu"]))
            self.bytes_done = sum(n for n, _ in self._bars.values())
            self.bytes_total = sum(t for _, t in self._bars.values())
        elif rsync := _RSYNC.match(line):
            self.bytes_done = int(rsync["bytes"].replace(",", ""))
            pct = int(rsync["pct"])
            if pct:
                self.bytes_total = max(self.bytes_done, self.bytes_done * 100 // pct)
        elif snapshot := _SNAPSHOT.search(line):
            self.snapshot_commit = snapshot["commit"]
        elif not bar:
            self.tail.append(line)

    def complete(self) -> None:
        """The tool exited 0: what it moved is the whole (rsync's last percentage may say 99)."""
        self.bytes_total = self.bytes_done
        if self.files_total is not None:
            self.files_done = self.files_total

    def _sample(self, now: float) -> None:
        self._samples.append((now, self.bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > _RATE_WINDOW_S:
            self._samples.popleft()

    @property
    def rate_bps(self) -> float | None:
        """Bytes per second over the last few seconds (a moving window: a stall shows at once)."""
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    @property
    def estimated_total(self) -> int | None:
        """Bytes of every file: the bars seen so far, scaled up when some files have not started
        (tqdm knows a file's size only once its bar appears)."""
        if self.bytes_total is None:
            return None
        started = len(self._bars)
        finished = sum(1 for n, t in self._bars.values() if n >= t)
        cached = max(0, self.files_done - finished)  # counted by "Fetching", never drawn
        unstarted = (self.files_total or 0) - cached - started
        if started and unstarted > 0:
            return self.bytes_total + unstarted * self.bytes_total // started
        return self.bytes_total

    @property
    def eta_s(self) -> float | None:
        rate, total = self.rate_bps, self.estimated_total
        if not rate or rate <= 0 or total is None:
            return None
        return max(0.0, (total - self.bytes_done) / rate)

    def to_dict(self) -> dict:
        rate, eta = self.rate_bps, self.eta_s
        return {"bytes_done": self.bytes_done, "bytes_total": self.estimated_total,
                "files_done": self.files_done, "files_total": self.files_total,
                "rate_bytes_per_s": None if rate is None else round(rate, 1),
                "eta_s": None if eta is None else round(eta, 1)}

    def failure_detail(self, limit: int = 600) -> str:
        """The tool's last words (an HTTP error, a permission problem), for the failure message."""
        return " / ".join(self.tail)[-limit:]
