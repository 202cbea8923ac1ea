"""Parallelization: one fan-out engine; sectioning, voting, guardrails on top of it."""

from .engine import Envelope as Envelope
from .engine import FanoutError as FanoutError
from .engine import FanoutResult as FanoutResult
from .engine import Quorum as Quorum
from .engine import fan_out as fan_out

__all__ = ["Envelope", "FanoutError", "FanoutResult", "Quorum", "fan_out"]
