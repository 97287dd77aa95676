"""The model: a sentence-transformers directory loaded by path, on the GPU when there is one.

`encode()` is synchronous and meant for one worker thread (batching.py): it turns texts into
L2-normalised float32 vectors and counts the tokens the model saw, with the model's own
tokenizer (inputs longer than the model's max_seq_length are truncated to it, as
sentence-transformers does; the count is what was embedded).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("spark_embed")


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray        # (n, dim) float32, unit length
    tokens: list[int]          # per input


class Encoder:
    def __init__(self, model_path: Path, device: str = "auto", encode_batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")          # a path, never the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        started = time.monotonic()
        self.model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self.model.eval()
        self.device = device
        self.tokenizer = self.model.tokenizer
        self.dimensions = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                              else self.model.get_sentence_embedding_dimension())
        self.max_seq_length = int(self.model.max_seq_length)
        self.vocab_size = len(self.tokenizer)
        self.encode_batch_size = encode_batch_size
        self.encode(["warm-up"])  # first CUDA/CPU kernels here, not in a user's request
        log.info("loaded %s on %s in %.1f s: %d dimensions, max_seq_length %d", model_path, device,
                 time.monotonic() - started, self.dimensions, self.max_seq_length)

    def encode(self, texts: list[str]) -> Encoded:
        vectors = self.model.encode(texts, batch_size=self.encode_batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        counted = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length,
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        return Encoded(np.asarray(vectors, dtype=np.float32), [len(ids) for ids in counted])

    def decode(self, token_ids: list[int]) -> str:
        """Token ids of this model's vocabulary -> the text they spell (special tokens dropped), or
        ValueError naming the first id outside the vocabulary."""
        bad = next((t for t in token_ids if t >= self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside this model's vocabulary (0-{self.vocab_size - 1})")
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)
