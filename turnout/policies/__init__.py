"""Policies: ChatModels that wrap ChatModels (retry, rate limit, fallback, budget, trace), the one
``Ledger`` (budgets) and ``Limiter`` (rates) with their memory and Redis backends, and the Catalog."""

from .base import Wrapper as Wrapper
from .budget import Budgeted as Budgeted
from .compliance import ComplianceGate as ComplianceGate
from .compliance import Compliant as Compliant
from .compliance import DataPolicy as DataPolicy
from .compliance import Detector as Detector
from .fallback import Fallback as Fallback
from .ledger import BudgetLedger as BudgetLedger
from .ledger import Ledger as Ledger
from .ledger import MemoryAccounts as MemoryAccounts
from .ratelimit import Limited as Limited
from .ratelimit import Limiter as Limiter
from .ratelimit import MemoryBuckets as MemoryBuckets
from .ratelimit import RateLimiter as RateLimiter
from .retry import Retrying as Retrying
from .retry import RetryPolicy as RetryPolicy
from .retry import stop_after_attempt as stop_after_attempt
from .retry import stop_after_delay as stop_after_delay
from .retry import wait_exponential as wait_exponential
from .retry import wait_fixed as wait_fixed
from .retry import wait_random as wait_random
from .shared import RedisAccounts as RedisAccounts
from .shared import RedisBuckets as RedisBuckets
from .spend import Budget as Budget
from .spend import SpendControl as SpendControl
from .spend import spend_scope as spend_scope
from .trace import CallEvent as CallEvent
from .trace import MemorySink as MemorySink
from .trace import Traced as Traced

__all__ = [
    "Budget",
    "BudgetLedger",
    "Budgeted",
    "CallEvent",
    "ComplianceGate",
    "Compliant",
    "DataPolicy",
    "Detector",
    "Fallback",
    "Ledger",
    "Limited",
    "Limiter",
    "MemoryAccounts",
    "MemoryBuckets",
    "MemorySink",
    "RateLimiter",
    "RedisAccounts",
    "RedisBuckets",
    "RetryPolicy",
    "Retrying",
    "SpendControl",
    "Traced",
    "Wrapper",
    "spend_scope",
    "stop_after_attempt",
    "stop_after_delay",
    "wait_exponential",
    "wait_fixed",
    "wait_random",
]
