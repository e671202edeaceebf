"""Config schema (Hydra ConfigStore) and validation."""

from cfexp.config.schema import CfexpConfig, register_configs
from cfexp.config.validate import to_settings

__all__ = ["CfexpConfig", "register_configs", "to_settings"]
