"""More language tasks through an OpenAI-compatible API."""

from __future__ import annotations

from typing_extensions import TypedDict

from ..decorator import task
from ..errors import TaskError
from ..types import ChunkConfig
from .openai_tasks import ask


class Translation(TypedDict):
    text: str
    target: str


@task("openai.translate", category="think", capabilities=["llm", "network"], timeout=300,
      chunk=ChunkConfig(input="text", default_size=6000, overlap=0, merge="concat_text", kind="text"))
def openai_translate(text: str, target: str = "English", model: str = "gpt-4o-mini") -> Translation:
    """Translates a text into `target` (a language name), keeping its formatting."""
    if not text.strip():
        raise TaskError("`text` is empty: nothing to translate")
    translated, _ = ask("openai.translate", model,
                        f"Translate the user's text into {target}. Keep its formatting. Answer with the translation only.", text)
    return {"text": translated, "target": target}


class Answer(TypedDict):
    answer: str
    model: str


@task("llm.answer", category="think", capabilities=["llm", "network"], timeout=300)
def llm_answer(question: str, context: list[str], model: str = "gpt-4o-mini") -> Answer:
    """Answers a question from the given passages only (retrieval-augmented answering)."""
    if not context:
        raise TaskError("`context` must hold at least one passage")
    passages = "\n\n".join(f"[{i + 1}] {p}" for i, p in enumerate(context))
    answer, used = ask("llm.answer", model,
                       "Answer from these passages only; cite them as [n]. If they do not say, answer that you do not know.\n\n" + passages,
                       question)
    return {"answer": answer, "model": used}
