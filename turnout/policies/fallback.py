"""Fallback: an ordered chain of models; a failing model cools down (a per-model circuit breaker).

A model that fails with an availability error (unavailable, timeout, rate limited, auth) is
skipped for ``cooldown`` seconds (or the provider's Retry-After) while other models are healthy;
when every model is cooling down they are tried anyway, soonest-recovering first, so a request
never dead-ends on the breaker alone. Streams fall back only before their first chunk is sent.
Misuse (ConfigError) and budget refusals are never "fallen back" from: they are raised at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

from .._errors import AllModelsFailed, InvalidRequest, ProviderError
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel
from .base import call_info

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

    async def complete(self, request: Request) -> Completion:
        healthy, cooling = self._order()
        errors: list[tuple[str, BaseException]] = []
        for i in healthy or cooling:
            try:
                c = await self.models[i].complete(request)
            except ProviderError as e:
                self._failed(i, e)
                errors.append((self.models[i].name, e))
                continue
            self.cooling.pop(i, None)
            self._note(i)
            return c
        raise AllModelsFailed(errors, skipped=[self.models[i].name for i in cooling] if healthy else [])

    async def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        healthy, cooling = self._order()
        errors: list[tuple[str, BaseException]] = []
        for i in healthy or cooling:
            agen = self.models[i].stream(request).__aiter__()
            try:
                first = await agen.__anext__()
            except StopAsyncIteration:
                return
            except ProviderError as e:
                await agen.aclose()
                self._failed(i, e)
                errors.append((self.models[i].name, e))
                continue
            self.cooling.pop(i, None)
            self._note(i)
            yield first
            async for chunk in agen:
                yield chunk
            return
        raise AllModelsFailed(errors, skipped=[self.models[i].name for i in cooling] if healthy else [])

    async def aclose(self) -> None:
        for m in self.models:
            await m.aclose()
