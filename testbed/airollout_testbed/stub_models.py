"""Stand-ins for the AI libraries the example services import, so gated code runs without them or a model.

Every name of a stub library is a recorder: attributes and calls give more recorders, and each call remembers
the model it was handed (a ``model=``-like keyword, or a recorder that already holds one, as LangChain's
``create_react_agent(llm)`` or ``prompt | llm`` do), in the list ``builtins.stub_model_calls``: after an
example's entry function, the first model in it is the one the function's AI call was made with.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STUB_LIBRARIES", "write_stub_libraries"]

STUB_LIBRARIES = (
    "openai", "anthropic", "google", "google.genai", "vertexai", "vertexai.generative_models", "boto3",
    "mistralai", "cohere", "ollama", "litellm", "langchain_core", "langchain_core.output_parsers",
    "langchain_core.prompts", "langchain_openai", "langgraph", "langgraph.prebuilt", "llama_index",
    "llama_index.llms", "llama_index.llms.openai", "llama_index.embeddings", "llama_index.embeddings.openai",
    "huggingface_hub", "transformers", "requests",
)  # fmt: skip

_RECORDER = '''"""A stub AI library (see airollout_testbed.stub_models)."""

import builtins

CALLS = builtins.__dict__.setdefault("stub_model_calls", [])
_MODEL_KEYS = ("model", "model_id", "modelId", "model_name")


class Recorder:
    def __init__(self, model=None):
        self.model = model

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Recorder(self.model)

    def __call__(self, *args, **kwargs):
        model = next((kwargs[k] for k in _MODEL_KEYS if k in kwargs), None) or self.model
        handed = [a.model for a in args if isinstance(a, Recorder) and a.model]
        model = model or (handed[0] if handed else None)
        CALLS.append(model)
        return Recorder(model)

    def __or__(self, other):
        return Recorder(self.model or getattr(other, "model", None))

    def __ror__(self, other):
        return Recorder(self.model or getattr(other, "model", None))


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return Recorder()
'''


def write_stub_libraries(directory: Path) -> Path:
    """The stub libraries as packages under ``directory`` (put it first on ``sys.path``); returns it."""
    for library in STUB_LIBRARIES:
        package = directory.joinpath(*library.split("."))
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(_RECORDER, encoding="utf-8")
    return directory
