"""Routing: rule, semantic, LLM and cascade routers, one Decision contract, fitting and evaluation."""

from .base import Decision as Decision
from .base import Route as Route
from .base import RouteInput as RouteInput
from .base import Router as Router
from .base import finalize as finalize
from .base import target_of as target_of
from .cascade import CascadeRouter as CascadeRouter
from .cascade import Stage as Stage
from .config import RouterSpec as RouterSpec
from .config import build_router as build_router
from .config import load_router as load_router
from .config import load_spec as load_spec
from .config import save_fitted as save_fitted
from .escalation import EscalationCascade as EscalationCascade
from .escalation import Tier as Tier
from .escalation import fit_threshold as fit_threshold
from .evaluate import EvalReport as EvalReport
from .evaluate import LabeledRow as LabeledRow
from .evaluate import evaluate as evaluate
from .evaluate import load_jsonl as load_jsonl
from .evaluate import metrics as metrics
from .evaluate import threshold_sweep as threshold_sweep
from .llm import LLMRouter as LLMRouter
from .model_router import ComplexityRules as ComplexityRules
from .model_router import ModelRouter as ModelRouter
from .model_router import difficulty_router as difficulty_router
from .rules import Rule as Rule
from .rules import RuleRouter as RuleRouter
from .semantic import EmbeddingCache as EmbeddingCache
from .semantic import FitReport as FitReport
from .semantic import SemanticRouter as SemanticRouter

__all__ = [
    "CascadeRouter",
    "ComplexityRules",
    "Decision",
    "EmbeddingCache",
    "EscalationCascade",
    "EvalReport",
    "FitReport",
    "LLMRouter",
    "LabeledRow",
    "ModelRouter",
    "Route",
    "RouteInput",
    "Router",
    "RouterSpec",
    "Rule",
    "RuleRouter",
    "SemanticRouter",
    "Stage",
    "Tier",
    "build_router",
    "difficulty_router",
    "evaluate",
    "finalize",
    "fit_threshold",
    "load_jsonl",
    "load_router",
    "load_spec",
    "metrics",
    "save_fitted",
    "target_of",
    "threshold_sweep",
]
