"""Progress of a `docker pull`, read from its output without a terminal.

Without a TTY the docker CLI drops every message that carries a progress bar ("Downloading",
"Extracting": moby's jsonmessage.Display), so there are no byte counts. What it does print is
one line per layer event, which is enough for layers done out of layers known:

    1.3: Pulling from nim/meta/llama-3.1-8b-instruct
    ccb736c62992: Pulling fs layer        a layer to fetch
    b332d58f4dab: Waiting                 queued behind the daemon's concurrent downloads
    ccb736c62992: Already exists          on the node already (counts as done)
    ccb736c62992: Download complete
    ccb736c62992: Pull complete           extracted
    Digest: sha256:...
    Status: Downloaded newer image for nvcr.io/...   (or "Image is up to date for ...")

`fraction` weighs a layer half downloaded, half extracted: downloads dominate on a slow link,
extraction of big layers on a fast one. docker lists every layer first (Pulling fs layer,
Waiting, Already exists), then reports on them; `fraction` stays 0 while that list is still
arriving, so that a poll that saw only its first lines ("Already exists") cannot show 100 %
and then fall back. The list starts at "<tag>: Pulling from ...": lines before it (a warning of
docker's, a login's output) do not end it.
"""

from __future__ import annotations

import re
from typing import Any

_LAYER_LINE = re.compile(r"^([0-9a-f]{12,64}): (.+)$")
_KNOWN = {"Pulling fs layer", "Waiting", "Retrying"}
_LISTING = {"Pulling fs layer", "Waiting", "Already exists"}
_MAX_TAIL = 20


class PullProgress:
    def __init__(self) -> None:
        self.layers: set[str] = set()
        self.downloaded: set[str] = set()
        self.extracted: set[str] = set()
        self.digest: str | None = None
        self.status: str | None = None  # docker's closing "Status: ..." line
        self._partial = ""
        self._listing = True            # still reading docker's list of layers
        self._pulling_from = False      # its "<tag>: Pulling from" line was seen: the list begins
        self._tail: list[str] = []      # the last lines that are not layer events, for a failure's reason

    def feed(self, text: str) -> None:
        """New output (any chunking: a line split across two polls is joined)."""
        lines = (self._partial + text).replace("\r", "\n").split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line.strip())

    def _line(self, line: str) -> None:
        if not line:
            return
        layer = _LAYER_LINE.match(line)
        if layer:
            layer_id, event = layer.groups()
            self.layers.add(layer_id)
            self._listing = self._listing and (event in _LISTING or not self._pulling_from)
            if event in ("Download complete", "Already exists", "Pull complete"):
                self.downloaded.add(layer_id)
            if event in ("Already exists", "Pull complete"):
                self.extracted.add(layer_id)
            if event in _KNOWN or event in _LISTING or event.startswith(("Verifying", "Download", "Extracting",
                                                                         "Pull complete")):
                return  # a layer's progress, not worth keeping as a failure's reason
        elif ": Pulling from " in line:
            self._pulling_from = True
        elif self._pulling_from:
            self._listing = False  # the list of layers comes right after "Pulling from"
        if line.startswith("Digest: "):
            self.digest = line.removeprefix("Digest: ")
        elif line.startswith("Status: "):
            self.status = line.removeprefix("Status: ")
        self._tail = (self._tail + [line])[-_MAX_TAIL:]

    def to_dict(self) -> dict[str, Any]:
        total = len(self.layers)
        fraction = (len(self.downloaded) + len(self.extracted)) / (2 * total) if total and not self._listing else 0.0
        return {"layers_total": total, "layers_downloaded": len(self.downloaded),
                "layers_done": len(self.extracted), "fraction": round(fraction, 4), "digest": self.digest}

    def failure_detail(self) -> str:
        """Why the pull failed, in docker's words: its error lines, else its last lines."""
        tail = [*self._tail, *([self._partial.strip()] if self._partial.strip() else [])]
        errors = [line for line in tail if "rror" in line or "denied" in line or "unauthorized" in line
                  or "no space left" in line or "not found" in line]
        return "; ".join(dict.fromkeys(errors or tail[-3:]))[-800:]
