"""Read and validate SQuAD-1.1 JSON (TyDi QA GoldP ships in that format), locally or from the Hub.

Two kinds of problem are told apart, and the policy differs:

* **File-level and structural problems always raise** :class:`~regtune.core.errors.DataError`: a missing
  file, bytes that are not UTF-8, text that is not JSON, a wrong shape (no ``data`` list, an article
  without a ``paragraphs`` list, a paragraph without a ``qas`` list, ``answers`` not a list, an answer
  without ``text`` or ``answer_start``, a field of the wrong type, a missing or empty question id) and
  **duplicate question ids**. A duplicate is never skipped: dropping either copy would silently lose
  data, and scoring by id would mix the two up.
* **Per-question problems are skipped** unless ``strict=True``: a missing (or null) or whitespace-only
  context or question, an ``answer_start`` that is not an integer (``True`` and ``3.0`` are refused),
  negative or past the end of the context, an answer text that does not match the context at its
  ``answer_start``, an empty answer text, and a question with no answers (SQuAD 1.1 has no
  unanswerable questions). A question with any bad answer is left out whole, so that no reference
  is dropped quietly. Each left-out question is recorded in :attr:`SquadFile.skipped` and counted
  (a paragraph without a context skips every one of its questions), and one log line
  (``logging.warning``, not a ``RegtuneWarning``) sums them up. With ``strict=True`` the first such
  problem raises instead.

Every message is one line: ``"{file}: question {id}: {what is wrong}"`` for a question and
``"{file}: {json path}: {what is wrong}"`` for the structure, e.g. ``data[3].paragraphs[0]``.

:func:`load_examples` is the single entry point for the CLI: a local path, or
``hub:tydiqa:<language>:<split>`` (e.g. ``hub:tydiqa:en:validation``) for the Hub copy of TyDi QA
GoldP (``google-research-datasets/tydiqa``, config ``secondary_task``).
"""

from __future__ import annotations

import codecs
import json
import logging
import numbers
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

from regtune.core.errors import ConfigError, DataError, RegtuneError

logger = logging.getLogger(__name__)

#: ISO 639-1 code → the name TyDi QA uses as the prefix of its question ids (``english-123...``).
TYDI_LANGUAGES: dict[str, str] = {
    "ar": "arabic",
    "bn": "bengali",
    "en": "english",
    "fi": "finnish",
    "id": "indonesian",
    "ko": "korean",
    "ru": "russian",
    "sw": "swahili",
    "te": "telugu",
}
HUB_DATASET = "google-research-datasets/tydiqa"
HUB_CONFIG = "secondary_task"
HUB_PREFIX = "hub:tydiqa:"
HubSplit = Literal["train", "validation"]

# How many skipped ids the summary log line names before it says "...".
_SKIPS_SHOWN = 3
# Longest excerpt of user text quoted in a message, so a bad 5 kB context cannot flood the terminal.
_SNIPPET_CHARS = 60


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


@dataclass(frozen=True)
class Skip:
    """A question left out in non-strict mode, and why."""

    question_id: str
    reason: str


@dataclass
class SquadFile:
    """What a reader returns: the usable examples, in file order, and the questions left out.

    Attributes:
        path: The file read; for a Hub source, the source string (``hub:tydiqa:en:validation``).
        examples: One example per usable question, every reference answer kept in file order.
        skipped: The questions left out (always empty when read with ``strict=True``).
    """

    path: Path
    examples: list[QAExample]
    skipped: list[Skip] = field(default_factory=list)

    @property
    def references(self) -> dict[str, list[str]]:
        """Question id → every reference answer text, in file order (duplicates kept)."""
        return {ex.id: [answer.text for answer in ex.answers] for ex in self.examples}


class _QuestionProblem(Exception):
    """A per-question problem: skipped in non-strict mode, a DataError in strict mode."""


def _fail(source: str, what: str) -> NoReturn:
    # The CLI prints the message as one line; user text is quoted with repr, this is a last guard.
    raise DataError(" ".join(f"{source}: {what}".splitlines()))


def _show(text: str) -> str:
    """A question id as written, unless it holds characters that would break the one-line message."""
    return text if text.isprintable() else repr(text)


def _snippet(text: str) -> str:
    """``repr`` of ``text``, cut to a readable length; repr also escapes newlines."""
    if len(text) > _SNIPPET_CHARS:
        return repr(text[:_SNIPPET_CHARS]) + "..."
    return repr(text)


def _json(value: object) -> str:
    """A value as JSON would write it (``true``, ``3.0``, ``"3"``), cut to a readable length."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


def _kind(value: object) -> str:
    """The JSON name of a value's type, with an article, for messages ("a list", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _object(source: str, where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(source, f"{where} is {_kind(value)}, expected an object")
    return value


def _list_field(source: str, where: str, obj: Mapping[str, Any], key: str) -> list[Any]:
    if key not in obj:
        _fail(source, f"{where} has no '{key}' list")
    value = obj[key]
    if not isinstance(value, list | tuple):
        _fail(source, f"{where}.{key} is {_kind(value)}, expected a list")
    return list(value)


def _text_field(source: str, where: str, obj: Mapping[str, Any], key: str) -> str | None:
    """A string field that may be absent or null (None); any other type is a structural error."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        _fail(source, f"{where}.{key} is {_kind(value)}, expected a string")
    return value


def _question_id(source: str, where: str, obj: Mapping[str, Any]) -> str:
    # Without a usable id a question cannot be named, skipped or scored: that is structural.
    qid = _text_field(source, where, obj, "id")
    if qid is None or not qid.strip():
        _fail(source, f"{where} has no question id")
    return qid


def _answer_start(start: object) -> int:
    """Check one ``answer_start`` value's type; raises _QuestionProblem."""
    if isinstance(start, bool):  # json gives true/false as bool, which int() would accept as 1/0
        raise _QuestionProblem(f"answer_start must be an integer, not a boolean ({_json(start)})")
    if isinstance(start, float):
        # 3.0 is refused too: an offset written as a float usually means the file went through a
        # tool that lost integer types, and other values in it may have been rounded.
        hint = f"; write {int(start)}" if start.is_integer() else ""
        raise _QuestionProblem(f"answer_start must be an integer, not a float ({_json(start)}{hint})")
    if not isinstance(start, numbers.Integral):  # Integral also admits numpy integers from the Hub
        shown = "" if start is None else f" ({_json(start)})"
        raise _QuestionProblem(f"answer_start must be an integer, not {_kind(start)}{shown}")
    return int(start)


def _build_example(
    qid: str,
    question: str | None,
    context: str | None,
    answers: Sequence[tuple[str, object]],
    title: str,
) -> QAExample:
    """Validate one question whose structure is already checked; raises _QuestionProblem.

    Args:
        qid: The question id.
        question: The question text, None when absent.
        context: The passage, None when absent.
        answers: ``(text, answer_start)`` pairs in file order; ``answer_start`` is not yet checked.
        title: The article title ("" when absent).

    Returns:
        The example, with every answer kept in order.
    """
    if context is None:
        raise _QuestionProblem("context is missing")
    if not context.strip():
        raise _QuestionProblem("context is empty")
    if question is None:
        raise _QuestionProblem("question text is missing")
    if not question.strip():
        raise _QuestionProblem("question text is empty")
    if not answers:
        raise _QuestionProblem("has no answers (SQuAD 1.1 needs at least one; unanswerable is unsupported)")
    checked = []
    for i, (text, raw_start) in enumerate(answers):
        where = f"answers[{i}]"
        if not text.strip():
            raise _QuestionProblem(f"{where}: answer text is empty")
        try:
            start = _answer_start(raw_start)
        except _QuestionProblem as problem:
            raise _QuestionProblem(f"{where}: {problem}") from None
        end = start + len(text)
        if start < 0:
            raise _QuestionProblem(f"{where}: answer_start {start} is negative")
        if end > len(context):
            raise _QuestionProblem(
                f"{where}: answer_start {start} + length {len(text)} runs past the end of the context "
                f"(length {len(context)})"
            )
        if context[start:end] != text:
            raise _QuestionProblem(
                f"{where}: answer text {_snippet(text)} does not match the context at answer_start "
                f"{start}, which has {_snippet(context[start:end])}"
            )
        checked.append(Answer(text=text, start=start))
    return QAExample(id=qid, question=question, context=context, answers=tuple(checked), title=title)


class _Collector:
    """Applies the shared policy: duplicate ids raise, per-question problems skip or raise."""

    def __init__(self, source: str, strict: bool) -> None:
        self.source = source
        self.strict = strict
        self.examples: list[QAExample] = []
        self.skipped: list[Skip] = []
        self._first_seen: dict[str, str] = {}

    def add(
        self,
        qid: str,
        where: str,
        *,
        question: str | None,
        context: str | None,
        answers: Sequence[tuple[str, object]],
        title: str,
    ) -> None:
        # Ids are claimed before validation, so a duplicate of a skipped question still raises.
        if qid in self._first_seen:
            both = f"{self._first_seen[qid]} and {where}"
            _fail(self.source, f"duplicate question id {_show(qid)} at {both}; ids must be unique")
        self._first_seen[qid] = where
        try:
            example = _build_example(qid, question, context, answers, title)
        except _QuestionProblem as problem:
            if self.strict:
                _fail(self.source, f"question {_show(qid)}: {problem}")
            self.skipped.append(Skip(question_id=qid, reason=str(problem)))
            return
        self.examples.append(example)

    def finish(self) -> SquadFile:
        if self.skipped:
            shown = "; ".join(f"{_show(s.question_id)}: {s.reason}" for s in self.skipped[:_SKIPS_SHOWN])
            more = "; ..." if len(self.skipped) > _SKIPS_SHOWN else ""
            logger.warning(
                "%s: skipped %d of %d questions (%s%s); read with strict=True to stop at the first",
                self.source,
                len(self.skipped),
                len(self.skipped) + len(self.examples),
                shown,
                more,
            )
        return SquadFile(path=Path(self.source), examples=self.examples, skipped=self.skipped)


def _load_json(path: Path) -> Any:
    """Read ``path`` as UTF-8 (a BOM is accepted) and parse it; every failure is one DataError line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        _fail(str(path), "file not found")
    except IsADirectoryError:
        _fail(str(path), "is a directory, expected a SQuAD JSON file")
    except OSError as err:
        _fail(str(path), f"cannot read the file: {err.strerror or err}")
    # Editors on Windows often write a BOM; it is not content, so drop it, but keep byte offsets true.
    offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[offset:].decode("utf-8")
    except UnicodeDecodeError as err:
        _fail(str(path), f"not valid UTF-8 at byte {err.start + offset} ({err.reason}); save it as UTF-8")
    if not text.strip():
        _fail(str(path), "file is empty, expected SQuAD JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        _fail(str(path), f"not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}")


def read_squad(path: str | Path, *, strict: bool = False) -> SquadFile:
    """Read a SQuAD-1.1 JSON file, validating every question against its context.

    See the module docstring for what raises and what is skipped.

    Args:
        path: The JSON file, ``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``.
        strict: Raise on the first per-question problem instead of skipping the question.

    Returns:
        The examples in file order, each with all its reference answers, and the skipped questions.

    Raises:
        DataError: On a file-level or structural problem, a duplicate id, or (strict) any bad question.
    """
    path = Path(path)
    source = str(path)
    payload = _load_json(path)
    top = _object(source, "top level", payload)
    collector = _Collector(source, strict)
    for a, article in enumerate(_list_field(source, "top level", top, "data")):
        art_where = f"data[{a}]"
        article = _object(source, art_where, article)
        title = _text_field(source, art_where, article, "title") or ""
        for p, paragraph in enumerate(_list_field(source, art_where, article, "paragraphs")):
            par_where = f"{art_where}.paragraphs[{p}]"
            paragraph = _object(source, par_where, paragraph)
            context = _text_field(source, par_where, paragraph, "context")
            for q, qa in enumerate(_list_field(source, par_where, paragraph, "qas")):
                qa_where = f"{par_where}.qas[{q}]"
                qa = _object(source, qa_where, qa)
                qid = _question_id(source, qa_where, qa)
                question = _text_field(source, qa_where, qa, "question")
                answers = []
                for i, answer in enumerate(_list_field(source, qa_where, qa, "answers")):
                    ans_where = f"{qa_where}.answers[{i}]"
                    answer = _object(source, ans_where, answer)
                    for key in ("text", "answer_start"):
                        if key not in answer:
                            _fail(source, f"{ans_where} has no '{key}'")
                    text = _text_field(source, ans_where, answer, "text")
                    if text is None:
                        _fail(source, f"{ans_where}.text is null, expected a string")
                    answers.append((text, answer["answer_start"]))
                collector.add(qid, qa_where, question=question, context=context, answers=answers, title=title)
    return collector.finish()


def _language_name(language: str) -> str:
    """Map an ISO code or a TyDi name (any case) to the TyDi name; ConfigError if unknown."""
    key = language.strip().lower()
    if key in TYDI_LANGUAGES:
        return TYDI_LANGUAGES[key]
    if key in TYDI_LANGUAGES.values():
        return key
    choices = ", ".join(f"{code} ({name})" for code, name in TYDI_LANGUAGES.items())
    raise ConfigError(f"unknown TyDi QA language {language!r}; choose one of {choices}")


def _collect_hub_records(
    records: Iterable[Mapping[str, Any]], language: str | None, source: str, strict: bool
) -> _Collector:
    wanted = None if language is None else _language_name(language)
    collector = _Collector(source, strict)
    for r, record in enumerate(records):
        where = f"record {r}"
        record = _object(source, where, record)
        qid = _question_id(source, where, record)
        # TyDi ids start with the language name: "english-9041575374...".
        if wanted is not None and qid.split("-", 1)[0].lower() != wanted:
            continue
        where = f"record {r} (question {_show(qid)})"
        answers = record.get("answers")
        if answers is None:
            _fail(source, f"{where} has no 'answers'")
        answers = _object(source, f"{where}.answers", answers)
        texts = _list_field(source, f"{where}.answers", answers, "text")
        starts = _list_field(source, f"{where}.answers", answers, "answer_start")
        if len(texts) != len(starts):
            _fail(source, f"{where}.answers has {len(texts)} texts but {len(starts)} answer_start values")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                _fail(source, f"{where}.answers.text[{i}] is {_kind(text)}, expected a string")
        collector.add(
            qid,
            where,
            question=_text_field(source, where, record, "question"),
            context=_text_field(source, where, record, "context"),
            answers=list(zip(texts, starts, strict=True)),
            title=_text_field(source, where, record, "title") or "",
        )
    return collector


def examples_from_hub_records(
    records: Iterable[Mapping[str, Any]],
    *,
    language: str | None = None,
    source: str = "hub",
    strict: bool = False,
) -> list[QAExample]:
    """Convert rows of the Hub's TyDi QA ``secondary_task`` (GoldP) config into examples.

    Each row is ``{"id", "title", "context", "question", "answers": {"text": [...],
    "answer_start": [...]}}``. Rows are validated exactly as :func:`read_squad` validates a file.

    Args:
        records: The rows, e.g. a ``datasets.Dataset``.
        language: Keep only this language: an ISO code (``"en"``) or a TyDi name (``"english"``),
            matched against the id prefix. None keeps every row.
        source: What messages name as the origin of the rows.
        strict: Raise on the first per-question problem instead of skipping the question.

    Returns:
        The examples of the language, in row order.

    Raises:
        ConfigError: If ``language`` is not a TyDi QA language.
        DataError: On a malformed row, a duplicate id, or (strict) any bad question.
    """
    return _collect_hub_records(records, language, source, strict).finish().examples


def _load_hub(language: str, split: HubSplit, strict: bool) -> SquadFile:
    name = _language_name(language)  # a typo should fail before a slow download
    if split not in get_args(HubSplit):
        raise ConfigError(f"unknown TyDi QA split {split!r}; choose one of {', '.join(get_args(HubSplit))}")
    code = next(c for c, n in TYDI_LANGUAGES.items() if n == name)
    try:
        import datasets  # lazy: it is heavy, and only Hub users need it
    except ImportError as err:
        raise RegtuneError("cannot load TyDi QA from the Hub: install the 'datasets' package") from err
    try:
        rows = datasets.load_dataset(HUB_DATASET, HUB_CONFIG, split=split)
    except Exception as err:  # the Hub stack raises many types (HTTP, offline, cache); all mean "no data"
        detail = (str(err).splitlines() or [""])[0]
        raise RegtuneError(
            f"cannot load {HUB_DATASET} ({HUB_CONFIG}, {split}) from the Hub (offline?): "
            f"{type(err).__name__}: {detail}"
        ) from err
    return _collect_hub_records(rows, name, f"{HUB_PREFIX}{code}:{split}", strict).finish()


def load_tydiqa_from_hub(language: str, split: HubSplit, *, strict: bool = False) -> list[QAExample]:
    """Download TyDi QA GoldP for one language from the Hugging Face Hub.

    Loads ``google-research-datasets/tydiqa``, config ``secondary_task`` (the gold-passage task), and
    keeps the rows of ``language``.

    Args:
        language: An ISO code (``"en"``) or a TyDi name (``"english"``).
        split: ``"train"`` or ``"validation"``.
        strict: Raise on the first per-question problem instead of skipping the question.

    Returns:
        The examples of that language and split.

    Raises:
        ConfigError: On an unknown language or split.
        RegtuneError: If the Hub cannot be reached or the dataset cannot be loaded.
        DataError: On a malformed row, a duplicate id, or (strict) any bad question.
    """
    return _load_hub(language, split, strict).examples


def load_examples(source: str | Path, *, strict: bool = False) -> SquadFile:
    """Load examples from a local SQuAD JSON file or, for ``hub:tydiqa:<lang>:<split>``, the Hub.

    Examples of sources: ``../shared/data/tydiqa-goldp/en/dev.json``, ``hub:tydiqa:en:validation``,
    ``hub:tydiqa:swahili:train``. A local file whose name starts with ``hub:`` can be given as
    ``./hub:...``.

    Args:
        source: A path, or a Hub source string as above.
        strict: Raise on the first per-question problem instead of skipping the question.

    Returns:
        The examples and the skipped questions; ``path`` holds the source string for the Hub.

    Raises:
        ConfigError: On a malformed Hub source string.
        RegtuneError: If the Hub cannot be reached.
        DataError: On a bad file or record.
    """
    if isinstance(source, str) and source.startswith("hub:"):
        parts = source.split(":")
        if len(parts) != 4 or parts[1] != "tydiqa":
            raise ConfigError(f"bad Hub source {source!r}; expected hub:tydiqa:<language>:<split>")
        return _load_hub(parts[2], parts[3], strict)  # type: ignore[arg-type]  # _load_hub checks split
    return read_squad(source, strict=strict)


def squad_json(examples: Iterable[QAExample], version: str = "regtune-split") -> dict[str, Any]:
    """SQuAD-1.1 JSON holding ``examples`` (one paragraph per question, every reference answer kept)."""
    return {
        "version": version,
        "data": [
            {
                "title": ex.title,
                "paragraphs": [
                    {
                        "context": ex.context,
                        "qas": [
                            {
                                "id": ex.id,
                                "question": ex.question,
                                "answers": [{"text": a.text, "answer_start": a.start} for a in ex.answers],
                            }
                        ],
                    }
                ],
            }
            for ex in examples
        ],
    }


def _question(
    source: str, where: str, obj: Mapping[str, Any], qid: str, context: str | None, title: str = ""
) -> QAExample:
    question = _text_field(source, where, obj, "question")
    if not (question or "").strip():
        _fail(source, f"{where} (id {_show(qid)}): the question is missing or empty")
    if not (context or "").strip():
        _fail(source, f"{where} (id {_show(qid)}): the context is missing or empty")
    return QAExample(id=qid, question=question, context=context, answers=(), title=title)  # type: ignore[arg-type]


def read_questions(path: str | Path) -> list[QAExample]:
    """Questions to answer, without references: SQuAD JSON (answers, if any, are ignored) or JSONL with one
    ``{"question": ..., "context": ..., "id": ...}`` object per line (``id`` defaults to ``line-N``).

    Any problem is one DataError line naming the file and the line or question: a prediction file has no
    use for a question that cannot be asked, so nothing is skipped.
    """
    path = Path(path)
    source = str(path)
    examples: list[QAExample] = []
    if path.suffix.lower() == ".jsonl":
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            _fail(source, f"cannot read it as UTF-8 text ({err})")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = _object(source, f"line {number}", json.loads(line))
            except json.JSONDecodeError as err:
                _fail(source, f"line {number}: not valid JSON ({err.msg})")
            qid = _text_field(source, f"line {number}", obj, "id") or f"line-{number}"
            examples.append(
                _question(
                    source, f"line {number}", obj, qid, _text_field(source, f"line {number}", obj, "context")
                )
            )
    else:
        root = _object(source, "the file", _load_json(path))
        for a, article in enumerate(_list_field(source, "the file", root, "data")):
            article = _object(source, f"data[{a}]", article)
            for p, paragraph in enumerate(_list_field(source, f"data[{a}]", article, "paragraphs")):
                where = f"data[{a}].paragraphs[{p}]"
                paragraph = _object(source, where, paragraph)
                context = _text_field(source, where, paragraph, "context")
                for q, qa in enumerate(_list_field(source, where, paragraph, "qas")):
                    qa = _object(source, f"{where}.qas[{q}]", qa)
                    qid = _question_id(source, f"{where}.qas[{q}]", qa)
                    examples.append(_question(source, f"{where}.qas[{q}]", qa, qid, context))
    if not examples:
        _fail(source, "no questions in the file")
    repeated = [qid for qid, count in Counter(e.id for e in examples).items() if count > 1]
    if repeated:
        _fail(source, f"question id {_show(repeated[0])} appears more than once")
    return examples
