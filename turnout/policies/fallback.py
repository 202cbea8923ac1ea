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
from contextlib import aclosing

from .._errors import AllModelsFailed, BudgetExceeded, ComplianceError, DataClassNotAllowed, InvalidRequest, ProviderError
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel
from .base import call_info, relay

__all__ = ["Fallback"]


class Fallback:
    def __init__(
        self,
        models: Sequence[ChatModel],
        *,
        cooldown: float = 30.0,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not models:
            from .._errors import ConfigError

            raise ConfigError("Fallback needs at least one model")
        self.models = list(models)
        self.cooldown = cooldown
        self.clock = clock
        self._name = name
        self.cooling: dict[int, float] = {}  # index -> monotonic time the cooldown ends

    @property
    def name(self) -> str:
        return self._name or self.models[0].name

    @property
    def price(self) -> Price:
        """The most expensive member's price: the safe figure for budget estimates."""
        return max((m.price for m in self.models), key=lambda p: (p.output_per_m, p.input_per_m))

    def __repr__(self) -> str:
        return f"Fallback([{', '.join(m.name for m in self.models)}], cooldown={self.cooldown})"

    def _order(self) -> tuple[list[int], list[int]]:
        now = self.clock()
        healthy = [i for i in range(len(self.models)) if self.cooling.get(i, 0.0) <= now]
        cooling = sorted((i for i in range(len(self.models)) if i not in healthy), key=lambda i: self.cooling[i])
        return healthy, cooling

    def _failed(self, i: int, e: BaseException) -> None:
        if isinstance(e, InvalidRequest):
            return  # the request's fault, not the model's health
        ra = getattr(e, "retry_after", None)
        self.cooling[i] = self.clock() + max(self.cooldown, ra or 0.0)

    def _note(self, i: int) -> None:
        if i != 0:
            info = call_info()
            if info is not None:
                info["fallback"] = self.models[i].name

    def _tries(self, errors: list[tuple[str, BaseException]]):  # type: ignore[no-untyped-def]
        """Member indices to try: the healthy ones, then the cooling ones if no healthy member could
        take the request (all refused on data classes) or none is healthy."""
        healthy, cooling = self._order()
        yield from healthy
        if not healthy or all(isinstance(e, DataClassNotAllowed) for _, e in errors):
            yield from cooling

    def _raise(self, errors: list[tuple[str, BaseException]]) -> None:
        if errors and all(isinstance(e, BudgetExceeded) for _, e in errors):
            raise errors[0][1]
        if errors and all(isinstance(e, DataClassNotAllowed) for _, e in errors):
            classes = sorted({c for _, e in errors for c in getattr(e, "data_classes", [])})
            raise ComplianceError(classes, [n for n, _ in errors], "; ".join(str(e) for _, e in errors))
        tried = {n for n, _ in errors}
        raise AllModelsFailed(errors, skipped=[m.name for m in self.models if m.name not in tried])

    async def complete(self, request: Request) -> Completion:
        errors: list[tuple[str, BaseException]] = []
        for i in self._tries(errors):
            try:
                c = await self.models[i].complete(request)
            except BudgetExceeded as e:
                errors.append((self.models[i].name, e))
                continue
            except ProviderError as e:
                self._failed(i, e)
                errors.append((self.models[i].name, e))
                continue
            self.cooling.pop(i, None)
            self._note(i)
            return c
        self._raise(errors)
        raise AssertionError("unreachable")

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        errors: list[tuple[str, BaseException]] = []
        for i in self._tries(errors):
            agen = self.models[i].stream(request).__aiter__()
            try:
                first = await agen.__anext__()
            except StopAsyncIteration:
                return
            except BudgetExceeded as e:
                await agen.aclose()
                errors.append((self.models[i].name, e))
                continue
            except ProviderError as e:
                await agen.aclose()
                self._failed(i, e)
                errors.append((self.models[i].name, e))
                continue
            self.cooling.pop(i, None)
            self._note(i)
            async with aclosing(relay(first, agen)) as rest:
                async for chunk in rest:
                    yield chunk
            return
        self._raise(errors)

    async def aclose(self) -> None:
        for m in self.models:
            await m.aclose()
