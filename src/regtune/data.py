"""Read and validate SQuAD-1.1 JSON (TyDi QA GoldP ships in that format)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """One reference answer: its text and the character offset where it starts in the context."""

    text: str
    start: int


@dataclass(frozen=True)
class QAExample:
    """One question over one context, with every reference answer kept (training uses the first)."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    title: str = ""
