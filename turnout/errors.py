"""The error tree (drawn in ``turnout._errors``): every error turnout raises, for ``except`` clauses.

``from turnout.errors import ProviderUnavailable``; the five most caught are also at the top level
(``TurnoutError``, ``ConfigError``, ``ProviderError``, ``BudgetExceeded``, ``ComplianceError``)."""


from ._errors import AllModelsFailed as AllModelsFailed
from ._errors import AuthError as AuthError
from ._errors import BadResponse as BadResponse
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import ComplianceError as ComplianceError
from ._errors import ConfigError as ConfigError
from ._errors import ContextLengthExceeded as ContextLengthExceeded
from ._errors import DataClassNotAllowed as DataClassNotAllowed
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import InvalidRequest as InvalidRequest
from ._errors import LimitExceeded as LimitExceeded
from ._errors import MissingAPIKey as MissingAPIKey
from ._errors import ModelNotInstalled as ModelNotInstalled
from ._errors import ProviderError as ProviderError
from ._errors import ProviderTimeout as ProviderTimeout
from ._errors import ProviderUnavailable as ProviderUnavailable
from ._errors import QueueError as QueueError
from ._errors import RateLimited as RateLimited
from ._errors import ToolsNotSupported as ToolsNotSupported
from ._errors import TurnoutError as TurnoutError
from ._errors import UnknownModel as UnknownModel

__all__ = ["AllModelsFailed", "AuthError", "BadResponse", "BudgetExceeded", "ComplianceError", "ConfigError", "ContextLengthExceeded", "DataClassNotAllowed", "DeadlineExceeded", "InvalidRequest", "LimitExceeded", "MissingAPIKey", "ModelNotInstalled", "ProviderError", "ProviderTimeout", "ProviderUnavailable", "QueueError", "RateLimited", "ToolsNotSupported", "TurnoutError", "UnknownModel"]
