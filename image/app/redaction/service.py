"""The redaction service of one app: the map store, the detector and the one thread they run on.

Opened in the redaction router's lifespan, never at import. A store that cannot be opened
leaves `app.state.redaction_error` set to the reason: the redaction endpoints answer 503 with it while the
rest of spark-control works (the seed crashed at startup on a missing directory instead).

Detection (spaCy) and the store's writes are blocking and CPU-bound; they run on one worker
thread of this service: the event loop keeps relaying other streams meanwhile, detection is
never run concurrently on one model, and the store has its one writer by construction.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from app.redaction.detect import ENTITIES, DetectionFailed, Detector
from app.redaction.pseudonymize import Pseudonymized, pseudonymize
from app.redaction.store import RedactionStore, StoreUnavailable, load_key
from app.errors import ServiceUnavailable
from app.settings import Settings

log = logging.getLogger("spark_control.redaction")
T = TypeVar("T")


class RedactionFailed(ServiceUnavailable):
    """Detection or the store failed: the request must not be forwarded (503; 500 for a bug)."""

    code = "redaction_failed"


_detectors: dict[tuple, Detector] = {}
_detectors_lock = threading.Lock()


def shared_detector(entities: frozenset[str] | None = None, allowlist: tuple[str, ...] = (),
                    ner: bool = True) -> Detector:
    """One detector per configuration per process, made on first use: its NER model takes
    seconds to load and hundreds of MB, and every app of the process (tests start many) can share it."""
    key = (entities, allowlist, ner)
    with _detectors_lock:
        detector = _detectors.get(key)
        if detector is None:
            detector = _detectors[key] = Detector(entities=entities, allowlist=allowlist, ner=ner)
        return detector


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def detector_from(settings: Settings) -> Detector:
    """REDACTION_ENTITIES / REDACTION_ALLOWLIST / REDACTION_NER; a wrong entity is named."""
    entities = frozenset(e.upper() for e in _csv(settings.redaction_entities)) or None
    unknown = sorted((entities or frozenset()) - ENTITIES)
    if unknown:
        raise StoreUnavailable(f"environment variable REDACTION_ENTITIES names unknown entity types {unknown}; "
                               f"valid: {', '.join(sorted(ENTITIES))}")
    return shared_detector(entities, _csv(settings.redaction_allowlist), settings.redaction_ner)


def key_file_path(settings: Settings) -> Path:
    db = settings.redaction_map_db_path
    return settings.redaction_key_file or db.with_name(db.name + ".key")


class RedactionService:
    def __init__(self, store: RedactionStore, detector: Any) -> None:
        self.store = store
        self.detector = detector
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redaction")

    @classmethod
    def open(cls, settings: Settings, detector: Any | None = None) -> "RedactionService":
        """Raises StoreUnavailable with the reason (a bad key, an unwritable directory, an unknown entity)."""
        detector = detector if detector is not None else detector_from(settings)
        key = load_key(settings.redaction_key, key_file_path(settings))
        return cls(RedactionStore(settings.redaction_map_db_path, key, ttl_s=settings.redaction_ttl_s), detector)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def redact(self, texts: Sequence[str], conversation: str, entities: frozenset[str] | None = None) -> Pseudonymized:
        """Blocking: detect in every text at once (one batch, so a name found in one message is
        found in all), then assign tags. Any failure is RedactionFailed: nothing goes upstream."""
        texts = list(texts)
        try:
            spans = self.detector.detect_many(texts) if texts else []
        except DetectionFailed as exc:
            raise RedactionFailed(f"PII detection failed, so the request was not forwarded: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any detector bug must fail closed, never forward raw
            log.error("PII detection raised %s; request refused", type(exc).__name__)
            raise RedactionFailed("PII detection failed unexpectedly, so the request was not forwarded "
                                  f"({type(exc).__name__}).", status=500) from exc
        if len(spans) != len(texts):
            raise RedactionFailed(f"PII detection answered for {len(spans)} of {len(texts)} texts, so the request "
                                  "was not forwarded.", status=500)
        if entities is not None:
            spans = [[span for span in text_spans if span.entity in entities] for text_spans in spans]
        try:
            return pseudonymize(texts, spans, self.store, conversation)
        except Exception as exc:  # noqa: BLE001 - sqlite, disk full...: the map must be written first
            log.error("redaction map store failed: %s", type(exc).__name__)
            raise RedactionFailed(f"The redaction map DB could not record the placeholders "
                                  f"({type(exc).__name__}), so the request was not forwarded.") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()


def open_service(settings: Settings) -> tuple[RedactionService | None, str | None]:
    """(service, None), or (None, why not) when the map DB cannot be used."""
    try:
        return RedactionService.open(settings), None
    except StoreUnavailable as exc:
        log.warning("redaction gateway unavailable: %s", exc)
        return None, str(exc)
