"""One exception hierarchy for cfexp.

    CfexpError                     anything cfexp raises on purpose
    ├── ConfigError                a composed config is invalid (before anything starts)
    ├── SetupError                 the environment cannot run the experiment
    │   ├── ServerStartError       a managed server did not become healthy
    │   ├── ServerUnreachableError an external server does not answer
    │   ├── ModelNotAvailableError the server lacks the model (e.g. not pulled)
    │   └── BuildError             an agent binary could not be built
    ├── ServerDiedError            a server instance exited while the job ran
    ├── AgentError                 the agent process crashed, timed out or wrote no records
    └── TrackingError              the tracking store cannot be used

Per-call failures are *data* (a call record with ``success: false``), never
exceptions. Messages say what failed, show the value as ``<key=value>``, and
say what to do.
"""

from __future__ import annotations


class CfexpError(Exception):
    """Base of every error cfexp raises on purpose."""


class ConfigError(CfexpError):
    """A composed configuration is invalid."""


class SetupError(CfexpError):
    """The environment cannot run the experiment as configured."""


class ServerStartError(SetupError):
    """A managed LLM server did not start or did not become healthy."""


class ServerUnreachableError(SetupError):
    """An external LLM server does not answer."""


class ModelNotAvailableError(SetupError):
    """The server does not have the requested model."""


class BuildError(SetupError):
    """An agent binary could not be built."""


class ServerDiedError(CfexpError):
    """A managed server instance exited while a job was using it."""


class AgentError(CfexpError):
    """The agent process crashed, timed out, or produced no records."""


class TrackingError(CfexpError):
    """The tracking store cannot be used."""
