"""Node-to-node SSH between simulated Sparks, as on a real pair joined by the CX7 link.

spark-control copies downloaded weights from one Spark to the other with rsync over SSH,
run ON the source node (app/download_copy.py). Real Sparks are set up for that (NVIDIA's
two-Spark guide exchanges keys); here every node's user gets its own key, every node accepts
every peer's key, and every node's known_hosts holds every node's host key, so host keys are
still verified (`StrictHostKeyChecking=yes`), never trusted on first use.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence

from sparksim.node import SimNode, run


def connect_peers(nodes: Sequence[SimNode]) -> None:
    known_hosts = "".join(n.host_key_line() for n in nodes)
    public_keys = []
    for n in nodes:
        ssh_dir = n.home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        key = ssh_dir / "id_ed25519"
        if not key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{n.user}@{n.name}", "-f", str(key)])
        (ssh_dir / "known_hosts").write_text(known_hosts)
        uid, gid = pwd.getpwnam(n.user)[2:4]
        for path in (ssh_dir, *ssh_dir.iterdir()):
            os.chown(path, uid, gid)
        public_keys.append(key.with_suffix(".pub").read_text())
    for n in nodes:
        authorized = n.dir / "authorized_keys"
        current = authorized.read_text()
        authorized.write_text(current + "".join(k for k in public_keys if k not in current))
