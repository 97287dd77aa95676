"""What PID 1 (systemd) does on a real Spark for a node's sshd: reap the orphans of its sessions.

    python3 reaper.py /usr/sbin/sshd -D ...

The simulated nodes share this machine's PID namespace, whose PID 1 may never reap (a container's
or a VM's init): a detached job whose waiter died would then stay a zombie, and `kill -0` on its
process group says "alive" forever, which no real Spark does. This process marks itself a child
subreaper, runs the command as its child, reaps every orphan handed to it, forwards the stopping
signals, and exits with the command's status.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = os.fork()
    if child == 0:
        os.execv(argv[0], argv)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _frame: os.kill(child, s))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) % 256


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
