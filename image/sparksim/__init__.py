"""The DGX Spark node simulator: stand-ins for a Spark's `docker` and `nvidia-smi`.

Standard library only: these modules run as `/usr/bin/python3 -m sparksim.<tool>`
on a simulated node, as an unprivileged user, with PYTHONPATH pointing at a copy
of this package. Nothing here may import from `app`. The one exception to "standard library
only" is the simulated vLLM's model (vllm_engine: llama-cpp-python), which runs under the
separate, world-readable sim venv ($SPARKSIM_VENV, docs/SIMULATOR.md).
"""
