"""Reversible PII pseudonymization for the redaction gateway (app/redaction_gateway.py).

detect: finds the values; placeholders: the one tag grammar; store: the encrypted map DB;
restore: tags back to originals, streamed or not; payload/sse: the OpenAI request and response
shapes walked. Nothing is created at import time.

The detection modules (native.COMPILED_MODULES) are loaded from their mypyc build when one
matching these sources exists (native.py): it must be on the package's path before any of them
is imported, so here.
"""

from pathlib import Path

from .native import native_dir

_compiled_dir = native_dir(Path(__file__).resolve().parent)
if _compiled_dir is not None:
    __path__.insert(0, _compiled_dir)
COMPILED: bool = _compiled_dir is not None
