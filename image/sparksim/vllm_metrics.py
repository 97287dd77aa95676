"""vLLM's Prometheus metrics (V1 engine names), rendered the way prometheus_client does.

Every series carries the labels engine="0" and model_name=<first served model name>, as vLLM's.
"""

from __future__ import annotations

import threading
import time

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
FINISH_REASONS = ("stop", "length", "abort")


def _token_buckets(max_model_len: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 series up to max_model_len."""
    buckets, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_model_len:
                return tuple(float(b) for b in buckets)
            buckets.append(value)
        exponent += 1


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


def _fmt(value: float) -> str:
    return repr(float(value)) if value not in (float("inf"),) else "+Inf"


class Metrics:
    def __init__(self, model_name: str, max_model_len: int, kv_capacity_tokens: int, cache_info: dict):
        self.lock = threading.Lock()
        self.model_name = model_name
        self.kv_capacity_tokens = max(1, kv_capacity_tokens)
        self.cache_info = cache_info
        self.created = time.time()
        self.running = 0
        self.waiting = 0
        self.active_tokens = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success = {reason: 0 for reason in FINISH_REASONS}
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)
        self.tpot = Histogram(TPOT_BUCKETS)
        self.queue_time = Histogram(E2E_BUCKETS)
        self.prompt_hist = Histogram(_token_buckets(max_model_len))
        self.generation_hist = Histogram(_token_buckets(max_model_len))
        self.max_tokens_hist = Histogram(_token_buckets(max_model_len))
        # for the periodic "Engine 000: Avg prompt throughput ..." log line
        self.interval_prompt = 0
        self.interval_generation = 0
        self.interval_active = False

    def kv_usage(self) -> float:
        return min(1.0, self.active_tokens / self.kv_capacity_tokens)

    def render(self) -> str:
        labels = f'engine="0",model_name="{self.model_name}"'
        out: list[str] = []

        def head(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        def counter(name: str, help_text: str, value: float, extra: str = "") -> None:
            head(name, "counter", help_text)
            out.append(f"{name}_total{{{labels}{extra}}} {_fmt(value)}")
            out.append(f"{name}_created{{{labels}{extra}}} {_fmt(self.created)}")

        def gauge(name: str, help_text: str, value: float) -> None:
            head(name, "gauge", help_text)
            out.append(f"{name}{{{labels}}} {_fmt(value)}")

        def histogram(name: str, help_text: str, hist: Histogram) -> None:
            head(name, "histogram", help_text)
            for bound, count in zip(hist.buckets, hist.counts):
                out.append(f'{name}_bucket{{{labels},le="{_fmt(bound)}"}} {_fmt(count)}')
            out.append(f'{name}_bucket{{{labels},le="+Inf"}} {_fmt(hist.n)}')
            out.append(f"{name}_count{{{labels}}} {_fmt(hist.n)}")
            out.append(f"{name}_sum{{{labels}}} {_fmt(hist.total)}")
            out.append(f"{name}_created{{{labels}}} {_fmt(self.created)}")

        with self.lock:
            gauge("vllm:num_requests_running", "Number of requests in model execution batches.", self.running)
            gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", self.waiting)
            gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", self.kv_usage())
            gauge("vllm:gpu_cache_usage_perc",
                  "GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
                  self.kv_usage())
            counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                    self.prefix_queries)
            counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                    self.prefix_hits)
            counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", 0)
            counter("vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens)
            counter("vllm:generation_tokens", "Number of generation tokens processed.", self.generation_tokens)
            head("vllm:request_success", "counter", "Count of successfully processed requests.")
            for reason in FINISH_REASONS:
                extra = f',finished_reason="{reason}"'
                out.append(f"vllm:request_success_total{{{labels}{extra}}} {_fmt(self.success[reason])}")
            for reason in FINISH_REASONS:
                extra = f',finished_reason="{reason}"'
                out.append(f"vllm:request_success_created{{{labels}{extra}}} {_fmt(self.created)}")
            histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", self.prompt_hist)
            histogram("vllm:request_generation_tokens", "Number of generation tokens processed.",
                      self.generation_hist)
            histogram("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.",
                      self.max_tokens_hist)
            histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                      self.ttft)
            histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
                      self.tpot)
            histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                      self.e2e)
            histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                      self.queue_time)
            head("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig")
            info = ",".join(f'{k}="{v}"' for k, v in sorted(self.cache_info.items()))
            out.append(f'vllm:cache_config_info{{{info},engine="0"}} 1.0')
        return "\n".join(out) + "\n"


class RequestTimer:
    """One request's life, reported into Metrics."""

    def __init__(self, metrics: Metrics, max_tokens: int | None):
        self.metrics = metrics
        self.arrived = time.monotonic()
        self.started: float | None = None
        self.first_token: float | None = None
        self.tokens = 0
        self.prompt_tokens = 0
        self.max_tokens = max_tokens
        with metrics.lock:
            metrics.waiting += 1

    def start(self, prompt_tokens: int) -> None:
        self.started = time.monotonic()
        self.prompt_tokens = prompt_tokens
        m = self.metrics
        with m.lock:
            m.waiting -= 1
            m.running += 1
            m.active_tokens += prompt_tokens
            m.prompt_tokens += prompt_tokens
            m.interval_prompt += prompt_tokens
            m.interval_active = True
            m.prefix_queries += prompt_tokens
            m.queue_time.observe(self.started - self.arrived)

    def token(self, count: int = 1) -> None:
        now = time.monotonic()
        if self.first_token is None:
            self.first_token = now
            with self.metrics.lock:
                self.metrics.ttft.observe(now - self.arrived)
        self.tokens += count
        with self.metrics.lock:
            self.metrics.generation_tokens += count
            self.metrics.interval_generation += count
            self.metrics.active_tokens += count

    def finish(self, finish_reason: str | None) -> None:
        now = time.monotonic()
        m = self.metrics
        with m.lock:
            if self.started is None:
                m.waiting -= 1
            else:
                m.running -= 1
                m.active_tokens -= self.prompt_tokens + self.tokens
            reason = finish_reason if finish_reason in FINISH_REASONS else "abort"
            m.success[reason] += 1
            m.e2e.observe(now - self.arrived)
            m.prompt_hist.observe(self.prompt_tokens)
            m.generation_hist.observe(self.tokens)
            if self.max_tokens is not None:
                m.max_tokens_hist.observe(self.max_tokens)
            if self.first_token is not None and self.tokens > 1:
                m.tpot.observe((now - self.first_token) / (self.tokens - 1))
