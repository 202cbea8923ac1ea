"""The turnout error tree.

::

    TurnoutError
    ├── ConfigError                 the caller's fault: fix the input, do not retry
    │   ├── UnknownModel            a name not in the catalog (lists the known names)
    │   ├── MissingAPIKey           names the environment variable and the argument
    │   └── ModelNotInstalled       names the exact install command
    ├── ProviderError               a model call failed      (retryable per class)
    │   ├── RateLimited             429; carries retry_after         retryable
    │   ├── ProviderTimeout         no answer in time                retryable
    │   │   └── DeadlineExceeded    the run's deadline passed        not retryable
    │   ├── ProviderUnavailable     5xx, refused or reset connection retryable
    │   ├── BadResponse             not JSON, wrong shape, cut stream
    │   ├── AuthError               401/403
    │   ├── InvalidRequest          other 4xx: the provider refused the request
    │   │   ├── ContextLengthExceeded  the prompt (+ max_tokens) does not fit the model's context
    │   │   ├── ToolsNotSupported    the request has tools; this model takes none (failover skips it)
    │   │   └── DataClassNotAllowed  this model may not receive the request's data classes
    │   └── AllModelsFailed         a Fallback chain ran out; .errors holds each failure
    ├── ComplianceError             no allowed model may receive the request's data classes
    ├── BudgetExceeded              a reservation would pass the budget's limit
    └── LimitExceeded               a gateway key's rate or budget is used up (kind: rate | budget)

Vendor and transport exceptions are translated into this tree at the provider boundary; nothing
above ``turnout.models`` sees an aiohttp or xllamacpp exception. Retry policies read the class
attribute ``retryable``. No message ever contains an API key: every ``TurnoutError`` scrubs its
own message (``turnout._secrets.scrub``) when it is made, whichever path made it.
"""

from __future__ import annotations

from typing import Any

from ._secrets import scrub

__all__ = [
    "QueueError",
    "AllModelsFailed",
    "AuthError",
    "BadResponse",
    "BudgetExceeded",
    "ComplianceError",
    "ConfigError",
    "ContextLengthExceeded",
    "ToolsNotSupported",
    "DataClassNotAllowed",
    "DeadlineExceeded",
    "InvalidRequest",
    "LimitExceeded",
    "MissingAPIKey",
    "ModelNotInstalled",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "TurnoutError",
    "UnknownModel",
]


class TurnoutError(Exception):
    """Root of every error turnout raises on purpose."""

    retryable: bool = False

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from its state, not by calling __init__ again (many take keyword-only fields): every
        # turnout error survives pickling — a Ray actor's BudgetExceeded reaches its caller as itself
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: type[TurnoutError], args: tuple[Any, ...], state: dict[str, Any]) -> TurnoutError:
    e = cls.__new__(cls)
    e.args = args
    e.__dict__.update(state)
    return e


class ConfigError(TurnoutError):
    """Bad configuration or misuse: retrying cannot help."""


class QueueError(ConfigError):
    """An escalation-queue action that cannot be done (unknown item or route, a claim held by
    someone else or expired, an item already resolved, a run that cannot resume): said plainly.
    ``conflict`` is True when the request was fine but the item's state forbids it now (the
    gateway's 409), False when the request itself is wrong (400)."""

    def __init__(self, *args: object, conflict: bool = False) -> None:
        super().__init__(*args)
        self.conflict = conflict


class UnknownModel(ConfigError, KeyError):
    def __init__(self, name: str, known: list[str], prefixes: list[str] | None = None) -> None:
        self.name = name
        self.known = sorted(known)
        more = f"; or a provider's model: {', '.join(prefixes)}" if prefixes else ""
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known) or '(none)'}{more}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingAPIKey(ConfigError):
    def __init__(self, model: str, env_var: str | None) -> None:
        self.model = model
        self.env_var = env_var
        where = f"set the environment variable {env_var} or " if env_var else ""
        super().__init__(f"no API key for model {model!r}: {where}pass api_key=... to the adapter")


class ModelNotInstalled(ConfigError):
    def __init__(self, what: str, install: str, detail: str = "") -> None:
        self.install = install
        msg = f"{what} is not installed or is damaged"
        if detail:
            msg += f" ({detail})"
        super().__init__(f"{msg}; install it with: {install}")


class ProviderError(TurnoutError):
    """A model call failed. ``status`` is the HTTP status where there was one."""

    def __init__(self, message: str, *, model: str = "", status: int | None = None) -> None:
        self.model = model
        self.status = status
        prefix = f"[{model}] " if model else ""
        super().__init__(prefix + message)


class RateLimited(ProviderError):
    retryable = True

    def __init__(
        self, message: str, *, model: str = "", status: int | None = 429, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, model=model, status=status)


class ProviderTimeout(ProviderError):
    retryable = True


class DeadlineExceeded(ProviderTimeout):
    """The run's deadline (``open_run(deadline=)``, ``Workflow.run(deadline=)``) passed: the call was
    not made, or was stopped. Not retried — a retry cannot finish sooner."""

    retryable = False


class ProviderUnavailable(ProviderError):
    retryable = True


class BadResponse(ProviderError):
    pass


class AuthError(ProviderError):
    pass


class InvalidRequest(ProviderError):
    pass


class ToolsNotSupported(InvalidRequest):
    """The request carries tools and this model does not take them (catalog ``tools: false``): a
    fallback chain skips the model (no cooldown) for the next one that does."""


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus the answer's room) does not fit the model's context window: the caller's to fix."""


def is_context_overflow(message: str) -> bool:
    """Does a provider's refusal say the prompt is too long for the context? (OpenAI, vLLM, llama.cpp, Anthropic wordings)"""
    m = message.lower()
    return any(w in m for w in ("context_length_exceeded", "context length", "context size", "exceed_context", "maximum context",
                                "prompt is too long", "too many tokens"))


class DataClassNotAllowed(InvalidRequest):
    """This model may not receive the request's data classes (a ``Fallback`` skips it, no cooldown)."""

    def __init__(self, message: str, *, model: str = "", data_classes: list[str] | None = None) -> None:
        self.data_classes = data_classes or []
        super().__init__(message, model=model)


class ComplianceError(TurnoutError):
    """The request carries data classes that no candidate model may receive (and policy says refuse)."""

    def __init__(self, data_classes: list[str], models: list[str], reasons: str = "") -> None:
        self.data_classes, self.models = data_classes, models
        msg = (f"refused: the request contains {', '.join(data_classes)}, and no model among {', '.join(models) or '(none)'} "
               "may receive it")
        super().__init__(msg + (f" — {reasons}" if reasons else ""))


class AllModelsFailed(ProviderError):
    def __init__(self, errors: list[tuple[str, BaseException]], *, skipped: list[str] | None = None) -> None:
        self.errors = errors
        self.skipped = skipped or []
        parts = [f"{name}: {type(e).__name__}: {e}" for name, e in errors]
        parts += [f"{name}: cooling down, skipped" for name in self.skipped]
        super().__init__("every model in the fallback chain failed — " + "; ".join(parts))
        # the chain is worth retrying later only if every member failed transiently
        self.retryable = bool(errors) and all(getattr(e, "retryable", False) for _, e in errors)


class BudgetExceeded(TurnoutError):
    def __init__(self, *, limit: float, spent: float, reserved: float, requested: float, name: str = "") -> None:
        self.limit, self.spent, self.reserved, self.requested = limit, spent, reserved, requested
        label = f"budget {name!r}" if name else "budget"
        super().__init__(
            f"{label} of ${limit:.6f} would be exceeded: spent ${spent:.6f}, reserved ${reserved:.6f}, "
            f"this call needs up to ${requested:.6f}"
        )


class LimitExceeded(TurnoutError):
    """A gateway key's request/token rate or its budget is used up (``kind``: ``rate`` | ``budget``)."""

    def __init__(self, message: str, *, kind: str, retry_after: float | None = None) -> None:
        self.kind = kind
        self.retry_after = retry_after
        super().__init__(message)
