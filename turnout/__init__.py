"""turnout: route and parallelize LLM workflows — on an embedded local model with no key, or any API.

The headline names are here::

    from turnout import Workflow, SemanticRouter, vote, fan_out, open_store

Everything else lives in its sub-package: ``turnout.models`` (adapters, value types),
``turnout.policies`` (retry, limits, fallback, budgets, tracing), ``turnout.routing``,
``turnout.parallel``, ``turnout.workflows``, ``turnout.store``, ``turnout.errors`` (the whole
error tree) and ``turnout.testing`` (fakes and the mock server).
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import ComplianceError as ComplianceError
from ._errors import ConfigError as ConfigError
from ._errors import ProviderError as ProviderError
from ._errors import TurnoutError as TurnoutError
from ._sync import run_sync as run_sync
from ._types import Completion as Completion
from ._types import Message as Message
from ._types import Price as Price
from ._types import Request as Request
from ._types import ResponseFormat as ResponseFormat
from .models import AnthropicModel as AnthropicModel
from .models import ChatModel as ChatModel
from .models import LocalEmbedder as LocalEmbedder
from .models import LocalLLM as LocalLLM
from .models import ModelSpec as ModelSpec
from .models import OpenAICompatible as OpenAICompatible
from .models import OpenAIEmbedder as OpenAIEmbedder
from .policies import Budget as Budget
from .policies import SpendControl as SpendControl
from .policies.catalog import Catalog as Catalog

if _TYPE_CHECKING:
    from .parallel import fan_out as fan_out
    from .parallel import run_sections as run_sections
    from .parallel import vote as vote
    from .routing import ModelRouter as ModelRouter
    from .routing import Route as Route
    from .routing import RuleRouter as RuleRouter
    from .routing import SemanticRouter as SemanticRouter
    from .store import open_store as open_store
    from .workflows import Workflow as Workflow

__version__ = "0.1.0"

__all__ = [
    "AnthropicModel",
    "Budget",
    "BudgetExceeded",
    "Catalog",
    "ChatModel",
    "Completion",
    "ComplianceError",
    "ConfigError",
    "LocalEmbedder",
    "LocalLLM",
    "Message",
    "ModelRouter",
    "ModelSpec",
    "OpenAICompatible",
    "OpenAIEmbedder",
    "Price",
    "ProviderError",
    "Request",
    "ResponseFormat",
    "Route",
    "RuleRouter",
    "SemanticRouter",
    "SpendControl",
    "TurnoutError",
    "Workflow",
    "fan_out",
    "open_store",
    "run_sections",
    "run_sync",
    "vote",
]

# where the names that left the top level live now (a clear error instead of a bare AttributeError)
_MOVED = {
    **{n: "turnout.errors" for n in ("AllModelsFailed", "AuthError", "BadResponse", "DataClassNotAllowed", "InvalidRequest",
                                      "MissingAPIKey", "ModelNotInstalled", "ProviderTimeout", "ProviderUnavailable", "RateLimited",
                                      "UnknownModel")},
    **{n: "turnout.models" for n in ("Embedder", "PolicySpec", "StreamChunk", "Usage")},
    **{n: "turnout.policies" for n in ("Budgeted", "BudgetLedger", "CallEvent", "DataPolicy", "Detector", "Fallback", "Limited",
                                        "MemorySink", "RateLimiter", "Retrying", "RetryPolicy", "Traced", "spend_scope")},
}


# headline names of the heavier sub-packages, imported when first used: ``import turnout`` stays
# as light as the model layer (a bigger module graph makes every full GC pass of a server slower)
_LAZY = {"fan_out": "parallel", "run_sections": "parallel", "vote": "parallel", "ModelRouter": "routing", "Route": "routing",
         "RuleRouter": "routing", "SemanticRouter": "routing", "open_store": "store", "Workflow": "workflows"}


def __getattr__(name: str) -> _Any:
    sub = _LAZY.get(name)
    if sub is not None:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{sub}"), name)
        globals()[name] = value
        return value
    home = _MOVED.get(name)
    if home is not None:
        raise AttributeError(f"turnout.{name} is not a top-level name: from {home} import {name}")
    raise AttributeError(f"module 'turnout' has no attribute {name!r}")
