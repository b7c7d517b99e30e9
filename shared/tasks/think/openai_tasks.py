"""Language tasks through the OpenAI API, or any OpenAI-compatible server:
the `openai` client honours `OPENAI_BASE_URL` and `OPENAI_API_KEY`."""

from __future__ import annotations

import json
from typing import Iterator
from typing_extensions import TypedDict

from ..decorator import task
from ..errors import TaskError, require


def _client(task_name: str):
    return require(task_name, "openai", "openai").OpenAI(max_retries=0, timeout=120.0)


def _call(task_name: str, fn):
    """Maps the client's errors: rate limits and 5xx may pass later, the rest will not."""
    import openai

    try:
        return fn()
    except openai.APIStatusError as e:
        retryable = e.status_code == 429 or e.status_code >= 500
        raise TaskError(f"{task_name}: the API answered {e.status_code}: {e.message}", retryable=retryable) from None
    except openai.APIConnectionError as e:
        raise TaskError(f"{task_name}: cannot reach the API: {e}", retryable=True) from None


def ask(task_name: str, model: str, system: str, user: str, temperature: float = 0.0, **extra) -> tuple[str, str]:
    """One chat completion with a system and a user message: (answer text, model that answered)."""
    client = _client(task_name)
    r = _call(task_name, lambda: client.chat.completions.create(
        model=model, temperature=temperature, **extra,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]))
    return (r.choices[0].message.content or "").strip(), r.model


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


class Chat(TypedDict):
    response: str
    model: str


@task("openai.chat", category="think", capabilities=["llm", "network"], timeout=300)
def openai_chat(prompt: str, system: str | None = None, model: str = "gpt-4o-mini",
                temperature: float = 0.7, max_tokens: int | None = None) -> Chat:
    """Chat completion: the model's `response` to the prompt (the seed's result shape)."""
    client = _client("openai.chat")
    r = _call("openai.chat", lambda: client.chat.completions.create(
        model=model, messages=_messages(prompt, system), temperature=temperature, max_tokens=max_tokens))
    return {"response": (r.choices[0].message.content or "").strip(), "model": r.model}


@task("openai.chat_stream", category="think", capabilities=["llm", "network"], timeout=300, streaming=True)
def openai_chat_stream(prompt: str, system: str | None = None, model: str = "gpt-4o-mini",
                       temperature: float = 0.7, max_tokens: int | None = None) -> Iterator[str]:
    """Chat completion, streamed: each piece of text arrives as it is generated (the result joins them)."""
    client = _client("openai.chat_stream")
    stream = _call("openai.chat_stream", lambda: client.chat.completions.create(
        model=model, messages=_messages(prompt, system), temperature=temperature, max_tokens=max_tokens, stream=True))
    for event in stream:
        for choice in event.choices:
            if choice.delta and choice.delta.content:
                yield choice.delta.content


class Summary(TypedDict):
    summary: str
    model: str


@task("openai.summarize", category="think", capabilities=["llm", "network"], timeout=300,
      pipe={"text": "text"}, aliases=["llm.summarize"])
def openai_summarize(text: str, max_words: int = 150, model: str = "gpt-4o-mini") -> Summary:
    """Summarises a text in at most `max_words` words (takes a transcript's `text` from the step before)."""
    if not text.strip():
        raise TaskError("`text` is empty: nothing to summarise")
    summary, used = ask("openai.summarize", model,
                        f"Summarise the user's text in at most {max_words} words. Answer with the summary only.",
                        text, temperature=0.2)
    return {"summary": summary, "model": used}


class Extracted(TypedDict):
    data: dict


@task("openai.extract", category="think", capabilities=["llm", "network"], timeout=300)
def openai_extract(text: str, fields: dict[str, str], model: str = "gpt-4o-mini") -> Extracted:
    """Extracts the named `fields` (name → what it means) from a text as JSON."""
    if not fields:
        raise TaskError("`fields` must name at least one field")
    spec = "\n".join(f"- {k}: {v}" for k, v in fields.items())
    content, _ = ask("openai.extract", model,
                     f"Extract these fields from the user's text and answer a JSON object with exactly these keys (null when absent):\n{spec}",
                     text, response_format={"type": "json_object"})
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        raise TaskError(f"openai.extract: the model did not answer JSON: {content[:200]!r}", retryable=True) from None
    if not isinstance(data, dict):
        raise TaskError("openai.extract: the model answered JSON that is not an object", retryable=True)
    return {"data": {k: data.get(k) for k in fields}}


class Classified(TypedDict):
    label: str
    labels: list[str]


@task("openai.classify", category="think", capabilities=["llm", "network"], timeout=120)
def openai_classify(text: str, labels: list[str], model: str = "gpt-4o-mini") -> Classified:
    """Picks the one label (of `labels`) that fits the text best."""
    if len(labels) < 2:
        raise TaskError("`labels` must offer at least two labels")
    answer, _ = ask("openai.classify", model,
                    "Answer with exactly one of these labels and nothing else: " + ", ".join(labels), text)
    answer = answer.strip(".").lower()
    match = next((l for l in labels if l.lower() == answer), None)
    if match is None:
        raise TaskError(f"openai.classify: the model answered {answer!r}, not one of the labels", retryable=True)
    return {"label": match, "labels": labels}


class ApiEmbeddings(TypedDict):
    model: str
    vectors: list[list[float]]


@task("openai.embed", category="think", capabilities=["embeddings", "network"], timeout=120)
def openai_embed(texts: list[str], model: str = "text-embedding-3-small") -> ApiEmbeddings:
    """Embeds texts through the OpenAI embeddings API (OPENAI_BASE_URL honoured)."""
    if not texts:
        raise TaskError("`texts` must hold at least one text")
    client = _client("openai.embed")
    r = _call("openai.embed", lambda: client.embeddings.create(model=model, input=texts))
    return {"model": r.model, "vectors": [d.embedding for d in sorted(r.data, key=lambda d: d.index)]}
