"""The turnout gateway (``turnout serve``): an OpenAI-compatible server with routing, virtual keys,
shared limits and budgets. ``pip install 'turnout[server]'``."""

from .app import create_app as create_app
from .gateway import Gateway as Gateway
from .keys import ApiKey as ApiKey
from .keys import KeyRing as KeyRing

__all__ = ["ApiKey", "Gateway", "KeyRing", "create_app"]
