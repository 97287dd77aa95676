"""The `vllm` command line as the simulated vLLM parses it: `vllm serve [model_tag] [options]`.

Strict like the real one (argparse, abbreviations off): an unknown flag ends the program
with vLLM's usage line, `vllm: error: unrecognized arguments: --foo` and exit status 2;
a bad value with `vllm serve: error: argument --port: invalid int value: 'x'`. Like vLLM's
FlexibleArgumentParser, `--max_model_len` is read as `--max-model-len`.

The flag list follows `vllm serve --help` of vLLM 0.10/0.11 (the NGC 25.09-25.11 images):
the frontend, model, load, cache, parallel, scheduler and observability groups. Flags that
take JSON or free text are accepted as strings; flags with a fixed set of values are
checked against it.
"""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"  # what `vllm serve` loads when given no model

SUBCOMMANDS = ("chat", "complete", "serve", "bench", "collect-env", "run-batch")

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc")
QUANTIZATIONS = (
    "aqlm", "awq", "deepspeedfp", "tpu_int8", "fp8", "ptpc_fp8", "fbgemm_fp8", "modelopt", "modelopt_fp4",
    "marlin", "bitblas", "gguf", "gptq_marlin_24", "gptq_marlin", "gptq_bitblas", "awq_marlin", "gptq",
    "compressed-tensors", "bitsandbytes", "qqq", "hqq", "experts_int8", "neuron_quant", "ipex", "quark",
    "moe_wna16", "torchao", "auto-round", "rtn", "inc", "mxfp4", "petit_nvfp4",
)
TOOL_CALL_PARSERS = (
    "deepseek_v3", "deepseek_v31", "glm45", "granite-20b-fc", "granite", "hermes", "hunyuan_a13b", "internlm",
    "jamba", "kimi_k2", "llama3_json", "llama4_json", "llama4_pythonic", "longcat", "minimax", "mistral",
    "openai", "phi4_mini_json", "pythonic", "qwen3_coder", "qwen3_xml", "seed_oss", "step3", "xlam",
)
REASONING_PARSERS = (
    "deepseek_r1", "deepseek_v3", "ernie45", "glm45", "gpt_oss", "openai_gptoss", "granite", "hunyuan_a13b",
    "mistral", "qwen3", "seed_oss", "step3",
)
TASKS = ("auto", "generate", "embedding", "embed", "classify", "score", "reward", "transcription", "draft")
RUNNERS = ("auto", "generate", "pooling", "draft")
CONVERTS = ("auto", "none", "embed", "classify", "reward")
EXECUTOR_BACKENDS = ("ray", "mp", "uni", "external_launcher")

# (flags, kind, default, choices). kind: str, int, float, bool (--x / --no-x), flag (--x only),
# list (nargs="+").
_OPTIONS: list[tuple[str, str, object, tuple | None]] = [
    # frontend
    ("--host", "str", None, None),
    ("--port", "int", 8000, None),
    ("--uds", "str", None, None),
    ("--uvicorn-log-level", "str", "info", ("critical", "debug", "error", "info", "trace", "warning")),
    ("--disable-uvicorn-access-log", "bool", False, None),
    ("--allow-credentials", "bool", False, None),
    ("--allowed-origins", "str", None, None),
    ("--allowed-methods", "str", None, None),
    ("--allowed-headers", "str", None, None),
    ("--api-key", "str", None, None),
    ("--lora-modules", "list", None, None),
    ("--chat-template", "str", None, None),
    ("--chat-template-content-format", "str", "auto", ("auto", "string", "openai")),
    ("--trust-request-chat-template", "bool", False, None),
    ("--response-role", "str", "assistant", None),
    ("--ssl-keyfile", "str", None, None),
    ("--ssl-certfile", "str", None, None),
    ("--ssl-ca-certs", "str", None, None),
    ("--enable-ssl-refresh", "bool", False, None),
    ("--ssl-cert-reqs", "int", 0, None),
    ("--root-path", "str", None, None),
    ("--middleware", "str", None, None),
    ("--return-tokens-as-token-ids", "bool", False, None),
    ("--disable-frontend-multiprocessing", "bool", False, None),
    ("--enable-request-id-headers", "bool", False, None),
    ("--enable-auto-tool-choice", "bool", False, None),
    ("--exclude-tools-when-tool-choice-none", "bool", False, None),
    ("--tool-call-parser", "str", None, None),  # checked after parsing, as vLLM does
    ("--tool-parser-plugin", "str", "", None),
    ("--tool-server", "str", None, None),
    ("--log-config-file", "str", None, None),
    ("--max-log-len", "int", None, None),
    ("--disable-fastapi-docs", "bool", False, None),
    ("--enable-prompt-tokens-details", "bool", False, None),
    ("--enable-server-load-tracking", "bool", False, None),
    ("--enable-force-include-usage", "bool", False, None),
    ("--enable-tokenizer-info-endpoint", "bool", False, None),
    ("--enable-log-outputs", "bool", False, None),
    ("--h11-max-incomplete-event-size", "int", 4194304, None),
    ("--h11-max-header-count", "int", 256, None),
    ("--log-error-stack", "bool", False, None),
    ("--headless", "flag", False, None),
    ("--api-server-count -asc", "int", 1, None),
    ("--config", "str", None, None),
    ("--disable-log-stats", "flag", False, None),
    ("--enable-log-requests", "bool", False, None),
    ("--disable-log-requests", "bool", True, None),
    # model
    ("--model", "str", None, None),
    ("--runner", "str", "auto", RUNNERS),
    ("--convert", "str", "auto", CONVERTS),
    ("--task", "str", None, TASKS),
    ("--tokenizer", "str", None, None),
    ("--tokenizer-mode", "str", "auto", ("auto", "slow", "mistral", "custom")),
    ("--trust-remote-code", "bool", False, None),
    ("--dtype", "str", "auto", DTYPES),
    ("--seed", "int", None, None),
    ("--hf-config-path", "str", None, None),
    ("--allowed-local-media-path", "str", "", None),
    ("--allowed-media-domains", "list", None, None),
    ("--revision", "str", None, None),
    ("--code-revision", "str", None, None),
    ("--rope-scaling", "str", None, None),
    ("--rope-theta", "float", None, None),
    ("--tokenizer-revision", "str", None, None),
    ("--max-model-len", "str", None, None),  # vLLM takes 32768, 32k, 1m, ...
    ("--quantization -q", "str", None, QUANTIZATIONS),
    ("--enforce-eager", "bool", False, None),
    ("--max-seq-len-to-capture", "int", 8192, None),
    ("--max-logprobs", "int", 20, None),
    ("--logprobs-mode", "str", "raw_logprobs",
     ("raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits")),
    ("--disable-sliding-window", "bool", False, None),
    ("--disable-cascade-attn", "bool", False, None),
    ("--skip-tokenizer-init", "bool", False, None),
    ("--enable-prompt-embeds", "bool", False, None),
    ("--served-model-name", "list", None, None),
    ("--config-format", "str", "auto", ("auto", "hf", "mistral")),
    ("--hf-token", "str", None, None),
    ("--hf-overrides", "str", None, None),
    ("--pooler-config", "str", None, None),
    ("--override-pooler-config", "str", None, None),
    ("--logits-processor-pattern", "str", None, None),
    ("--generation-config", "str", "auto", None),
    ("--override-generation-config", "str", None, None),
    ("--enable-sleep-mode", "bool", False, None),
    ("--model-impl", "str", "auto", ("auto", "vllm", "transformers", "terratorch")),
    ("--override-attention-dtype", "str", None, None),
    ("--logits-processors", "list", None, None),
    ("--io-processor-plugin", "str", None, None),
    # load
    ("--load-format", "str", "auto", None),  # plugins register their own formats: any name
    ("--download-dir", "str", None, None),
    ("--safetensors-load-strategy", "str", "lazy", None),
    ("--model-loader-extra-config", "str", None, None),
    ("--ignore-patterns", "list", None, None),
    ("--use-tqdm-on-load", "bool", True, None),
    ("--pt-load-map-location", "str", "cpu", None),
    # decoding
    ("--guided-decoding-backend", "str", "auto", ("auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer")),
    ("--guided-decoding-disable-fallback", "bool", False, None),
    ("--guided-decoding-disable-any-whitespace", "bool", False, None),
    ("--guided-decoding-disable-additional-properties", "bool", False, None),
    ("--reasoning-parser", "str", None, REASONING_PARSERS),
    ("--structured-outputs-config", "str", None, None),
    # parallel
    ("--distributed-executor-backend", "str", None, EXECUTOR_BACKENDS),
    ("--pipeline-parallel-size -pp", "int", 1, None),
    ("--tensor-parallel-size -tp", "int", 1, None),
    ("--decode-context-parallel-size -dcp", "int", 1, None),
    ("--data-parallel-size -dp", "int", 1, None),
    ("--data-parallel-rank -dpn", "int", None, None),
    ("--data-parallel-start-rank -dpr", "int", None, None),
    ("--data-parallel-size-local -dpl", "int", None, None),
    ("--data-parallel-address -dpa", "str", None, None),
    ("--data-parallel-rpc-port -dpp", "int", None, None),
    ("--data-parallel-backend -dpb", "str", "mp", ("mp", "ray")),
    ("--data-parallel-hybrid-lb", "bool", False, None),
    ("--data-parallel-external-lb", "bool", False, None),
    ("--enable-expert-parallel", "bool", False, None),
    ("--enable-dbo", "bool", False, None),
    ("--enable-eplb", "bool", False, None),
    ("--eplb-config", "str", None, None),
    ("--num-redundant-experts", "int", None, None),
    ("--max-parallel-loading-workers", "int", None, None),
    ("--ray-workers-use-nsight", "bool", False, None),
    ("--disable-custom-all-reduce", "bool", False, None),
    ("--worker-cls", "str", "auto", None),
    ("--worker-extension-cls", "str", "", None),
    ("--enable-multimodal-encoder-data-parallel", "bool", False, None),
    ("--nnodes", "int", 1, None),
    ("--node-rank", "int", 0, None),
    ("--master-addr", "str", "127.0.0.1", None),
    ("--master-port", "int", 29501, None),
    # cache
    ("--block-size", "int", None, (1, 8, 16, 32, 64, 128)),
    ("--gpu-memory-utilization", "float", 0.9, None),
    ("--kv-cache-memory", "int", None, None),
    ("--swap-space", "float", 4.0, None),
    ("--kv-cache-dtype", "str", "auto", KV_CACHE_DTYPES),
    ("--num-gpu-blocks-override", "int", None, None),
    ("--enable-prefix-caching", "bool", None, None),
    ("--prefix-caching-hash-algo", "str", "sha256", ("sha256", "sha256_cbor", "builtin")),
    ("--cpu-offload-gb", "float", 0.0, None),
    ("--calculate-kv-scales", "bool", False, None),
    ("--kv-sharing-fast-prefill", "bool", False, None),
    ("--mamba-cache-dtype", "str", "auto", ("auto", "float32")),
    ("--mamba-ssm-cache-dtype", "str", "auto", ("auto", "float32")),
    # multimodal
    ("--limit-mm-per-prompt", "str", None, None),
    ("--media-io-kwargs", "str", None, None),
    ("--mm-processor-kwargs", "str", None, None),
    ("--mm-processor-cache-gb", "float", 4.0, None),
    ("--disable-mm-preprocessor-cache", "bool", False, None),
    ("--mm-encoder-tp-mode", "str", "weights", ("weights", "data")),
    ("--interleave-mm-strings", "bool", False, None),
    ("--skip-mm-profiling", "bool", False, None),
    # LoRA
    ("--enable-lora", "bool", False, None),
    ("--enable-lora-bias", "bool", False, None),
    ("--max-loras", "int", 1, None),
    ("--max-lora-rank", "int", 16, None),
    ("--lora-extra-vocab-size", "int", 256, None),
    ("--lora-dtype", "str", "auto", None),
    ("--max-cpu-loras", "int", None, None),
    ("--fully-sharded-loras", "bool", False, None),
    ("--default-mm-loras", "str", None, None),
    # observability
    ("--show-hidden-metrics-for-version", "str", None, None),
    ("--otlp-traces-endpoint", "str", None, None),
    ("--collect-detailed-traces", "list", None, None),
    # scheduler
    ("--max-num-batched-tokens", "int", None, None),
    ("--max-num-seqs", "int", None, None),
    ("--max-num-partial-prefills", "int", 1, None),
    ("--max-long-partial-prefills", "int", 1, None),
    ("--cuda-graph-sizes", "list", None, None),
    ("--long-prefill-token-threshold", "int", 0, None),
    ("--num-lookahead-slots", "int", 0, None),
    ("--scheduling-policy", "str", "fcfs", ("fcfs", "priority")),
    ("--enable-chunked-prefill", "bool", None, None),
    ("--disable-chunked-mm-input", "bool", False, None),
    ("--scheduler-cls", "str", None, None),
    ("--disable-hybrid-kv-cache-manager", "bool", False, None),
    ("--async-scheduling", "bool", False, None),
    # speculative decoding, compilation, KV transfer
    ("--speculative-config", "str", None, None),
    ("--compilation-config -O", "str", None, None),
    ("--kv-transfer-config", "str", None, None),
    ("--kv-events-config", "str", None, None),
    ("--additional-config", "str", None, None),
]


def _normalize(argv: list[str]) -> list[str]:
    """FlexibleArgumentParser: `--max_model_len` is `--max-model-len` (the value is untouched)."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            out.append(name.replace("_", "-") + eq + value)
        else:
            out.append(arg)
    return out


def _add_options(parser: argparse.ArgumentParser) -> None:
    for names, kind, default, choices in _OPTIONS:
        flags = names.split()
        kw: dict = {"default": default}
        if choices is not None:
            kw["choices"] = choices
        if kind == "int":
            kw["type"] = int
        elif kind == "float":
            kw["type"] = float
        elif kind == "list":
            kw["nargs"] = "+"
        elif kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind == "flag":
            kw["action"] = "store_true"
        parser.add_argument(*flags, **kw)


def build_parser(prog: str = "vllm") -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level `vllm` parser and its `serve` subparser (unknown flags are reported by
    the top-level parser, as with the real CLI)."""
    top = argparse.ArgumentParser(prog=prog, allow_abbrev=False, description="vLLM CLI")
    top.add_argument("-v", "--version", action="store_true")
    sub = top.add_subparsers(dest="subparser", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    serve = sub.add_parser("serve", usage="vllm serve [model_tag] [options]", allow_abbrev=False,
                           help="Start the vLLM OpenAI Compatible API server.")
    serve.add_argument("model_tag", nargs="?", default=None)
    _add_options(serve)
    for name in SUBCOMMANDS:
        if name != "serve":
            other = sub.add_parser(name, allow_abbrev=False)
            other.add_argument("rest", nargs=argparse.REMAINDER)
    return top, serve


def api_server_parser() -> argparse.ArgumentParser:
    """`python3 -m vllm.entrypoints.openai.api_server --model X ...` (the pre-`vllm serve` entry point)."""
    parser = argparse.ArgumentParser(prog="api_server.py", allow_abbrev=False,
                                     description="vLLM OpenAI-Compatible RESTful API server.")
    _add_options(parser)
    parser.set_defaults(model_tag=None)
    return parser


class CliError(Exception):
    """A mistake vLLM reports after argparse (e.g. an unknown tool-call parser): not exit 2."""


def finish(args: argparse.Namespace) -> argparse.Namespace:
    """vLLM's own checks after argparse, and the derived values the simulator uses."""
    args.model = args.model_tag or args.model or DEFAULT_MODEL  # the positional one wins, as in vLLM
    args.served_model_name = args.served_model_name or [args.model]
    if args.enable_auto_tool_choice and not args.tool_call_parser:
        raise CliError('TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser')
    if args.tool_call_parser and args.tool_call_parser not in TOOL_CALL_PARSERS and not args.tool_parser_plugin:
        raise CliError(f"KeyError: 'invalid tool call parser: {args.tool_call_parser} "
                       f"(chose from {{ {','.join(TOOL_CALL_PARSERS)} }})'")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise CliError("ValueError: GPU memory utilization must be less than 1.0. Got "
                       f"{args.gpu_memory_utilization}.")
    if args.max_model_len is not None:
        args.max_model_len = parse_token_count(args.max_model_len)
    if args.headless and args.nnodes == 1:
        raise CliError("ValueError: --headless is for the non-head nodes of a multi-node launch "
                       "(--nnodes N --node-rank r with r >= 1)")
    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        raise CliError(f"ValueError: node_rank ({args.node_rank}) must be in [0, nnodes) (nnodes={args.nnodes})")
    return args


def parse_token_count(text: str) -> int:
    """vLLM's human-readable integers: 32768, 32k, 32K (x1024), 1m, 1M, 25.6k."""
    value = str(text).strip()
    units = {"k": 1000, "m": 1000**2, "g": 1000**3, "K": 1024, "M": 1024**2, "G": 1024**3}
    if value and value[-1] in units:
        try:
            return int(float(value[:-1]) * units[value[-1]])
        except ValueError:
            pass
    elif value.lstrip("-").isdigit():
        return int(value)
    raise CliError(f"argument --max-model-len: invalid value: '{text}'")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse what follows `vllm` on the command line; argparse exits 2 on a mistake.

    Returns a namespace with `subparser` ("serve", ...) and, for serve, the options.
    """
    top, _serve = build_parser()
    args = top.parse_args(_normalize(argv))
    return args


def parse_api_server(argv: list[str]) -> argparse.Namespace:
    args = api_server_parser().parse_args(_normalize(argv))
    args.subparser = "serve"
    args.version = False
    return args


def non_default_args(args: argparse.Namespace) -> dict:
    """What vLLM logs as "non-default args: {...}"."""
    _, serve = build_parser()
    defaults = {action.dest: action.default for action in serve._actions}
    skip = {"help", "subparser", "version"}
    out = {}
    for key, value in vars(args).items():
        if key in skip or key not in defaults:
            continue
        if key == "served_model_name" and value == [args.model]:
            continue
        if key == "model" and args.model_tag:
            out[key] = value
            continue
        if value != defaults[key]:
            out[key] = value
    return out
