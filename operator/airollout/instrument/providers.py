"""Which libraries call an AI model, and which of their calls are the invocation: the table `scan` reads.

A call is an invocation when it is made on something a provider library produced (a client, a model object,
a chain built from one) and its method is one of that provider's invoking methods. The table is data, one
entry per provider, so adding a provider is adding a row: both the Python and the TypeScript scanners read it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FLAG_EVALUATIONS",
    "MODEL_KEYS",
    "PROVIDERS",
    "Provider",
    "embedding_operation",
    "model_position",
    "provider_for_module",
    "provider_named",
]


@dataclass(frozen=True)
class Provider:
    name: str
    """As shown in reports and manifests (``OpenAI``, ``AWS Bedrock``)."""
    slug: str
    """Lower-case, for flag keys, guardrail names and metric labels (``openai``, ``aws-bedrock``)."""
    python_modules: tuple[str, ...] = ()
    """Top-level import names (a prefix followed by ``.`` or ``_`` matches too: ``langchain_openai``)."""
    script_packages: tuple[str, ...] = ()
    """npm package names (a name ending in ``/`` is a scope: every package under it)."""
    methods: frozenset[str] = frozenset()
    """Methods whose call on one of the provider's objects invokes a model."""
    functions: frozenset[str] = frozenset()
    """Functions imported from the library that invoke a model themselves (``litellm.completion``)."""
    model_bearing: tuple[str, ...] = ()
    """For frameworks: name fragments of what holds a model (``Chat``, ``LLM``); empty: every object does."""
    callable_objects: bool = False
    """Calling the object itself invokes it (a Hugging Face ``pipeline``)."""
    system: str = ""
    """OpenTelemetry's ``gen_ai.system`` (GenAI semantic conventions) for the provider's metrics."""


_LANGCHAIN_METHODS = frozenset(
    {
        "invoke", "ainvoke", "stream", "astream", "batch", "abatch", "astream_events", "predict", "apredict",
        "embed_query", "embed_documents", "aembed_query", "aembed_documents",
    }
)  # fmt: skip

PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "Azure OpenAI",
        "azure-openai",
        ("openai.AzureOpenAI", "openai.AsyncAzureOpenAI"),
        ("@azure/openai",),
        frozenset({"create", "parse", "stream"}),
        system="az.ai.openai",
    ),
    Provider("OpenAI", "openai", ("openai",), ("openai",), frozenset({"create", "parse", "stream"}), system="openai"),
    Provider(
        "Anthropic",
        "anthropic",
        ("anthropic",),
        ("@anthropic-ai/sdk",),
        frozenset({"create", "stream", "parse"}),
        system="anthropic",
    ),
    Provider(
        "Google",
        "google",
        ("google.genai", "google.generativeai", "vertexai", "google.cloud.aiplatform"),
        ("@google/genai", "@google/generative-ai", "@google-cloud/vertexai"),
        frozenset(
            {
                "generate_content",
                "generate_content_stream",
                "embed_content",
                "send_message",
                "get_embeddings",
                "generateContent",
                "generateContentStream",
                "embedContent",
                "sendMessage",
                "sendMessageStream",
            }
        ),
        functions=frozenset({"embed_content"}),
        system="gcp.gemini",
    ),
    Provider(
        "AWS Bedrock",
        "aws-bedrock",
        ("boto3", "aioboto3"),
        ("@aws-sdk/client-bedrock-runtime", "@aws-sdk/client-bedrock-agent-runtime"),
        frozenset(
            {
                "invoke_model",
                "invoke_model_with_response_stream",
                "converse",
                "converse_stream",
                "retrieve_and_generate",
                "invoke_agent",
                "send",
            }
        ),
        system="aws.bedrock",
    ),
    Provider(
        "Mistral",
        "mistral",
        ("mistralai",),
        ("@mistralai/mistralai",),
        frozenset({"complete", "stream", "complete_async", "stream_async", "create", "create_async"}),
        system="mistral_ai",
    ),
    Provider(
        "Cohere",
        "cohere",
        ("cohere",),
        ("cohere-ai",),
        frozenset({"chat", "chat_stream", "generate", "embed", "rerank", "chatStream"}),
        system="cohere",
    ),
    Provider(
        "Ollama",
        "ollama",
        ("ollama",),
        ("ollama",),
        frozenset({"chat", "generate", "embed", "embeddings"}),
        functions=frozenset({"chat", "generate", "embed", "embeddings"}),
        system="ollama",
    ),
    Provider(
        "LiteLLM",
        "litellm",
        ("litellm",),
        (),
        functions=frozenset(
            {"completion", "acompletion", "embedding", "aembedding", "text_completion", "atext_completion"}
        ),
        system="litellm",
    ),
    Provider(
        "LangChain",
        "langchain",
        ("langchain", "langgraph"),
        ("langchain", "@langchain/"),
        _LANGCHAIN_METHODS | {"embedQuery", "embedDocuments", "streamEvents"},
        model_bearing=(
            "Chat",
            "LLM",
            "Embeddings",
            "init_chat_model",
            "create_react_agent",
            "createReactAgent",
            "OpenAI",
            "Ollama",
            "Bedrock",
            "Cohere",
            "Mistral",
            "Anthropic",
            "Gemini",
            "Vertex",
        ),
        system="langchain",
    ),
    Provider(
        "LlamaIndex",
        "llamaindex",
        ("llama_index",),
        ("llamaindex",),
        frozenset(
            {
                "complete",
                "acomplete",
                "chat",
                "achat",
                "stream_complete",
                "stream_chat",
                "astream_chat",
                "query",
                "aquery",
                "get_text_embedding",
                "get_query_embedding",
                "get_text_embedding_batch",
                "getTextEmbedding",
                "getQueryEmbedding",
            }
        ),
        model_bearing=(
            "llms",
            "embeddings",
            "as_query_engine",
            "as_chat_engine",
            "asQueryEngine",
            "asChatEngine",
            "OpenAI",
            "Anthropic",
            "Ollama",
            "Embedding",
        ),
        system="llamaindex",
    ),
    Provider(
        "Vercel AI SDK",
        "vercel-ai",
        (),
        ("ai",),
        functions=frozenset(
            {"generateText", "streamText", "generateObject", "streamObject", "embed", "embedMany", "streamUI"}
        ),
        system="vercel.ai",
    ),
    Provider(
        "Hugging Face",
        "huggingface",
        ("transformers", "huggingface_hub"),
        ("@huggingface/inference", "@huggingface/transformers", "@xenova/transformers"),
        frozenset(
            {
                "text_generation",
                "chat_completion",
                "feature_extraction",
                "summarization",
                "create",
                "generate",
                "textGeneration",
                "chatCompletion",
                "featureExtraction",
            }
        ),
        model_bearing=("pipeline", "InferenceClient", "AsyncInferenceClient", "HfInference", "from_pretrained"),
        callable_objects=True,
        system="huggingface",
    ),
)

# The arguments that name the model: keyword arguments in Python, object keys in TypeScript.
MODEL_KEYS = ("model", "model_id", "modelId", "model_name", "modelName", "repo_id")

# Calls whose positional argument names the model when no keyword does (`GenerativeModel("gemini-1.5-pro")`,
# `pipeline("text-generation", "distilgpt2")`), in either language.
_POSITIONAL_MODEL = {
    "GenerativeModel": 0, "getGenerativeModel": 0, "from_pretrained": 0, "completion": 0, "acompletion": 0,
    "embedding": 0, "aembedding": 0, "text_completion": 0, "init_chat_model": 0, "InferenceClient": 0,
    "ChatOllama": 0, "pipeline": 1,
}  # fmt: skip
# Ollama's Python functions take the model first: `ollama.chat("llama3.1", messages)`.
_OLLAMA_POSITIONAL = frozenset({"chat", "generate", "embed", "embeddings"})

# Evaluations of a flag: FeatBit's SDKs, OpenFeature's clients, LaunchDarkly's (and their async forms).
FLAG_EVALUATIONS = frozenset(
    {
        "variation", "variation_detail", "bool_variation", "bool_variation_detail", "string_variation",
        "string_variation_detail", "boolVariation", "stringVariation", "variationDetail", "boolVariationDetail",
        "get_boolean_value", "get_string_value", "get_boolean_details", "get_string_details", "get_object_value",
        "getBooleanValue", "getStringValue", "getBooleanDetails", "getStringDetails", "getObjectValue",
    }
)  # fmt: skip


def provider_for_module(qualified: str) -> Provider | None:
    """The provider whose library ``qualified`` (a dotted import path, or an npm package) belongs to."""
    for provider in PROVIDERS:
        for root in (*provider.python_modules, *provider.script_packages):
            if root.endswith("/"):
                if qualified.startswith(root):
                    return provider
            elif qualified == root or qualified.startswith((root + ".", root + "_", root + "/")):
                return provider
    return None


def model_position(provider: str, callee: str) -> int | None:
    """Which positional argument of ``callee`` names the model, if one does."""
    if provider == "Ollama" and callee in _OLLAMA_POSITIONAL:
        return 0
    return _POSITIONAL_MODEL.get(callee)


def provider_named(name: str) -> Provider:
    return next(p for p in PROVIDERS if p.name == name)


def embedding_operation(operation: str) -> bool:
    lowered = operation.lower()
    return "embed" in lowered or "feature_extraction" in lowered or "featureextraction" in lowered
