"""What both scanners follow through a program: a value some provider library produced, and how it was reached.

A value remembers its path from the import (``openai``, ``OpenAI``, ``()``, ``chat``, ``completions``), the
model it was built with when that was a literal, and whether it holds a model at all (a LangChain prompt
template does not; a chat model, or a chain that contains one, does). Whether calling a method on it invokes a
model is decided here, once for both languages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from airollout.instrument.providers import Provider

__all__ = ["ProviderValue", "bears_model"]

# For these providers `create` and friends invoke a model only under one of these resources (not `files.create`).
_RESOURCES = {
    "OpenAI": frozenset({"chat", "completions", "responses", "embeddings", "images", "speech", "transcriptions"}),
    "Azure OpenAI": frozenset({"chat", "completions", "responses", "embeddings", "images"}),
    "Anthropic": frozenset({"messages", "completions", "beta"}),
    "Mistral": frozenset({"chat", "fim", "embeddings", "agents"}),
}
CALLED = "()"
# Framework parts whose names share a fragment with a model class (`ChatPromptTemplate`) but hold no model.
_NOT_MODELS = ("Prompt", "Template", "Message", "Parser", "History", "Loader", "Splitter", "Store", "Retriever")


@dataclass(frozen=True)
class ProviderValue:
    provider: Provider
    chain: tuple[str, ...]
    model: str | None = None
    bearing: bool = True
    """Holds a model (for frameworks, where a prompt template or an output parser does not)."""

    @classmethod
    def imported(cls, provider: Provider, chain: tuple[str, ...]) -> ProviderValue:
        return cls(provider, chain, bearing=not provider.model_bearing or bears_model(provider, chain[-1]))

    def extend(self, *segments: str, model: str | None = None, bearing: bool | None = None) -> ProviderValue:
        return replace(
            self,
            chain=(*self.chain, *segments),
            model=model or self.model,
            bearing=self.bearing if bearing is None else bearing,
        )

    def called(self, model: str | None, *, hands_model: bool) -> ProviderValue:
        """The result of calling this value; ``hands_model``: one of the arguments holds a model."""
        name = self.chain[-1]
        bearing = (
            self.bearing or bears_model(self.provider, name) or (bool(self.provider.model_bearing) and hands_model)
        )
        return self.extend(CALLED, model=model, bearing=bearing)

    def invokes(self, method: str) -> bool:
        """Whether calling ``method`` on this value invokes a model."""
        if not self.bearing or method not in self.provider.methods:
            return False
        resources = _RESOURCES.get(self.provider.name)
        return resources is None or bool(resources.intersection(self.chain))

    @property
    def invoking_function(self) -> bool:
        """Whether this is a library function that invokes a model when called (``litellm.completion``)."""
        return CALLED not in self.chain and self.chain[-1] in self.provider.functions

    @property
    def invoking_object(self) -> bool:
        """Whether calling this object invokes its model (a Hugging Face ``pipeline``)."""
        return self.provider.callable_objects and self.chain[-1] == CALLED and self.bearing and len(self.chain) > 1

    def operation(self, method: str | None = None) -> str:
        """The call as written from the client on: ``chat.completions.create``, ``generateText``, ``pipeline``."""
        if method is None:
            return self.chain[-1] if self.invoking_function else self.chain[-2]
        chain = self.chain
        after = chain[len(chain) - chain[::-1].index(CALLED) :] if CALLED in chain else chain[1:]
        return ".".join([*(s for s in after if s != "|"), method])


def bears_model(provider: Provider, name: str) -> bool:
    if any(fragment in name for fragment in _NOT_MODELS):
        return False
    return any(fragment in name for fragment in provider.model_bearing)
