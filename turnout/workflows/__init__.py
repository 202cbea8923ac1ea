"""Workflows: YAML workflows compiled to node objects (``Workflow``), the runner, resumable batches,
prompt chains with gates and orchestrator-workers."""

from .chain import Chain as Chain
from .chain import ChainResult as ChainResult
from .chain import Gate as Gate
from .chain import Step as Step
from .nodes import Call as Call
from .nodes import Escalate as Escalate
from .nodes import GuardStep as GuardStep
from .nodes import OrchestrateStep as OrchestrateStep
from .nodes import RouteStep as RouteStep
from .nodes import RunContext as RunContext
from .nodes import SectionStep as SectionStep
from .nodes import Sequence as Sequence
from .nodes import StepGate as StepGate
from .nodes import VoteStep as VoteStep
from .nodes import WorkflowError as WorkflowError
from .orchestrator import OrchestrationResult as OrchestrationResult
from .orchestrator import Orchestrator as Orchestrator
from .orchestrator import PlanError as PlanError
from .orchestrator import Subtask as Subtask
from .runner import RunResult as RunResult
from .runner import Workflow as Workflow

__all__ = [
    "Call",
    "Chain",
    "ChainResult",
    "Escalate",
    "Gate",
    "GuardStep",
    "OrchestrateStep",
    "OrchestrationResult",
    "Orchestrator",
    "PlanError",
    "RouteStep",
    "RunContext",
    "RunResult",
    "SectionStep",
    "Sequence",
    "Step",
    "StepGate",
    "Subtask",
    "VoteStep",
    "Workflow",
    "WorkflowError",
]
