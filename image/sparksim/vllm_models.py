"""What the simulated vLLM knows about a model without downloading it: the memory its weights
take on a GB10, its architecture, native context length and KV cache cost per token.

`model_info(repo, quantization, dtype)` looks the Hugging Face repo up in `KNOWN` (case-
insensitive; a local path is matched on its last component) and otherwise estimates from the
name: the parameter count ("120b", "70B", "8x7B", "135M"; an "A22B" active count is ignored)
times the bytes per parameter of its precision (4-bit formats FP4/NVFP4/MXFP4/AWQ/GPTQ/INT4 about
0.56, FP8/INT8 about 1.03, gpt-oss MXFP4 0.55, bf16/fp16 2, fp32 4). `--quantization fp8` on a
bf16 model (online quantization) halves it. Figures are GB (10^9 bytes) of weights in memory.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple


class ModelInfo(NamedTuple):
    weights_gb: float  # whole model, all nodes together
    architecture: str
    max_model_len: int  # the model's native context length
    kv_kib_per_token: float  # K+V for all layers at 16-bit, whole model
    task: str = "generate"  # generate, embed or transcription
    known: bool = True


def _m(gb, arch, max_len, kv_kib, task="generate"):
    return ModelInfo(gb, arch, max_len, kv_kib, task)


KNOWN: dict[str, ModelInfo] = {
    # OpenAI gpt-oss (MXFP4 MoE weights)
    "openai/gpt-oss-120b": _m(65.0, "GptOssForCausalLM", 131072, 72),
    "openai/gpt-oss-20b": _m(13.8, "GptOssForCausalLM", 131072, 48),
    # Llama
    "meta-llama/llama-3.3-70b-instruct": _m(141.1, "LlamaForCausalLM", 131072, 320),
    "nvidia/llama-3.3-70b-instruct-fp4": _m(40.0, "LlamaForCausalLM", 131072, 320),
    "nvidia/llama-3.3-70b-instruct-fp8": _m(72.7, "LlamaForCausalLM", 131072, 320),
    "meta-llama/llama-3.1-8b-instruct": _m(16.1, "LlamaForCausalLM", 131072, 128),
    "nvidia/llama-3.1-8b-instruct-fp8": _m(9.1, "LlamaForCausalLM", 131072, 128),
    "nvidia/llama-3.1-8b-instruct-fp4": _m(6.0, "LlamaForCausalLM", 131072, 128),
    "deepseek-ai/deepseek-r1-distill-llama-70b": _m(141.1, "LlamaForCausalLM", 131072, 320),
    "deepseek-ai/deepseek-r1-distill-qwen-32b": _m(65.5, "Qwen2ForCausalLM", 131072, 256),
    "deepseek-ai/deepseek-r1-distill-qwen-7b": _m(15.2, "Qwen2ForCausalLM", 131072, 56),
    # Qwen3
    "qwen/qwen3-235b-a22b": _m(470.0, "Qwen3MoeForCausalLM", 40960, 188),
    "qwen/qwen3-235b-a22b-fp8": _m(236.0, "Qwen3MoeForCausalLM", 40960, 188),
    "qwen/qwen3-235b-a22b-instruct-2507": _m(470.0, "Qwen3MoeForCausalLM", 262144, 188),
    "qwen/qwen3-235b-a22b-instruct-2507-fp8": _m(236.0, "Qwen3MoeForCausalLM", 262144, 188),
    "qwen/qwen3-235b-a22b-gptq-int4": _m(125.0, "Qwen3MoeForCausalLM", 40960, 188),
    "nvidia/qwen3-235b-a22b-fp4": _m(133.0, "Qwen3MoeForCausalLM", 40960, 188),
    "nvidia/qwen3-235b-a22b-nvfp4": _m(133.0, "Qwen3MoeForCausalLM", 40960, 188),
    "qwen/qwen3-next-80b-a3b-instruct": _m(162.7, "Qwen3NextForCausalLM", 262144, 24),
    "qwen/qwen3-next-80b-a3b-instruct-fp8": _m(82.0, "Qwen3NextForCausalLM", 262144, 24),
    "qwen/qwen3-next-80b-a3b-thinking": _m(162.7, "Qwen3NextForCausalLM", 262144, 24),
    "qwen/qwen3-next-80b-a3b-thinking-fp8": _m(82.0, "Qwen3NextForCausalLM", 262144, 24),
    "qwen/qwen3-30b-a3b": _m(61.1, "Qwen3MoeForCausalLM", 40960, 96),
    "qwen/qwen3-30b-a3b-fp8": _m(32.5, "Qwen3MoeForCausalLM", 40960, 96),
    "qwen/qwen3-30b-a3b-instruct-2507": _m(61.1, "Qwen3MoeForCausalLM", 262144, 96),
    "qwen/qwen3-30b-a3b-instruct-2507-fp8": _m(32.5, "Qwen3MoeForCausalLM", 262144, 96),
    "qwen/qwen3-30b-a3b-thinking-2507": _m(61.1, "Qwen3MoeForCausalLM", 262144, 96),
    "qwen/qwen3-coder-30b-a3b-instruct": _m(61.1, "Qwen3MoeForCausalLM", 262144, 96),
    "qwen/qwen3-coder-30b-a3b-instruct-fp8": _m(32.5, "Qwen3MoeForCausalLM", 262144, 96),
    "nvidia/qwen3-30b-a3b-fp4": _m(18.0, "Qwen3MoeForCausalLM", 40960, 96),
    "qwen/qwen3-32b": _m(65.5, "Qwen3ForCausalLM", 40960, 256),
    "qwen/qwen3-32b-fp8": _m(34.5, "Qwen3ForCausalLM", 40960, 256),
    "qwen/qwen3-14b": _m(29.5, "Qwen3ForCausalLM", 40960, 160),
    "qwen/qwen3-8b": _m(16.4, "Qwen3ForCausalLM", 40960, 144),
    "qwen/qwen3-8b-fp8": _m(9.5, "Qwen3ForCausalLM", 40960, 144),
    "qwen/qwen3-4b": _m(8.05, "Qwen3ForCausalLM", 40960, 144),
    "qwen/qwen3-4b-instruct-2507": _m(8.05, "Qwen3ForCausalLM", 262144, 144),
    "qwen/qwen3-1.7b": _m(4.06, "Qwen3ForCausalLM", 40960, 112),
    "qwen/qwen3-0.6b": _m(1.5, "Qwen3ForCausalLM", 40960, 112),
    # NVIDIA Nemotron
    "nvidia/nvidia-nemotron-nano-9b-v2": _m(17.8, "NemotronHForCausalLM", 131072, 16),
    "nvidia/nvidia-nemotron-nano-9b-v2-fp8": _m(10.0, "NemotronHForCausalLM", 131072, 16),
    "nvidia/nvidia-nemotron-nano-9b-v2-nvfp4": _m(6.5, "NemotronHForCausalLM", 131072, 16),
    "nvidia/nvidia-nemotron-nano-12b-v2": _m(24.6, "NemotronHForCausalLM", 131072, 20),
    "nvidia/llama-3_3-nemotron-super-49b-v1_5": _m(99.7, "DeciLMForCausalLM", 131072, 200),
    "nvidia/llama-3_3-nemotron-super-49b-v1_5-fp8": _m(52.0, "DeciLMForCausalLM", 131072, 200),
    "nvidia/llama-3_3-nemotron-super-49b-v1_5-nvfp4": _m(29.0, "DeciLMForCausalLM", 131072, 200),
    # others people run on Sparks
    "google/gemma-3-27b-it": _m(54.9, "Gemma3ForConditionalGeneration", 131072, 100),
    "google/gemma-3-12b-it": _m(24.4, "Gemma3ForConditionalGeneration", 131072, 64),
    "mistralai/mistral-small-3.2-24b-instruct-2506": _m(48.0, "Mistral3ForConditionalGeneration", 131072, 160),
    "zai-org/glm-4.5-air": _m(221.0, "Glm4MoeForCausalLM", 131072, 184),
    "zai-org/glm-4.5-air-fp8": _m(113.0, "Glm4MoeForCausalLM", 131072, 184),
    "microsoft/phi-4": _m(29.3, "Phi3ForCausalLM", 16384, 200),
    "huggingfacetb/smollm2-135m-instruct": _m(0.27, "LlamaForCausalLM", 8192, 18),
    # embeddings and speech
    "qwen/qwen3-embedding-0.6b": _m(1.19, "Qwen3ForCausalLM", 32768, 112, "embed"),
    "qwen/qwen3-embedding-4b": _m(8.05, "Qwen3ForCausalLM", 32768, 144, "embed"),
    "qwen/qwen3-embedding-8b": _m(15.1, "Qwen3ForCausalLM", 32768, 144, "embed"),
    "baai/bge-m3": _m(2.27, "XLMRobertaModel", 8192, 96, "embed"),
    "intfloat/multilingual-e5-large-instruct": _m(2.24, "XLMRobertaModel", 514, 96, "embed"),
    "nomic-ai/nomic-embed-text-v1.5": _m(0.55, "NomicBertModel", 2048, 72, "embed"),
    "openai/whisper-large-v3": _m(3.09, "WhisperForConditionalGeneration", 448, 160, "transcription"),
    "openai/whisper-large-v3-turbo": _m(1.62, "WhisperForConditionalGeneration", 448, 160, "transcription"),
}

_FOUR_BIT = re.compile(r"(nv)?fp4|mxfp4|int4|awq|gptq|4bit|w4a16|w4a4|bnb-4|q4")
_EIGHT_BIT = re.compile(r"fp8|int8|w8a8|w8a16|8bit")
_FOUR_BIT_QUANT = {"awq", "awq_marlin", "gptq", "gptq_marlin", "gptq_bitblas", "modelopt_fp4", "mxfp4",
                   "bitsandbytes", "petit_nvfp4", "moe_wna16", "aqlm", "marlin", "hqq", "rtn", "auto-round"}
_EIGHT_BIT_QUANT = {"fp8", "fbgemm_fp8", "ptpc_fp8", "experts_int8", "modelopt", "compressed-tensors", "inc"}


def parameter_count_b(name: str) -> float | None:
    """Billions of parameters from a repo name: "Llama-3.3-70B" 70, "Qwen3-235B-A22B" 235,
    "Mixtral-8x7B" 56, "SmolLM2-135M" 0.135; None when the name does not say."""
    lowered = name.lower()
    moe = re.search(r"(?<![a-z0-9.])(\d+)x(\d+(?:\.\d+)?)b(?![a-z])", lowered)
    if moe:
        return int(moe.group(1)) * float(moe.group(2))
    for match in re.finditer(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([bm])(?![a-z])", lowered):
        value = float(match.group(1))
        return value if match.group(2) == "b" else value / 1000
    return None


def _architecture_guess(name: str) -> str:
    lowered = name.lower()
    for needle, arch in (("gpt-oss", "GptOssForCausalLM"), ("qwen3-next", "Qwen3NextForCausalLM"),
                         ("qwen3", "Qwen3ForCausalLM"), ("qwen2", "Qwen2ForCausalLM"),
                         ("gemma-3", "Gemma3ForConditionalGeneration"), ("mixtral", "MixtralForCausalLM"),
                         ("mistral", "MistralForCausalLM"), ("nemotron", "NemotronHForCausalLM"),
                         ("deepseek", "DeepseekV3ForCausalLM"), ("glm", "Glm4MoeForCausalLM"),
                         ("phi", "Phi3ForCausalLM"), ("whisper", "WhisperForConditionalGeneration")):
        if needle in lowered:
            return arch
    return "LlamaForCausalLM"


def _task_guess(name: str) -> str:
    lowered = name.lower()
    if any(word in lowered for word in ("embed", "bge-", "e5-", "minilm", "gte-")):
        return "embed"
    if "whisper" in lowered:
        return "transcription"
    return "generate"


def _lookup(repo: str) -> ModelInfo | None:
    key = repo.strip().rstrip("/").lower()
    if key in KNOWN:
        return KNOWN[key]
    tail = key.rsplit("/", 1)[-1]
    matches = [info for name, info in KNOWN.items() if name.rsplit("/", 1)[-1] == tail]
    return matches[0] if matches else None


def model_info(repo: str, quantization: str | None = None, dtype: str = "auto") -> ModelInfo:
    name = repo.rstrip("/").rsplit("/", 1)[-1].lower()
    info = _lookup(repo)
    if info is not None:
        already_quantized = bool(_FOUR_BIT.search(name) or _EIGHT_BIT.search(name) or "gpt-oss" in name)
        if quantization in _EIGHT_BIT_QUANT and not already_quantized:
            info = info._replace(weights_gb=round(info.weights_gb * 0.52, 2))
        elif quantization in _FOUR_BIT_QUANT and not already_quantized:
            info = info._replace(weights_gb=round(info.weights_gb * 0.29, 2))
        return info
    params = parameter_count_b(name)
    if _FOUR_BIT.search(name) or quantization in _FOUR_BIT_QUANT:
        bytes_per_param = 0.5625
    elif _EIGHT_BIT.search(name) or quantization in _EIGHT_BIT_QUANT:
        bytes_per_param = 1.03
    elif "gpt-oss" in name:
        bytes_per_param = 0.55
    elif dtype in ("float", "float32"):
        bytes_per_param = 4.0
    else:
        bytes_per_param = 2.0
    weights_gb = round((params if params is not None else 8.0) * bytes_per_param, 2)
    # KV cache grows roughly with the square root of the model size; 128 KiB/token for 8B.
    kv = round(128 * math.sqrt(max(params or 8.0, 0.1) / 8.0), 1)
    return ModelInfo(max(weights_gb, 0.05), _architecture_guess(name), 32768, kv, _task_guess(name), known=False)
