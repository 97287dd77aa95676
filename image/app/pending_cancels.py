"""Cancels a node has not heard yet, kept on this machine's disk.

A cancel of a download or an image pull kills its job on the node. When the node does not answer,
the follower (remote_job.follow) sends the kill again until it does; if spark-control is stopped
meanwhile, the job runs on there and the next start would find it and follow it as wanted work.
So a kill that could not be sent is written here (node and job id, nothing else), and the next
start cancels the job it finds again. A kill that reached the node needs no record: the job is
marked killed there (remote_job.RemoteJob.kill). The job directories of a cancelled download that
its node could not remove are written here too: found again, they would carry the download on.

One small JSON file in the data directory, rewritten whole (write then rename: never half a file).
A file that cannot be read or written costs only this memory across restarts, never a request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class PendingCancels:
    def __init__(self, path: Path | None) -> None:
        """path None: kept in memory only (tests, or no data directory)."""
        self.path = path
        self._jobs: set[tuple[str, str]] = self._load()

    def __contains__(self, node_and_job: tuple[str, str]) -> bool:
        return node_and_job in self._jobs

    def add(self, node: str, job_id: str) -> None:
        if (node, job_id) not in self._jobs:
            self._jobs.add((node, job_id))
            self._save()

    def discard(self, node: str, job_id: str) -> None:
        if (node, job_id) in self._jobs:
            self._jobs.discard((node, job_id))
            self._save()

    def keep_only(self, node: str, job_ids: set[str]) -> None:
        """Forget the records of `node`'s jobs that are no longer there (their job dirs removed)."""
        gone = {(n, j) for n, j in self._jobs if n == node and j not in job_ids}
        if gone:
            self._jobs -= gone
            self._save()

    def keep_nodes(self, nodes: set[str]) -> None:
        """At startup: forget the records of nodes no longer configured (none of their jobs is
        looked for, so none would ever be carried out)."""
        gone = {(n, j) for n, j in self._jobs if n not in nodes}
        if gone:
            log.warning("pending cancels: %d for nodes no longer configured (%s) are forgotten", len(gone),
                        ", ".join(sorted({n for n, _ in gone})))
            self._jobs -= gone
            self._save()

    def _load(self) -> set[tuple[str, str]]:
        if self.path is None:
            return set()
        try:
            entries = json.loads(self.path.read_text())
            return {(str(e["node"]), str(e["job"])) for e in entries}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("pending cancels: cannot read %s (%s); cancels the nodes have not heard yet are "
                        "forgotten", self.path, exc)
            return set()

    def _save(self) -> None:
        """Write then rename, from a temporary file of its own (an old process still stopping may
        write at the same moment): the file is always one whole version."""
        if self.path is None:
            return
        entries = [{"node": n, "job": j} for n, j in sorted(self._jobs)]
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(entries))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("pending cancels: cannot write %s (%s); a restart would forget them", self.path, exc)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
