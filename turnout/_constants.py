"""Defaults, in one place. Environment variables are listed in docs/environment.md."""

from __future__ import annotations

DEFAULT_MODEL = "local"
DEFAULT_EMBEDDER = "local-minilm"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_TOKENS = 512
DEFAULT_POOL_SIZE = 100
ANTHROPIC_VERSION = "2023-06-01"
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
# rough characters per token, used only when no tokenizer is at hand (estimates for budgets/limits)
CHARS_PER_TOKEN = 4.0
ERROR_EXCERPT_CHARS = 200

# Voting: a tie is no answer ("escalate": a judge, an escalate_below step or the caller decides),
# never a silent pick. Samples are drawn at temperature 0.4, which voted better than 0.7 on the
# embedded model (docs/parallel.md: fixed-8 0.760 vs 0.740, and more agreement, so earlier stops),
# with seeds SAMPLE_SEED, SAMPLE_SEED + 1, ...
VOTE_TIE = "escalate"
SAMPLE_TEMPERATURE = 0.4
SAMPLE_SEED = 100
