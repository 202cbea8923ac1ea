"""Workflows: prompt chains with gates and orchestrator-workers (YAML workflows come later)."""

from .chain import Chain as Chain
from .chain import ChainResult as ChainResult
from .chain import Gate as Gate
from .chain import Step as Step
from .orchestrator import OrchestrationResult as OrchestrationResult
from .orchestrator import Orchestrator as Orchestrator
from .orchestrator import PlanError as PlanError
from .orchestrator import Subtask as Subtask

__all__ = [
    "Chain",
    "ChainResult",
    "Gate",
    "OrchestrationResult",
    "Orchestrator",
    "PlanError",
    "Step",
    "Subtask",
]
