"""Parallelization: one fan-out engine; sectioning, voting, guardrails on top of it."""

from .engine import Envelope as Envelope
from .engine import FanoutError as FanoutError
from .engine import FanoutResult as FanoutResult
from .engine import Quorum as Quorum
from .engine import fan_out as fan_out
from .voting import Verdict as Verdict
from .voting import Vote as Vote
from .voting import beta_confidence as beta_confidence
from .voting import extract_json_field as extract_json_field
from .voting import extract_label as extract_label
from .voting import extract_number as extract_number
from .voting import extract_regex as extract_regex
from .voting import extract_text as extract_text
from .voting import is_decided as is_decided
from .voting import panel as panel
from .voting import sampler as sampler
from .voting import tally as tally
from .voting import threshold as threshold
from .voting import vote as vote

__all__ = [
    "Envelope",
    "FanoutError",
    "FanoutResult",
    "Quorum",
    "Verdict",
    "Vote",
    "beta_confidence",
    "extract_json_field",
    "extract_label",
    "extract_number",
    "extract_regex",
    "extract_text",
    "fan_out",
    "is_decided",
    "panel",
    "sampler",
    "tally",
    "threshold",
    "vote",
]
