"""Small example services that call AI models, each call declared beside it, for `airollout scan` and `gate`.

Every provider and framework the scanner knows, in Python and TypeScript: unguarded and already guarded by a
flag, aliased imports, clients built in one module and called in another, and calls that look alike but invoke
no model. A call site is declared by a comment at the end of its line:
``# site: PROVIDER | MODEL | guarded`` (MODEL ``-`` when none is a literal; ``unguarded`` otherwise).
Lines without one must not be reported. Shared by the tests and `benchmarks/scan_accuracy.py`.
"""

# The examples are source files whose call lines carry their declaration at the end: long by nature.
# ruff: noqa: E501
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXAMPLES", "Example", "ExpectedSite", "expected_sites", "write_corpus"]


@dataclass(frozen=True)
class Example:
    name: str
    language: str
    files: dict[str, str]
    entry: str = ""
    """``FILE:function``: called with a user id, it makes the first unguarded call declared after its ``def``,
    the call `airollout gate` is tried on. Empty for examples with nothing to gate."""


@dataclass(frozen=True)
class ExpectedSite:
    path: str
    line: int
    provider: str
    model: str | None
    guarded: bool


_MARKER = re.compile(r"(?:#|//) site: (?P<provider>[^|]+?) \| (?P<model>\S+) \| (?P<guard>guarded|unguarded)\s*$")

_PY_GUARD = """from fbclient import get as featbit


def use_candidate(user_id: str) -> bool:
    return featbit().variation("new-model", {"key": user_id, "name": user_id}, "control") == "candidate"
"""

EXAMPLES: tuple[Example, ...] = (
    Example(
        "openai-py",
        "python",
        {
            "app/__init__.py": "",
            "app/clients.py": "from openai import OpenAI as OA\n\nclient = OA()\n",
            "app/service.py": """from app.clients import client


def answer(user_id: str) -> str:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])  # site: OpenAI | gpt-4o-mini | unguarded
    client.files.create(file=b"", purpose="batch")
    return str(reply)


def vector(user_id: str) -> object:
    return client.embeddings.create(model="text-embedding-3-small", input=user_id)  # site: OpenAI | text-embedding-3-small | unguarded
""",
        },
        "app/service.py:answer",
    ),
    Example(
        "openai-guarded-py",
        "python",
        {
            "flags.py": _PY_GUARD,
            "service.py": """import openai

from flags import featbit

client = openai.OpenAI()


def answer(user_id: str) -> str:
    variant = featbit().variation("new-model", {"key": user_id, "name": user_id}, "control")
    if variant == "candidate":
        return str(client.responses.create(model="gpt-4.1", input="hi"))  # site: OpenAI | gpt-4.1 | guarded
    model = "gpt-4.1" if variant == "candidate" else "gpt-4o"
    return str(client.responses.create(model=model, input="hi"))  # site: OpenAI | - | guarded
""",
        },
    ),
    Example(
        "azure-openai-py",
        "python",
        {
            "service.py": """from openai import AzureOpenAI

azure = AzureOpenAI(azure_endpoint="https://example.openai.azure.com", api_version="2024-06-01")


def answer(user_id: str) -> str:
    return str(azure.chat.completions.create(model="gpt-4o-deployment", messages=[]))  # site: Azure OpenAI | gpt-4o-deployment | unguarded
""",
        },
        "service.py:answer",
    ),
    Example(
        "anthropic-py",
        "python",
        {
            "llm/__init__.py": "",
            "llm/factory.py": "import anthropic as ant\n\n\ndef claude():\n    return ant.Anthropic()\n",
            "llm/chat.py": """from .factory import claude


def answer(user_id: str) -> str:
    return Assistant().reply(user_id)


class Assistant:
    def __init__(self) -> None:
        self.client = claude()

    def reply(self, user_id: str) -> str:
        message = self.client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[])  # site: Anthropic | claude-sonnet-4-5 | unguarded
        return str(message)
""",
        },
        "llm/chat.py:answer",
    ),
    Example(
        "google-py",
        "python",
        {
            "service.py": """from google import genai
import vertexai
from vertexai.generative_models import GenerativeModel

client = genai.Client()
vertexai.init(project="p", location="europe-west4")
gemini = GenerativeModel("gemini-1.5-pro")


def answer(user_id: str) -> str:
    return str(client.models.generate_content(model="gemini-2.0-flash", contents="hi"))  # site: Google | gemini-2.0-flash | unguarded


def vertex(user_id: str) -> str:
    return str(gemini.generate_content("hi"))  # site: Google | gemini-1.5-pro | unguarded


def vector(user_id: str) -> object:
    return client.models.embed_content(model="text-embedding-004", contents="hi")  # site: Google | text-embedding-004 | unguarded
""",
        },
        "service.py:answer",
    ),
    Example(
        "bedrock-py",
        "python",
        {
            "service.py": """import boto3

bedrock = boto3.client("bedrock-runtime", region_name="us-east-1")
s3 = boto3.client("s3")


def answer(user_id: str) -> str:
    s3.put_object(Bucket="b", Key=user_id, Body=b"")
    reply = bedrock.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=[])  # site: AWS Bedrock | anthropic.claude-3-haiku-20240307-v1:0 | unguarded
    return str(reply)
""",
        },
        "service.py:answer",
    ),
    Example(
        "mistral-cohere-py",
        "python",
        {
            "service.py": """import cohere
from mistralai import Mistral

mistral = Mistral(api_key="k")
co = cohere.ClientV2()


def answer(user_id: str) -> str:
    return str(mistral.chat.complete(model="mistral-large-latest", messages=[]))  # site: Mistral | mistral-large-latest | unguarded


def rank(user_id: str) -> object:
    return co.chat(model="command-r-plus", messages=[])  # site: Cohere | command-r-plus | unguarded


def vector(user_id: str) -> object:
    return co.embed(model="embed-english-v3.0", texts=[user_id], input_type="search_query")  # site: Cohere | embed-english-v3.0 | unguarded
""",
        },
        "service.py:answer",
    ),
    Example(
        "ollama-litellm-py",
        "python",
        {
            "service.py": """import ollama
from litellm import completion as complete_with, embedding


def answer(user_id: str) -> str:
    return str(complete_with(model="gpt-4o", messages=[]))  # site: LiteLLM | gpt-4o | unguarded


def local(user_id: str) -> object:
    return ollama.chat(model="llama3.1", messages=[])  # site: Ollama | llama3.1 | unguarded


def vector(user_id: str) -> object:
    return embedding(model="text-embedding-3-small", input=[user_id])  # site: LiteLLM | text-embedding-3-small | unguarded
""",
        },
        "service.py:answer",
    ),
    Example(
        "langchain-py",
        "python",
        {
            "chains.py": """from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from langgraph.prebuilt import create_react_agent

llm = ChatOpenAI(model="gpt-4o-mini")
prompt = ChatPromptTemplate.from_template("Summarise: {text}")
summarise = prompt | llm | StrOutputParser()
agent = create_react_agent(llm, tools=[])
embedder = OpenAIEmbeddings(model="text-embedding-3-large")


def title(user_id: str) -> str:
    return str(llm.invoke(f"A title for {user_id}"))  # site: LangChain | gpt-4o-mini | unguarded
""",
            "service.py": """from chains import agent, embedder, prompt, summarise


def answer(user_id: str) -> str:
    prompt.invoke({"text": user_id})
    return str(summarise.invoke({"text": user_id}))  # site: LangChain | gpt-4o-mini | unguarded


def act(user_id: str) -> object:
    return agent.invoke({"messages": [("user", user_id)]})  # site: LangChain | gpt-4o-mini | unguarded


def vector(user_id: str) -> object:
    return embedder.embed_query(user_id)  # site: LangChain | text-embedding-3-large | unguarded
""",
        },
        "chains.py:title",
    ),
    Example(
        "llamaindex-py",
        "python",
        {
            "service.py": """from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI as LlamaOpenAI

llm = LlamaOpenAI(model="gpt-4o")
embed_model = OpenAIEmbedding(model="text-embedding-3-small")


def answer(user_id: str) -> str:
    return str(llm.complete("hi"))  # site: LlamaIndex | gpt-4o | unguarded


def vector(user_id: str) -> object:
    return embed_model.get_text_embedding(user_id)  # site: LlamaIndex | text-embedding-3-small | unguarded
""",
        },
        "service.py:answer",
    ),
    Example(
        "huggingface-py",
        "python",
        {
            "service.py": """from huggingface_hub import InferenceClient
from transformers import pipeline

generator = pipeline("text-generation", model="distilgpt2")
hub = InferenceClient()


def answer(user_id: str) -> str:
    return str(generator("hi", max_new_tokens=5))  # site: Hugging Face | distilgpt2 | unguarded


def remote(user_id: str) -> object:
    return hub.chat_completion(model="meta-llama/Llama-3.1-8B-Instruct", messages=[])  # site: Hugging Face | meta-llama/Llama-3.1-8B-Instruct | unguarded
""",
        },
        "service.py:answer",
    ),
    Example(
        "lookalikes-py",
        "python",
        {
            "service.py": """import boto3
import requests


class Order:
    objects = None


def completion(text: str) -> str:
    return text


def handle(user_id: str) -> None:
    requests.post("https://example.com", json={"model": "gpt-4o"})
    completion("not a model")
    boto3.client("s3").put_object(Bucket="b", Key="k", Body=b"")
""",
        },
    ),
    Example(
        "openai-ts",
        "typescript",
        {
            "src/clients.ts": 'import OpenAI from "openai";\n\nexport const client = new OpenAI();\n',
            "src/service.ts": """import { client } from "./clients";

export async function answer(userId: string): Promise<string> {
  const reply = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [] }); // site: OpenAI | gpt-4o-mini | unguarded
  await client.files.list();
  return String(reply);
}

export async function vector(userId: string) {
  return client.embeddings.create({ model: "text-embedding-3-small", input: userId }); // site: OpenAI | text-embedding-3-small | unguarded
}
""",
        },
        "src/service.ts:answer",
    ),
    Example(
        "openai-guarded-ts",
        "typescript",
        {
            "src/service.ts": """import { OpenAI as Client, AzureOpenAI } from "openai";
import { OpenFeature } from "@openfeature/server-sdk";

const client = new Client();
const azure = new AzureOpenAI({ endpoint: "https://example.openai.azure.com", apiVersion: "2024-06-01" });

export async function answer(userId: string): Promise<string> {
  const variant = await OpenFeature.getClient().getStringValue("new-model", "control", { targetingKey: userId });
  if (variant === "candidate") {
    return String(await client.responses.create({ model: "gpt-4.1", input: "hi" })); // site: OpenAI | gpt-4.1 | guarded
  }
  return String(await azure.chat.completions.create({ model: "gpt-4o", messages: [] })); // site: Azure OpenAI | gpt-4o | unguarded
}
""",
        },
        "src/service.ts:answer",
    ),
    Example(
        "anthropic-google-ts",
        "typescript",
        {
            "src/llm.ts": """import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";

export function claude() {
  return new Anthropic();
}

export const genai = new GoogleGenAI({});
""",
            "src/service.ts": """import { claude, genai } from "./llm";

class Assistant {
  private client = claude();

  async reply(userId: string) {
    return this.client.messages.create({ model: "claude-sonnet-4-5", max_tokens: 64, messages: [] }); // site: Anthropic | claude-sonnet-4-5 | unguarded
  }
}

export async function gemini(userId: string) {
  return genai.models.generateContent({ model: "gemini-2.0-flash", contents: "hi" }); // site: Google | gemini-2.0-flash | unguarded
}

export const assistant = new Assistant();
""",
        },
        "src/service.ts:gemini",
    ),
    Example(
        "bedrock-mistral-cohere-ts",
        "typescript",
        {
            "src/service.ts": """import { BedrockRuntimeClient, ConverseCommand } from "@aws-sdk/client-bedrock-runtime";
import { Mistral } from "@mistralai/mistralai";
import { CohereClientV2 } from "cohere-ai";

const bedrock = new BedrockRuntimeClient({ region: "us-east-1" });
const mistral = new Mistral({ apiKey: "k" });
const cohere = new CohereClientV2({});

export async function answer(userId: string) {
  await bedrock.send(new ConverseCommand({ modelId: "amazon.nova-lite-v1:0", messages: [] })); // site: AWS Bedrock | amazon.nova-lite-v1:0 | unguarded
  await mistral.chat.complete({ model: "mistral-small-latest", messages: [] }); // site: Mistral | mistral-small-latest | unguarded
  return cohere.chat({ model: "command-r", messages: [] }); // site: Cohere | command-r | unguarded
}
""",
        },
        "src/service.ts:answer",
    ),
    Example(
        "ollama-js",
        "javascript",
        {
            "index.js": """const { Ollama } = require("ollama");
const ollama = new Ollama({ host: "http://localhost:11434" });

async function answer(userId) {
  return ollama.chat({ model: "llama3.1", messages: [] }); // site: Ollama | llama3.1 | unguarded
}

async function vector(userId) {
  return ollama.embed({ model: "nomic-embed-text", input: userId }); // site: Ollama | nomic-embed-text | unguarded
}

module.exports = { answer, vector };
""",
        },
        "index.js:answer",
    ),
    Example(
        "langchain-llamaindex-ts",
        "typescript",
        {
            "src/chains.ts": """import { ChatOpenAI } from "@langchain/openai";
import { ChatPromptTemplate } from "@langchain/core/prompts";

export const llm = new ChatOpenAI({ model: "gpt-4o-mini" });
export const prompt = ChatPromptTemplate.fromTemplate("Summarise: {text}");
""",
            "src/service.ts": """import { llm, prompt } from "./chains";
import { OpenAI as LlamaOpenAI } from "llamaindex";

const llama = new LlamaOpenAI({ model: "gpt-4o" });

export async function answer(userId: string) {
  await prompt.invoke({ text: userId });
  return prompt.pipe(llm).invoke({ text: userId }); // site: LangChain | gpt-4o-mini | unguarded
}

export async function complete(userId: string) {
  return llama.complete({ prompt: userId }); // site: LlamaIndex | gpt-4o | unguarded
}
""",
        },
        "src/service.ts:complete",
    ),
    Example(
        "vercel-ai-ts",
        "typescript",
        {
            "src/service.ts": """import * as ai from "ai";
import { embed, streamText as stream } from "ai";
import { openai } from "@ai-sdk/openai";

export async function answer(userId: string) {
  const { text } = await ai.generateText({ model: openai("gpt-4o"), prompt: "hi" }); // site: Vercel AI SDK | gpt-4o | unguarded
  return text;
}

export function live(userId: string) {
  return stream({ model: openai("gpt-4o-mini"), prompt: "hi" }); // site: Vercel AI SDK | gpt-4o-mini | unguarded
}

export async function vector(userId: string) {
  return embed({ model: openai.embedding("text-embedding-3-small"), value: userId }); // site: Vercel AI SDK | text-embedding-3-small | unguarded
}
""",
        },
        "src/service.ts:answer",
    ),
    Example(
        "huggingface-ts",
        "typescript",
        {
            "src/service.ts": """import { InferenceClient } from "@huggingface/inference";
import { pipeline } from "@huggingface/transformers";

const hf = new InferenceClient("token");

export async function answer(userId: string) {
  return hf.chatCompletion({ model: "meta-llama/Llama-3.1-8B-Instruct", messages: [] }); // site: Hugging Face | meta-llama/Llama-3.1-8B-Instruct | unguarded
}

export async function local(userId: string) {
  const generator = await pipeline("text-generation", "Xenova/distilgpt2");
  return generator("hi"); // site: Hugging Face | Xenova/distilgpt2 | unguarded
}
""",
        },
        "src/service.ts:local",
    ),
)


def write_corpus(directory: Path, examples: tuple[Example, ...] = EXAMPLES) -> dict[str, Path]:
    """Each example written to its own directory under ``directory``; returns name -> directory."""
    written = {}
    for example in examples:
        root = directory / example.name
        for path, text in example.files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text, encoding="utf-8")
        written[example.name] = root
    return written


def expected_sites(example: Example) -> set[ExpectedSite]:
    """The sites declared in ``example``'s files."""
    expected = set()
    for path, text in example.files.items():
        for number, line in enumerate(text.splitlines(), start=1):
            marker = _MARKER.search(line)
            if marker:
                model = marker["model"]
                expected.add(
                    ExpectedSite(path, number, marker["provider"], None if model == "-" else model,
                                 marker["guard"] == "guarded")
                )  # fmt: skip
    return expected
