"""Workflows: YAML workflows compiled to node objects (``Workflow``), the runner, resumable batches,
prompt chains with gates and orchestrator-workers."""

from .chain import Chain as Chain
from .chain import ChainResult as ChainResult
from .chain import Gate as Gate
from .chain import Step as Step
from .context import RunContext as RunContext
from .context import WorkflowError as WorkflowError
from .nodes import Call as Call
from .nodes import Escalate as Escalate
from .nodes import GuardStep as GuardStep
from .nodes import OrchestrateStep as OrchestrateStep
from .nodes import RouteStep as RouteStep
from .nodes import SectionStep as SectionStep
from .nodes import VoteStep as VoteStep
from .orchestrator import OrchestrationResult as OrchestrationResult
from .orchestrator import Orchestrator as Orchestrator
from .orchestrator import PlanError as PlanError
from .orchestrator import Subtask as Subtask
from .runner import RunResult as RunResult
from .runner import Workflow as Workflow
from .sequence import Sequence as Sequence
from .sequence import StepGate as StepGate

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
