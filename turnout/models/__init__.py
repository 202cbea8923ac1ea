"""Model interfaces and their value types, adapters, the embedded local models and the model specs."""

from .._types import Completion as Completion
from .._types import Message as Message
from .._types import Price as Price
from .._types import Request as Request
from .._types import ResponseFormat as ResponseFormat
from .._types import StreamChunk as StreamChunk
from .._types import Usage as Usage
from ._weights import QWEN_05B as QWEN_05B
from ._weights import QWEN_15B as QWEN_15B
from ._weights import LocalWeights as LocalWeights
from .anthropic import AnthropicModel as AnthropicModel
from .base import ChatModel as ChatModel
from .base import Embedder as Embedder
from .base import collect_stream as collect_stream
from .catalog import ModelSpec as ModelSpec
from .catalog import PolicySpec as PolicySpec
from .embedder import LocalEmbedder as LocalEmbedder
from .http_embedder import OpenAIEmbedder as OpenAIEmbedder
from .local import LocalLLM as LocalLLM
from .openai import OpenAICompatible as OpenAICompatible

__all__ = [
    "AnthropicModel",
    "ChatModel",
    "Completion",
    "Embedder",
    "LocalEmbedder",
    "LocalLLM",
    "LocalWeights",
    "Message",
    "ModelSpec",
    "OpenAICompatible",
    "OpenAIEmbedder",
    "PolicySpec",
    "Price",
    "QWEN_05B",
    "QWEN_15B",
    "Request",
    "ResponseFormat",
    "StreamChunk",
    "Usage",
    "collect_stream",
]
