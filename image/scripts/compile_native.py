"""Compile the redaction detector's modules with mypyc into app/redaction/_native/ (see
app/redaction/native.py for why and how the build is picked up).

    python scripts/compile_native.py [--package-dir DIR] [--force]

A no-op when the build there matches the sources and this interpreter. Needs mypy (its mypyc),
setuptools and a C compiler with this Python's headers: `make venv` installs them (the dev extra,
build-essential). The package directory defaults to this checkout's app/redaction; the container
image passes the installed one. The new build replaces the old one only once it is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

IMAGE = Path(__file__).resolve().parents[1]


def _load_native(package_dir: Path):  # type: ignore[no-untyped-def]
    """app/redaction/native.py of the package being compiled, loaded alone (importing the package
    would load a compiled build if there is one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_spark_control_native", package_dir / "native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(package_dir: Path, force: bool = False) -> bool:
    """Compile package_dir's detection modules; False when the build there is already current."""
    native = _load_native(package_dir)
    out = package_dir / native.NATIVE_DIR
    expected = native.manifest_for(package_dir)
    try:
        if not force and json.loads((out / native.MANIFEST).read_text()) == expected:
            return False
    except (OSError, ValueError):
        pass

    from mypyc.build import mypycify  # imported here: only a build needs mypy
    from setuptools import setup

    with tempfile.TemporaryDirectory(prefix="spark-control-mypyc-") as tmp:
        # mypy reads a copy of the package's .py files alone: read in place (site-packages, in the
        # image) it would take every installed module beside "app" for a source of this build.
        root = Path(tmp, "src")
        copy = root / "app" / "redaction"
        copy.mkdir(parents=True)
        (root / "app" / "__init__.py").write_text("")
        for source in package_dir.glob("*.py"):
            shutil.copy2(source, copy / source.name)
        sources = [f"app/redaction/{m}.py" for m in native.COMPILED_MODULES]
        cwd = os.getcwd()
        os.chdir(root)  # mypyc names the modules after their paths from here: app.redaction.scan
        try:
            extensions = mypycify(
                ["--ignore-missing-imports", *sources], opt_level="3", group_name=native.GROUP,
                target_dir=os.path.join(tmp, "c"),
            )
            os.chdir(tmp)  # not beside a pyproject.toml, which setup() would read as this build's
            setup(
                name="spark-control-redaction-native",
                ext_modules=extensions,
                script_args=["-q", "build_ext", "--build-lib", os.path.join(tmp, "lib"),
                             "--build-temp", os.path.join(tmp, "obj")],
            )
        finally:
            os.chdir(cwd)
        built = Path(tmp, "lib", "app", "redaction")
        missing = [f for f in native.built_files() if not (built / f).is_file()]
        if missing:
            raise SystemExit(f"mypyc built no {', '.join(missing)} in {built}")
        # Filled beside the package, then renamed into place: a process that starts meanwhile finds
        # the old build, none, or the whole new one (never a manifest beside half-copied modules).
        new = package_dir / f"{native.NATIVE_DIR}.new"
        old = package_dir / f"{native.NATIVE_DIR}.old"
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
        new.mkdir()
        for name in native.built_files():
            shutil.copy2(built / name, new / name)
        (new / native.MANIFEST).write_text(json.dumps(expected, indent=1) + "\n")
        if out.exists():
            out.rename(old)
        new.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-dir", type=Path, default=IMAGE / "app" / "redaction")
    parser.add_argument("--force", action="store_true", help="rebuild even when the build is current")
    args = parser.parse_args()
    t0 = time.monotonic()
    if build(args.package_dir.resolve(), args.force):
        print(f"compiled the redaction detector with mypyc in {time.monotonic() - t0:.0f} s")
    else:
        print("the compiled redaction detector is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
