"""`hf` on a simulated DGX Spark: `hf download`, the subset spark-control uses.

Run as `python3 -m sparksim.hf_cli ARGS...`. Like huggingface_hub's CLI it writes the Hugging
Face cache layout under `--cache-dir` (default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`):

    models--org--name/blobs/<sha256 or git sha1>         the file contents
    models--org--name/blobs/<hash>.incomplete            while a file downloads (left on cancel)
    models--org--name/snapshots/<commit>/<file>          -> ../../blobs/<hash> (relative symlinks)
    models--org--name/refs/<revision>                    the commit, for a branch or tag

Progress goes to stderr as tqdm draws it (`\\r`-separated redraws, `\\n` when a bar closes):
"Fetching N files" for the files, then one bar per file in bytes, drawn with tqdm's Unicode
blocks (`|████▎     |`, three bytes each in UTF-8) when stderr takes UTF-8, as on a Spark,
`#` and digits otherwise; at the end the snapshot
path goes to stdout. That is the shape app/download_progress.py parses. Files the cache
already holds are not downloaded again. SIGTERM/SIGHUP end the download at once, leaving
the `.incomplete` blob, as the real CLI does when it is killed. Repos that fail on purpose:
see hf_repo.py.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
import time
from pathlib import Path

from . import hf_repo
from .cliflags import HelpRequested, UsageError, flags, parse

_USAGE = "Usage: hf download [OPTIONS] REPO_ID [FILENAMES]..."
# tqdm's bar characters: Unicode eighths of a block where the output takes them, else ASCII.
_UNICODE_BAR = " " + "".join(map(chr, range(0x258F, 0x2587, -1)))  # " ▏▎▍▌▋▊▉█"
_ASCII_BAR = " 123456789#"


def _sizeof(num: float) -> str:
    """tqdm.format_sizeof: three significant digits and an SI prefix."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(num) < 999.5:
            if abs(num) < 99.95:
                if abs(num) < 9.995:
                    return f"{num:1.2f}{unit}"
                return f"{num:2.1f}{unit}"
            return f"{num:3.0f}{unit}"
        num /= 1000
    return f"{num:3.1f}P"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def _bar(fraction: float, charset: str, width: int = 10) -> str:
    """tqdm's Bar: full cells, then one partial cell, then blanks."""
    steps = len(charset) - 1
    full, part = divmod(int(fraction * width * steps), steps)
    if full >= width:
        return charset[-1] * width
    return charset[-1] * full + charset[part] + charset[0] * (width - full - 1)


def _charset() -> str:
    """tqdm's choice: Unicode when the stream's encoding is UTF-8."""
    encoding = (getattr(sys.stderr, "encoding", None) or "").lower().replace("-", "")
    return _UNICODE_BAR if encoding == "utf8" else _ASCII_BAR


def bar_line(desc: str, n: float, total: float, elapsed: float, *, in_bytes: bool,
             charset: str | None = None) -> str:
    """One tqdm redraw: `desc:  42%|████▏     | 504k/1.20M [00:00<00:01, 1.01MB/s]`."""
    fraction = n / total if total else 1.0
    bar = _bar(min(max(fraction, 0.0), 1.0), charset or _charset())
    rate = n / elapsed if elapsed > 0 else 0.0
    if in_bytes:
        counts = f"{_sizeof(n)}/{_sizeof(total)}"
        rate_text = f"{_sizeof(rate)}B/s" if rate else "?B/s"
    else:
        counts = f"{int(n)}/{int(total)}"
        rate_text = f"{rate:5.2f}it/s" if rate else "?it/s"
    remaining = _clock((total - n) / rate) if rate else "?"
    return f"{desc}: {fraction * 100:3.0f}%|{bar}| {counts} [{_clock(elapsed)}<{remaining}, {rate_text}]"


def _draw(line: str, *, close: bool = False) -> None:
    sys.stderr.write("\r" + line + ("\n" if close else ""))
    sys.stderr.flush()


def _cache_dir(opts: dict) -> Path:
    if opts["cache_dir"]:
        return Path(opts["cache_dir"]).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _selected(files: list[hf_repo.RepoFile], names: list[str], include: list[str],
              exclude: list[str]) -> list[hf_repo.RepoFile]:
    """huggingface_hub's filter_repo_objects: fnmatch on the path; include first, then exclude."""
    chosen = [f for f in files if not names or f.name in names]
    if include:
        chosen = [f for f in chosen if any(fnmatch.fnmatch(f.name, p) for p in include)]
    return [f for f in chosen if not any(fnmatch.fnmatch(f.name, p) for p in exclude)]


def _fetch(file: hf_repo.RepoFile, blobs: Path, seconds: float) -> None:
    """Write the blob gradually as `<hash>.incomplete`, drawing its bar, then move it in place."""
    target = blobs / file.blob_name
    partial = target.with_name(target.name + ".incomplete")
    total = len(file.content)
    steps = max(1, int(seconds / 0.1))
    started = time.monotonic()
    with open(partial, "wb") as out:
        for step in range(1, steps + 1):
            end = total * step // steps
            out.write(file.content[out.tell():end])
            out.flush()
            time.sleep(seconds / steps)
            _draw(bar_line(file.name, end, total, time.monotonic() - started, in_bytes=True))
    _draw(bar_line(file.name, total, total, time.monotonic() - started, in_bytes=True), close=True)
    os.replace(partial, target)


def download(argv: list[str]) -> int:
    opts, args = parse(flags(("--revision", "revision", "value"), ("--include", "include", "list"),
                             ("--exclude", "exclude", "list"), ("--cache-dir", "cache_dir", "value"),
                             ("--repo-type", "repo_type", "value"), ("--token", "token", "value"),
                             ("--max-workers", "max_workers", "value"), ("--quiet", "quiet"),
                             ("--force-download", "force")), argv)
    if not args:
        raise UsageError("Missing argument 'REPO_ID'.")
    repo_id, names = args[0], args[1:]
    revision = opts["revision"] or "main"
    token = opts["token"] or os.environ.get("HF_TOKEN") or None
    try:
        commit = hf_repo.resolve(repo_id, revision, token)
    except hf_repo.HubError as exc:
        time.sleep(0.3)  # a real round trip to the Hub
        print(exc.message, file=sys.stderr)
        return 1
    repo_dir = _cache_dir(opts) / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    if revision != commit:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / revision.replace("/", "--")).write_text(commit)
    chosen = _selected(hf_repo.files(repo_id, commit), names, opts["include"], opts["exclude"])
    missing = [f for f in chosen if opts["force"] or not (blobs / f.blob_name).is_file()]
    seconds_per_byte = hf_repo.download_seconds(repo_id) / max(1, sum(len(f.content) for f in missing))
    started = time.monotonic()
    desc = f"Fetching {len(chosen)} files"
    done = len(chosen) - len(missing)
    _draw(bar_line(desc, done, len(chosen), 0.0, in_bytes=False))
    for file in chosen:
        if file in missing:
            _fetch(file, blobs, len(file.content) * seconds_per_byte)
            done += 1
            _draw(bar_line(desc, done, len(chosen), time.monotonic() - started, in_bytes=False))
        link = snapshot / file.name
        if not link.is_symlink():
            link.symlink_to(f"../../blobs/{file.blob_name}")
    _draw(bar_line(desc, len(chosen), len(chosen), time.monotonic() - started, in_bytes=False), close=True)
    print(snapshot, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Killed like the real CLI: at once, the .incomplete blob stays behind for a resume.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os._exit(128 + signum))
    if not argv or argv[0] in ("-h", "--help"):
        print("Usage: hf [OPTIONS] COMMAND [ARGS]...\n\nCommands:\n  download  Download files from the Hub.")
        return 0
    if argv[0] == "version":
        print("huggingface_hub version: 1.1.0 (sparksim)")
        return 0
    if argv[0] != "download":
        print(f"{_USAGE}\nTry 'hf -h' for help.\n\nError: No such command '{argv[0]}'.", file=sys.stderr)
        return 2
    try:
        return download(argv[1:])
    except HelpRequested:
        print(_USAGE)
        return 0
    except UsageError as exc:
        print(f"{_USAGE}\nTry 'hf download -h' for help.\n\nError: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
