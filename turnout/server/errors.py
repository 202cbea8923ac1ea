"""The gateway's errors: turnout's error tree mapped to HTTP statuses and OpenAI-style error objects
(``{"error": {"message", "type", "param", "code"}}``). Messages never carry secrets or stack traces."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .._errors import (
    AuthError,
    BudgetExceeded,
    ComplianceError,
    ConfigError,
    ContextLengthExceeded,
    DeadlineExceeded,
    InvalidRequest,
    LimitExceeded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    TurnoutError,
)
from .limits import retry_after_header

__all__ = ["ApiError", "api_error", "safe_header"]

_SAFE_HEADER = re.compile(r"[^A-Za-z0-9._:/@+-]")


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = dict(headers or {})
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def safe_header(v: Any) -> str:
    """A header value reduced to a safe character set (no CR/LF injection)."""
    return _SAFE_HEADER.sub("", str(v))[:200]


def api_error(e: BaseException) -> ApiError:
    """Map turnout's errors to HTTP statuses and OpenAI error types (messages never carry secrets)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, LimitExceeded):
        if e.kind == "budget":
            return ApiError(429, str(e), type="insufficient_quota", code="budget_exceeded")
        return ApiError(429, str(e), type="rate_limit_error", code="rate_limit_exceeded",
                        headers={"Retry-After": retry_after_header(e.retry_after)})
    if isinstance(e, BudgetExceeded):
        return ApiError(429, str(e), type="insufficient_quota", code="budget_exceeded")
    if isinstance(e, ComplianceError):
        return ApiError(400, str(e), type="invalid_request_error", code="data_class_not_allowed")
    if isinstance(e, RateLimited):
        return ApiError(429, f"upstream rate limited: {e}", type="rate_limit_error", code="upstream_rate_limited",
                        headers={"Retry-After": retry_after_header(e.retry_after)})
    if isinstance(e, DeadlineExceeded):  # the request's own x-turnout-deadline
        return ApiError(504, f"the request's deadline passed: {e}", type="api_error", code="deadline_exceeded")
    if isinstance(e, ProviderTimeout):
        return ApiError(504, f"upstream timed out: {e}", type="api_error", code="upstream_timeout")
    if isinstance(e, ContextLengthExceeded):  # the caller's to fix (a 400 the openai client does not retry)
        return ApiError(400, f"the prompt does not fit the model's context: {e}", type="invalid_request_error",
                        code="context_length_exceeded", param="messages")
    if isinstance(e, InvalidRequest):
        return ApiError(400, f"upstream refused the request: {e}", type="invalid_request_error", code="upstream_invalid_request")
    if isinstance(e, AuthError):
        return ApiError(502, f"upstream authentication failed: {e}", type="api_error", code="upstream_auth")
    if isinstance(e, ProviderError):
        return ApiError(502, f"upstream failed: {e}", type="api_error", code="upstream_error")
    if isinstance(e, ConfigError):
        return ApiError(400, str(e), type="invalid_request_error", code="invalid_request")
    if isinstance(e, TurnoutError):
        return ApiError(500, f"{type(e).__name__}: {e}", type="api_error", code="internal_error")
    return ApiError(500, "internal error (details are in the server log)", type="api_error", code="internal_error")


