"""spark-control: control plane and OpenAI-compatible gateway for DGX Spark clusters."""
