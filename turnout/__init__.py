"""turnout: route and parallelize LLM workflows — on an embedded local model with no key, or any API.

The public API is re-exported here; implementation modules are private or live in subpackages
(``turnout.models``, ``turnout.policies``, ``turnout.testing``).
"""

from ._errors import AllModelsFailed as AllModelsFailed
from ._errors import AuthError as AuthError
from ._errors import BadResponse as BadResponse
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import ComplianceError as ComplianceError
from ._errors import ConfigError as ConfigError
from ._errors import DataClassNotAllowed as DataClassNotAllowed
from ._errors import InvalidRequest as InvalidRequest
from ._errors import MissingAPIKey as MissingAPIKey
from ._errors import ModelNotInstalled as ModelNotInstalled
from ._errors import ProviderError as ProviderError
from ._errors import ProviderTimeout as ProviderTimeout
from ._errors import ProviderUnavailable as ProviderUnavailable
from ._errors import RateLimited as RateLimited
from ._errors import TurnoutError as TurnoutError
from ._errors import UnknownModel as UnknownModel
from ._scope import spend_scope as spend_scope
from ._sync import run_sync as run_sync
from ._types import Completion as Completion
from ._types import Message as Message
from ._types import Price as Price
from ._types import Request as Request
from ._types import ResponseFormat as ResponseFormat
from ._types import StreamChunk as StreamChunk
from ._types import Usage as Usage
from .models import AnthropicModel as AnthropicModel
from .models import ChatModel as ChatModel
from .models import Embedder as Embedder
from .models import LocalEmbedder as LocalEmbedder
from .models import LocalLLM as LocalLLM
from .models import ModelSpec as ModelSpec
from .models import OpenAICompatible as OpenAICompatible
from .models import PolicySpec as PolicySpec
from .policies import Budget as Budget
from .policies import Budgeted as Budgeted
from .policies import BudgetLedger as BudgetLedger
from .policies import CallEvent as CallEvent
from .policies import DataPolicy as DataPolicy
from .policies import Detector as Detector
from .policies import Fallback as Fallback
from .policies import Limited as Limited
from .policies import MemorySink as MemorySink
from .policies import RateLimiter as RateLimiter
from .policies import Retrying as Retrying
from .policies import RetryPolicy as RetryPolicy
from .policies import SpendControl as SpendControl
from .policies import Traced as Traced
from .policies.catalog import Catalog as Catalog

__version__ = "0.1.0"

__all__ = [
    "AllModelsFailed",
    "AnthropicModel",
    "AuthError",
    "BadResponse",
    "Budget",
    "BudgetExceeded",
    "BudgetLedger",
    "Budgeted",
    "CallEvent",
    "Catalog",
    "ChatModel",
    "Completion",
    "ComplianceError",
    "ConfigError",
    "DataClassNotAllowed",
    "DataPolicy",
    "Detector",
    "Embedder",
    "Fallback",
    "InvalidRequest",
    "Limited",
    "LocalEmbedder",
    "LocalLLM",
    "MemorySink",
    "Message",
    "MissingAPIKey",
    "ModelNotInstalled",
    "ModelSpec",
    "OpenAICompatible",
    "PolicySpec",
    "Price",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RateLimiter",
    "Request",
    "ResponseFormat",
    "RetryPolicy",
    "Retrying",
    "SpendControl",
    "StreamChunk",
    "Traced",
    "TurnoutError",
    "UnknownModel",
    "Usage",
    "run_sync",
    "spend_scope",
]
