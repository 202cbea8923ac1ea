"""Parallelization: one fan-out engine; sectioning, voting, guardrails on top of it."""

from .engine import Envelope as Envelope
from .engine import FanoutError as FanoutError
from .engine import FanoutResult as FanoutResult
from .engine import Quorum as Quorum
from .engine import fan_out as fan_out
from .guard import GuardResult as GuardResult
from .guard import ModelScreen as ModelScreen
from .guard import guarded as guarded
from .guard import rule_screen as rule_screen
from .sectioning import Section as Section
from .sectioning import SectionedResult as SectionedResult
from .sectioning import Synthesize as Synthesize
from .sectioning import concatenate as concatenate
from .sectioning import merge_json as merge_json
from .sectioning import run_sections as run_sections
from .sectioning import split_headings as split_headings
from .sectioning import split_items as split_items
from .sectioning import split_paragraphs as split_paragraphs
from .sectioning import split_tokens as split_tokens
from .sectioning import token_counter as token_counter
from .voting import DEFAULT_TIE as DEFAULT_TIE
from .voting import SAMPLE_SEED as SAMPLE_SEED
from .voting import SAMPLE_TEMPERATURE as SAMPLE_TEMPERATURE
from .voting import Verdict as Verdict
from .voting import Vote as Vote
from .voting import VotePrior as VotePrior
from .voting import beta_confidence as beta_confidence
from .voting import extract_json_field as extract_json_field
from .voting import extract_label as extract_label
from .voting import extract_number as extract_number
from .voting import extract_regex as extract_regex
from .voting import extract_text as extract_text
from .voting import fit_prior as fit_prior
from .voting import is_decided as is_decided
from .voting import keep_probability as keep_probability
from .voting import panel as panel
from .voting import sample_params as sample_params
from .voting import sampler as sampler
from .voting import tally as tally
from .voting import threshold as threshold
from .voting import vote as vote

__all__ = [
    "DEFAULT_TIE",
    "Envelope",
    "FanoutError",
    "FanoutResult",
    "GuardResult",
    "ModelScreen",
    "Quorum",
    "SAMPLE_SEED",
    "SAMPLE_TEMPERATURE",
    "Section",
    "SectionedResult",
    "Synthesize",
    "Verdict",
    "Vote",
    "VotePrior",
    "beta_confidence",
    "concatenate",
    "extract_json_field",
    "extract_label",
    "extract_number",
    "extract_regex",
    "extract_text",
    "fan_out",
    "fit_prior",
    "guarded",
    "is_decided",
    "keep_probability",
    "merge_json",
    "panel",
    "rule_screen",
    "run_sections",
    "sample_params",
    "sampler",
    "split_headings",
    "split_items",
    "split_paragraphs",
    "split_tokens",
    "tally",
    "threshold",
    "token_counter",
    "vote",
]
