"""Whether the compiled (mypyc) build of the detection modules can be used, and where it is.

Why compiled: a dense 1 KB text costs the structured finders a few dozen short regex passes and
Python loops; compiled by mypyc from these same sources (calls between the modules' functions
become C calls, loops and integers native), detection takes about a fifth less CPU. The build is
an optional speed-up, never a second implementation: `make venv` and the container image run
scripts/compile_native.py, which writes the extension modules and a manifest into `_native/`
beside this file. The package puts that folder first on its path only when the manifest names
these exact sources and this interpreter; a stale or foreign build is ignored (logged), and the
.py files run as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)

# Compiled together, in one shared library (calls between them stay in C). Not names.py: spaCy
# does its work, not Python.
COMPILED_MODULES = ("scan", "validators", "addresses", "structured", "detect")
# Read by mypy while compiling them: its annotations are checked at run time by the compiled
# detect (a NameFinder method that returned a tuple would fail there), so an edit to it makes a
# build stale too.
TYPED_DEPENDENCIES = ("names",)
GROUP = "app.redaction.detection"  # the shared library: _native/detection__mypyc<EXT_SUFFIX>
NATIVE_DIR = "_native"
MANIFEST = "manifest.json"
PURE_PYTHON_ENV = "SPARK_CONTROL_PURE_PYTHON"  # set to 1: ignore the compiled build


def manifest_for(package_dir: Path) -> dict[str, object]:
    """What a build of these sources for this interpreter records: a build matches it or is stale."""
    return {
        "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
        "cache_tag": sys.implementation.cache_tag,
        "sources": {
            m: hashlib.sha256((package_dir / f"{m}.py").read_bytes()).hexdigest()
            for m in COMPILED_MODULES + TYPED_DEPENDENCIES
        },
    }


def built_files() -> list[str]:
    """The extension modules a build holds: one per compiled module and the shared library."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return [f"{m}{suffix}" for m in COMPILED_MODULES] + [f"{GROUP.rsplit('.', 1)[1]}__mypyc{suffix}"]


def native_dir(package_dir: Path) -> str | None:
    """The folder of a compiled build of package_dir's detection modules that matches them, else None."""
    if os.environ.get(PURE_PYTHON_ENV, "0") not in ("", "0"):
        return None
    folder = package_dir / NATIVE_DIR
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None  # never built: the plain .py files, silently
    except (OSError, ValueError) as exc:
        log.warning("ignoring the compiled redaction detector in %s (%s): running the .py files", folder, exc)
        return None
    if recorded != manifest_for(package_dir) or not all((folder / f).is_file() for f in built_files()):
        log.warning(
            "ignoring the compiled redaction detector in %s: built from other sources or for another Python, "
            "or incomplete (rebuild: make venv, or python scripts/compile_native.py); running the .py files", folder,
        )
        return None
    return str(folder)
