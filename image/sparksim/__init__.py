"""The DGX Spark node simulator: stand-ins for a Spark's `docker` and `nvidia-smi`.

Standard library only: these modules run as `/usr/bin/python3 -m sparksim.<tool>`
on a simulated node, as an unprivileged user, with PYTHONPATH pointing at a copy
of this package. Nothing here may import from `app`.
"""
