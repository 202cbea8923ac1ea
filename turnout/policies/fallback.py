"""Fallback: an ordered chain of models; a failing model cools down (a per-model circuit breaker).

A model that fails with an availability error (unavailable, timeout, rate limited, auth) is
skipped for ``cooldown`` seconds (or the provider's Retry-After) while other models are healthy;
when every model is cooling down they are tried anyway, soonest-recovering first, so a request
never dead-ends on the breaker alone. Streams fall back only before their first chunk is sent.
Misuse (ConfigError) is never "fallen back" from. A member refused by a budget (its own model
budget spent) is skipped for the next member; if every member is refused by budgets, the first
``BudgetExceeded`` is raised.

A member that may not receive the request's data classes (``DataClassNotAllowed``, raised by its
``Compliant`` guard) is skipped without a cooldown; cooling members are then tried too, so a
request is never refused for compliance while an allowed member exists. When every member refuses
on data classes, the chain raises ``ComplianceError``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import NoReturn

from .._errors import AllModelsFailed, BudgetExceeded, ComplianceError, DataClassNotAllowed, InvalidRequest, ProviderError
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel
from .base import Opened, call_info, drive, open_stream

__all__ = ["Fallback", "Health"]


def _unique(names: list[str]) -> list[str]:
    """Members' health keys: their names, numbered where two share one (each has its own health)."""
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


class Health:
    """Per-model health, by name, shared by every chain that uses it: a cooldown after an availability
    error (the circuit breaker; the provider's Retry-After when longer) and an EWMA of the seconds a
    call took (to its answer, or to a stream's first chunk) — what ``prefer: fastest`` ranks by."""

    def __init__(self, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown, self.clock = cooldown, clock
        self.cooling: dict[str, float] = {}  # name -> clock time its cooldown ends
        self.latency: dict[str, float] = {}

    def order(self, names: Sequence[str]) -> tuple[list[int], list[int]]:
        """Indices of the healthy names (in order), then of the cooling ones, soonest-recovering first."""
        now = self.clock()
        healthy = [i for i, n in enumerate(names) if self.cooling.get(n, 0.0) <= now]
        cooling = sorted((i for i in range(len(names)) if i not in healthy), key=lambda i: self.cooling[names[i]])
        return healthy, cooling

    def failed(self, name: str, e: BaseException) -> None:
        if isinstance(e, InvalidRequest):
            return  # the request's fault, not the model's health
        self.cooling[name] = self.clock() + max(self.cooldown, getattr(e, "retry_after", None) or 0.0)

    def ok(self, name: str, seconds: float) -> None:
        self.cooling.pop(name, None)
        old = self.latency.get(name)
        self.latency[name] = seconds if old is None else 0.8 * old + 0.2 * seconds


class Fallback:
    """The one failover: members in order, each skipped while its ``Health`` says it cools down.
    ``health`` may be shared (model routing builds a chain per request over one ``Health``);
    ``names`` are the members' keys in it (default: their ``name``)."""

    def __init__(
        self,
        models: Sequence[ChatModel],
        *,
        cooldown: float = 30.0,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if not models:
            from .._errors import ConfigError

            raise ConfigError("Fallback needs at least one model")
        self.models = list(models)
        self.names = list(names) if names is not None else _unique([m.name for m in self.models])
        self.health = health if health is not None else Health(cooldown, clock)
        self._name = name

    @property
    def cooldown(self) -> float:
        return self.health.cooldown

    @property
    def name(self) -> str:
        return self._name or self.models[0].name

    @property
    def price(self) -> Price:
        """The most expensive member's price: the safe figure for budget estimates."""
        return max((m.price for m in self.models), key=lambda p: (p.output_per_m, p.input_per_m))

    def __repr__(self) -> str:
        return f"Fallback([{', '.join(self.names)}], cooldown={self.cooldown})"

    def _note(self, i: int, t0: float) -> None:
        self.health.ok(self.names[i], self.health.clock() - t0)
        if i != 0:
            info = call_info()
            if info is not None:
                info["fallback"] = self.names[i]

    def _tries(self, errors: list[tuple[str, BaseException]]):  # type: ignore[no-untyped-def]
        """Member indices to try: the healthy ones, then the cooling ones if no healthy member could
        take the request (all refused on data classes) or none is healthy."""
        healthy, cooling = self.health.order(self.names)
        yield from healthy
        if not healthy or all(isinstance(e, DataClassNotAllowed) for _, e in errors):
            yield from cooling

    def _raise(self, errors: list[tuple[str, BaseException]]) -> NoReturn:
        if errors and all(isinstance(e, BudgetExceeded) for _, e in errors):
            raise errors[0][1]
        if errors and all(isinstance(e, DataClassNotAllowed) for _, e in errors):
            classes = sorted({c for _, e in errors for c in getattr(e, "data_classes", [])})
            raise ComplianceError(classes, [n for n, _ in errors], "; ".join(str(e) for _, e in errors))
        tried = {n for n, _ in errors}
        raise AllModelsFailed(errors, skipped=[n for n in self.names if n not in tried])

    async def complete(self, request: Request) -> Completion:
        errors: list[tuple[str, BaseException]] = []
        for i in self._tries(errors):
            t0 = self.health.clock()
            try:
                c = await self.models[i].complete(request)
            except BudgetExceeded as e:
                errors.append((self.names[i], e))
                continue
            except ProviderError as e:
                self.health.failed(self.names[i], e)
                errors.append((self.names[i], e))
                continue
            self._note(i, t0)
            return c
        self._raise(errors)
        raise AssertionError("unreachable")

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        """Switches members only until the first chunk; after that an error reaches the caller."""
        errors: list[tuple[str, BaseException]] = []
        for i in self._tries(errors):
            t0 = self.health.clock()
            try:
                opened = await open_stream(self.models[i], request)
            except BudgetExceeded as e:
                errors.append((self.names[i], e))
                continue
            except ProviderError as e:
                self.health.failed(self.names[i], e)
                errors.append((self.names[i], e))
                continue
            self._note(i, t0)
            return opened
        self._raise(errors)

    async def aclose(self) -> None:
        for m in self.models:
            await m.aclose()
