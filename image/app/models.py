"""The model catalog and the commands that launch its models: one import for the rest of the app.

    catalog.py       models.yaml + MODELS_YAML + MODELS_OVERRIDES -> Catalog (ConfigError names file/model/field)
    model_schema.py  ModelEntry and friends: the strict schema of one entry
    placement.py     Placement (nodes, head first) and resolve_placement("spark1+spark2" / "both")
    launch.py        LaunchOverrides, build_launch_command -> LaunchPlan of NodeCommands
    model_containers.py  container names and labels; stop / list commands and their parsing

Field reference, merge rules and the two-node recipe: docs/MODELS.md.
"""

from __future__ import annotations

from app.catalog import BUNDLED_MODELS_YAML, Catalog, load_catalog
from app.launch import (HF_CACHE_MOUNT, MASTER_PORT, LaunchOverrides, LaunchPlan, NodeCommand, build_launch_command,
                        endpoint_url)
from app.model_containers import (CONTAINER_PREFIX, HF_CACHE_LIST_COMMAND, LABEL_PREFIX, ManagedContainer,
                                  container_name, inspect_command, list_containers_command, logs_command,
                                  parse_container_list, parse_hf_cache_listing, remove_if_stopped_command,
                                  stop_command)
from app.model_schema import (DEFAULT_IMAGE, DEFAULT_PORT, FABRIC_ENV, GPU_MEMORY_UTILIZATION_MAX, MANAGED_FLAGS,
                              SECRET_ENV, CatalogDefaults, ModelEntry, NodeRange, VllmArgs)
from app.placement import Placement, resolve_placement

__all__ = [
    "BUNDLED_MODELS_YAML", "CONTAINER_PREFIX", "DEFAULT_IMAGE", "DEFAULT_PORT", "FABRIC_ENV",
    "GPU_MEMORY_UTILIZATION_MAX", "HF_CACHE_MOUNT", "LABEL_PREFIX", "MANAGED_FLAGS", "MASTER_PORT", "SECRET_ENV",
    "Catalog", "CatalogDefaults", "LaunchOverrides", "LaunchPlan", "ManagedContainer", "ModelEntry", "NodeCommand",
    "NodeRange", "Placement", "VllmArgs", "build_launch_command", "container_name", "list_containers_command",
    "load_catalog", "parse_container_list", "resolve_placement", "stop_command", "HF_CACHE_LIST_COMMAND",
    "inspect_command", "logs_command", "remove_if_stopped_command", "parse_hf_cache_listing", "endpoint_url",
]
