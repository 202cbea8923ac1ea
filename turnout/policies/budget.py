"""Budgeted: reserve a call's worst-case cost before it is made, settle the real cost after.

Because reservations are taken before any call starts, 100 concurrent branches see each other's
reservations and cannot jointly pass the limit: the ledger can only be overrun by the amount a
call's real cost exceeds its estimate. The estimate is an upper bound: the prompt's UTF-8 bytes
bound its tokens (``prompt_token_bound``), and ``max_tokens`` — sent as the default cap when the
request has none — bounds the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .._constants import DEFAULT_MAX_TOKENS
from .._scope import current_scope
from .._types import Completion, Price, Request, StreamChunk
from ..models.base import ChatModel, own_token_counter
from .base import Opened, StreamEnd, Wrapper, drive, open_stream
from .ledger import BudgetLedger, Hold, reserve_all, settle_all

__all__ = ["BudgetLedger", "Budgeted", "budgeted", "worst_case"]


def worst_case(request: Request, price: Price, count: Any = None,
               default_max_tokens: int = DEFAULT_MAX_TOKENS) -> tuple[Request, float]:
    """The request as it must be sent — with ``max_tokens`` set to the cap the reservation assumes when
    it has none, so no provider can generate past it — and the most it can cost. Every budget in
    turnout (``Budgeted``, the Ray gate) reserves this."""
    if request.max_tokens is None:
        request = request.with_(max_tokens=default_max_tokens)
    return request, 0.0 if price.free else price.estimate(request, default_max_tokens, count)


class Budgeted(Wrapper):
    """Refuses calls (``BudgetExceeded``) that could take a budget past its limit: ``ledger`` (any
    ``Ledger``: a ``BudgetLedger``, a ``SpendControl`` — every budget that applies to this model and
    scope — or None) and every ledger of the call's scope (``spend_scope(meters=...)``; the gateway's
    key budgets). With neither, the call passes through untouched."""

    def __init__(self, inner: ChatModel, ledger: Any, *, price: Price | None = None,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self._price = price
        self.default_max_tokens = default_max_tokens
        self._count = own_token_counter(inner)  # exact input tokens where the model has a tokenizer

    @property
    def price(self) -> Price:
        return self._price or self.inner.price

    async def _reserve(self, request: Request, meters: tuple[Any, ...]) -> tuple[Request, Hold]:
        request, amount = worst_case(request, self.price, self._count, self.default_max_tokens)
        ledgers = meters if self.ledger is None else (self.ledger, *meters)
        return request, await reserve_all(ledgers, amount, model=self.inner.name)

    async def complete(self, request: Request) -> Completion:
        meters = current_scope().meters
        if self.ledger is None and not meters:
            return await self.inner.complete(request)
        request, holds = await self._reserve(request, meters)
        try:
            c = await self.inner.complete(request)
        except BaseException:
            await settle_all(holds, None)  # a failed HTTP call is not billed by providers
            raise
        await settle_all(holds, c.cost_usd)
        return c

    def stream(self, request: Request) -> AsyncIterator[StreamChunk]:
        return drive(self.open_stream, request)

    async def open_stream(self, request: Request) -> Opened:
        meters = current_scope().meters
        if self.ledger is None and not meters:
            return await open_stream(self.inner, request)
        request, holds = await self._reserve(request, meters)
        try:
            first, rest, ends = await open_stream(self.inner, request)
        except BaseException:
            await settle_all(holds, None)  # failed before any token: not billed
            raise
        ends.append(_Bill(holds))
        return first, rest, ends


class _Bill(StreamEnd):
    """A stream's bill: its cost at the final chunk (before it is handed on); cut short or failed
    after its first token, the estimate reserved (the provider may have generated it)."""

    __slots__ = ("holds",)

    def __init__(self, holds: Hold) -> None:
        self.holds = holds

    async def done(self, chunk: StreamChunk) -> None:
        await settle_all(self.holds, chunk.cost_usd)

    async def close(self, error: BaseException | None) -> None:
        await settle_all(self.holds, self.holds.amount)  # (nothing when the final chunk settled it)


def budgeted(model: ChatModel) -> ChatModel:
    """``model`` charged to the budgets of its calls' scope (a run's, an agent's, a gateway key's):
    as it is when a layer of it already is ``Budgeted`` (a catalog model), else wrapped in one."""
    todo: list[Any] = [model]
    for _ in range(64):
        if not todo:
            break
        m = todo.pop()
        if isinstance(m, Budgeted):
            return model
        todo += [x for x in (getattr(m, "inner", None),) if x is not None] + list(getattr(m, "models", ()) or ())
    return Budgeted(model, None)
