"""The node-to-node copy of a downloaded repo: rsync over SSH on the fast (CX7) link.

Why rsync of the whole repo directory, symlinks kept (`-a`), rather than dereferenced:
the cache stores each file once in `blobs/` and a snapshot is relative links
(`snapshots/<commit>/x -> ../../blobs/<hash>`). Copying `blobs/`, `snapshots/` and `refs/`
together makes every relative link valid on the target, keeps the cache's layout (so `hf`,
vLLM and a later `hf download` see a normal cache that resumes and deduplicates) and moves
each byte once; dereferencing (`-L`) would turn links into copies (twice the bytes when two
revisions share a blob) and leave a layout `hf` does not recognise. The pitfall the other way
round, copying only `snapshots/` with links kept, ships nothing but dangling links: that is
what the verification afterwards (weights_verify.py) would catch.

`*.incomplete` blobs (a download cut short) are not copied. `--partial` lets an interrupted
copy resume; `--mkpath` creates `~/.cache/huggingface/hub` on a fresh node. The command runs
ON the source node (a RemoteJob), pushing to the target's fabric address, so the bytes take
the 200G link and never pass through the machine running spark-control. Nodes must trust each
other for SSH (key in the target's authorized_keys, target's host key in the source's
known_hosts): an unknown host key fails the copy, it is never accepted blindly.
"""

from __future__ import annotations

from app.settings import NodeConfig
from app.shellsafe import quote_arg, quote_args, validate_hostname, validate_port
from app.weights_verify import HUB_DIR, repo_dirname

_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _remote_user(user: str) -> str:
    # From the settings, not the API; still checked, it becomes part of an ssh destination.
    if not user or user.startswith("-") or not set(user) <= _USER_CHARS:
        raise ValueError(f"SPARK user {user!r} is not a valid login name")
    return user


def rsync_command(repo_id: str, target: NodeConfig) -> str:
    """The command, run on the source node, that pushes the repo's cache dir to `target`."""
    dirname = repo_dirname(repo_id)
    host = validate_hostname(target.fabric_address, field=f"{target.name} fabric address")
    port = validate_port(target.port)
    ssh = quote_args(["ssh", "-p", port, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                      "-o", "ConnectTimeout=10"])
    destination = f"{_remote_user(target.user)}@{'[' + host + ']' if ':' in host else host}"
    remote_path = f"{destination}:.cache/huggingface/hub/{dirname}/"  # relative to the target user's home
    return ("rsync -a --partial --mkpath --info=progress2 --exclude='*.incomplete' -e "
            f"{quote_arg(ssh)} {HUB_DIR}/{quote_arg(dirname)}/ {quote_arg(remote_path)}")
