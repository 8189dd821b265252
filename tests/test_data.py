"""Reading and validating SQuAD-1.1 JSON and TyDi QA Hub rows: hand-made files, then the real data."""

from __future__ import annotations

import codecs
import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import require_module
from regtune.core.errors import ConfigError, DataError, RegtuneError
from regtune.tasks.qa.data import (
    TYDI_LANGUAGES,
    Answer,
    QAExample,
    Skip,
    SquadFile,
    examples_from_hub_records,
    load_examples,
    load_tydiqa_from_hub,
    read_squad,
)

CONTEXT = "Paris is the capital of France. It lies on the Seine."  # 53 characters; "Seine" at 47


def _qa(qid: str = "q1", question: str = "What is the capital of France?", answers: Any = None) -> dict:
    if answers is None:
        answers = [{"text": "Paris", "answer_start": 0}]
    return {"id": qid, "question": question, "answers": answers}


def _squad(*qas: dict, context: Any = CONTEXT, title: str = "France") -> dict:
    return {
        "version": "1.1",
        "data": [{"title": title, "paragraphs": [{"context": context, "qas": list(qas)}]}],
    }


def _write(tmp_path: Path, payload: Any, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def _assert_one_line(err: pytest.ExceptionInfo[BaseException], *fragments: str) -> str:
    message = str(err.value)
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_good_file_round_trip(tmp_path: Path) -> None:
    payload = _squad(_qa("q1"), _qa("q2", "Which river?", [{"text": "Seine", "answer_start": 47}]))
    result = read_squad(_write(tmp_path, payload, "good.json"))
    assert isinstance(result, SquadFile)
    assert result.path == tmp_path / "good.json"
    assert result.skipped == []
    assert result.examples == [
        QAExample("q1", "What is the capital of France?", CONTEXT, (Answer("Paris", 0),), "France"),
        QAExample("q2", "Which river?", CONTEXT, (Answer("Seine", 47),), "France"),
    ]


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict], Any]:
    """A mutation of the one-question file: set the item at ``path`` (inside data[0]) to ``value``."""

    def mutate(payload: dict) -> dict:
        node = payload["data"][0]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return payload

    return mutate


def _drop(path: tuple[Any, ...]) -> Callable[[dict], Any]:
    def mutate(payload: dict) -> dict:
        node = payload["data"][0]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return payload

    return mutate


QA = ("paragraphs", 0, "qas", 0)
ANSWER = (*QA, "answers", 0)

STRUCTURAL = [
    ("top-level-list", lambda p: [p], "top level is a list, expected an object"),
    ("no-data", lambda p: {"version": "1.1"}, "top level has no 'data' list"),
    ("data-object", lambda p: {"data": {"x": 1}}, "top level.data is an object, expected a list"),
    ("article-string", lambda p: {"data": ["France"]}, "data[0] is a string, expected an object"),
    ("no-paragraphs", _drop(("paragraphs",)), "data[0] has no 'paragraphs' list"),
    ("paragraphs-string", _set(("paragraphs",), "x"), "data[0].paragraphs is a string, expected a list"),
    ("title-list", _set(("title",), ["a"]), "data[0].title is a list, expected a string"),
    ("paragraph-list", _set(("paragraphs", 0), []), "data[0].paragraphs[0] is a list, expected an object"),
    ("no-qas", _drop(("paragraphs", 0, "qas")), "data[0].paragraphs[0] has no 'qas' list"),
    ("context-int", _set(("paragraphs", 0, "context"), 7), "paragraphs[0].context is an integer, expected a"),
    ("qa-string", _set(QA, "q1"), "qas[0] is a string, expected an object"),
    ("no-id", _drop((*QA, "id")), "qas[0] has no question id"),
    ("empty-id", _set((*QA, "id"), " "), "qas[0] has no question id"),
    ("id-int", _set((*QA, "id"), 17), "qas[0].id is an integer, expected a string"),
    ("question-list", _set((*QA, "question"), ["?"]), "qas[0].question is a list, expected a string"),
    ("no-answers-key", _drop((*QA, "answers")), "qas[0] has no 'answers' list"),
    ("answers-object", _set((*QA, "answers"), {"text": "Paris"}), "answers is an object, expected a list"),
    ("answer-string", _set(ANSWER, "Paris"), "answers[0] is a string, expected an object"),
    ("answer-no-text", _drop((*ANSWER, "text")), "answers[0] has no 'text'"),
    ("answer-no-start", _drop((*ANSWER, "answer_start")), "answers[0] has no 'answer_start'"),
    ("answer-text-int", _set((*ANSWER, "text"), 5), "answers[0].text is an integer, expected a string"),
    ("answer-text-null", _set((*ANSWER, "text"), None), "answers[0].text is null, expected a string"),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("mutate", "fragment"), [c[1:] for c in STRUCTURAL], ids=[c[0] for c in STRUCTURAL])
def test_structural_problems_always_raise(
    tmp_path: Path, mutate: Callable[[dict], Any], fragment: str, strict: bool
) -> None:
    path = _write(tmp_path, mutate(_squad(_qa())))
    with pytest.raises(DataError) as err:
        read_squad(path, strict=strict)
    _assert_one_line(err, path.name, fragment)


PER_QUESTION = [
    ("context-missing", _drop(("paragraphs", 0, "context")), "context is missing"),
    ("context-null", _set(("paragraphs", 0, "context"), None), "context is missing"),
    ("context-blank", _set(("paragraphs", 0, "context"), " \n\t"), "context is empty"),
    ("question-missing", _drop((*QA, "question")), "question text is missing"),
    ("question-blank", _set((*QA, "question"), "   "), "question text is empty"),
    ("no-answers", _set((*QA, "answers"), []), "has no answers"),
    (
        "start-bool",
        _set((*ANSWER, "answer_start"), True),
        "answer_start must be an integer, not a boolean (true)",
    ),
    ("start-float", _set((*ANSWER, "answer_start"), 0.0), "not a float (0.0; write 0)"),
    ("start-fraction", _set((*ANSWER, "answer_start"), 0.5), "not a float (0.5)"),
    ("start-string", _set((*ANSWER, "answer_start"), "0"), 'not a string ("0")'),
    ("start-null", _set((*ANSWER, "answer_start"), None), "answer_start must be an integer, not null"),
    ("start-negative", _set((*ANSWER, "answer_start"), -1), "answer_start -1 is negative"),
    ("start-past-end", _set((*ANSWER, "answer_start"), 52), "runs past the end of the context (length 53)"),
    (
        "text-mismatch",
        _set((*ANSWER, "answer_start"), 1),
        "does not match the context at answer_start 1, which has",
    ),
    ("text-empty", _set((*ANSWER, "text"), ""), "answers[0]: answer text is empty"),
    ("text-blank", _set((*ANSWER, "text"), "  "), "answer text is empty"),
    (
        "second-reference-bad",
        _set((*QA, "answers"), [{"text": "Paris", "answer_start": 0}, {"text": "France", "answer_start": 0}]),
        "answers[1]: answer text 'France' does not match",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "fragment"), [c[1:] for c in PER_QUESTION], ids=[c[0] for c in PER_QUESTION]
)
def test_per_question_problems_raise_when_strict(
    tmp_path: Path, mutate: Callable[[dict], Any], fragment: str
) -> None:
    path = _write(tmp_path, mutate(_squad(_qa("q-bad-1"))))
    with pytest.raises(DataError) as err:
        read_squad(path, strict=True)
    message = _assert_one_line(err, path.name, fragment)
    assert message.startswith(f"{path}: question q-bad-1: "), message


@pytest.mark.parametrize(
    ("mutate", "fragment"), [c[1:] for c in PER_QUESTION], ids=[c[0] for c in PER_QUESTION]
)
def test_per_question_problems_skip_when_not_strict(
    tmp_path: Path, mutate: Callable[[dict], Any], fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload = mutate(_squad(_qa("q-bad-1")))
    # A second, good article shows that skipping one question leaves the rest alone.
    payload["data"].append(_squad(_qa("q-good"))["data"][0])
    with caplog.at_level(logging.WARNING, logger="regtune.tasks.qa.data"):
        result = read_squad(_write(tmp_path, payload))
    assert [ex.id for ex in result.examples] == ["q-good"]
    assert len(result.skipped) == 1
    assert result.skipped[0].question_id == "q-bad-1"
    assert fragment in result.skipped[0].reason
    [record] = caplog.records
    assert "skipped 1 of 2 questions" in record.getMessage() and "q-bad-1" in record.getMessage()


def test_mismatch_message_says_what_the_context_has(tmp_path: Path) -> None:
    path = _write(tmp_path, _squad(_qa(answers=[{"text": "Seine", "answer_start": 13}])))
    with pytest.raises(DataError) as err:
        read_squad(path, strict=True)
    _assert_one_line(err, "answer text 'Seine'", "which has 'capit'")


def test_missing_context_skips_and_counts_every_question(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payload = _squad(_qa("a1"), _qa("a2"))
    payload["data"][0]["paragraphs"].append({"qas": [_qa("b1"), _qa("b2", "  "), _qa("b3")]})  # no context
    payload["data"][0]["paragraphs"].append({"context": CONTEXT, "qas": [_qa("c1", answers=[])]})
    path = _write(tmp_path, payload)
    with caplog.at_level(logging.WARNING, logger="regtune.tasks.qa.data"):
        result = read_squad(path)
    assert [ex.id for ex in result.examples] == ["a1", "a2"]
    assert result.skipped == [
        Skip("b1", "context is missing"),
        Skip("b2", "context is missing"),  # the context is checked first, so its question is not blamed
        Skip("b3", "context is missing"),
        Skip("c1", "has no answers (SQuAD 1.1 needs at least one; unanswerable is unsupported)"),
    ]
    [record] = caplog.records  # one summary line, naming the first few ids only
    message = record.getMessage()
    assert "\n" not in message
    assert "skipped 4 of 6 questions" in message and "b1" in message and "b3" in message
    assert "c1" not in message and "; ..." in message
    with pytest.raises(DataError, match=r"question b1: context is missing$"):
        read_squad(path, strict=True)


def test_keeps_every_reference_in_file_order(tmp_path: Path) -> None:
    answers = [
        {"text": "Paris", "answer_start": 0},
        {"text": "Paris is the capital", "answer_start": 0},
        {"text": "Paris", "answer_start": 0},  # TyDi dev repeats identical references; keep them
    ]
    result = read_squad(_write(tmp_path, _squad(_qa(answers=answers), _qa("q2"))))
    assert result.examples[0].answers == (
        Answer("Paris", 0),
        Answer("Paris is the capital", 0),
        Answer("Paris", 0),
    )
    assert result.references == {"q1": ["Paris", "Paris is the capital", "Paris"], "q2": ["Paris"]}


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    text = json.dumps(_squad(_qa(question="Où est Paris ?")), ensure_ascii=False)
    path.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    assert read_squad(path).examples[0].question == "Où est Paris ?"


@pytest.mark.parametrize("strict", [False, True])
def test_duplicate_ids_always_raise(tmp_path: Path, strict: bool) -> None:
    payload = _squad(_qa("dup"), _qa("other"))
    # The second copy is itself a bad question: it must still raise, not be skipped away.
    payload["data"].append(_squad(_qa("dup", question=""))["data"][0])
    path = _write(tmp_path, payload)
    with pytest.raises(DataError) as err:
        read_squad(path, strict=strict)
    _assert_one_line(
        err,
        path.name,
        "duplicate question id dup",
        "data[0].paragraphs[0].qas[0] and data[1].paragraphs[0].qas[0]",
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"data": [\xff]}', "not valid UTF-8 at byte 10"),
        (codecs.BOM_UTF8 + b'{"data": \xc3(}', "not valid UTF-8 at byte 12"),  # offsets count the BOM
        (b'{"data": [}', "not valid JSON at line 1, column 11"),
        (b'{"data": [\n  {"title": "x",}\n]}', "not valid JSON at line 2, column 17: Expecting property"),
        (b"", "file is empty"),
        (b"  \n", "file is empty"),
    ],
    ids=["bad-byte", "bad-byte-after-bom", "json", "json-line-2", "empty", "blank"],
)
def test_undecodable_files_raise(tmp_path: Path, raw: bytes, fragment: str) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(raw)
    with pytest.raises(DataError) as err:
        read_squad(path)
    _assert_one_line(err, "broken.json", fragment)


def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_squad(tmp_path / "nope.json")
    _assert_one_line(err, "nope.json", "file not found")
    with pytest.raises(DataError) as err:
        read_squad(tmp_path)
    _assert_one_line(err, tmp_path.name, "is a directory")


def test_messages_stay_one_line_with_newlines_in_user_text(tmp_path: Path) -> None:
    context = "line one\nline two\n" * 10
    path = _write(
        tmp_path,
        _squad(_qa("id\nwith newline", answers=[{"text": "one\nline", "answer_start": 0}]), context=context),
    )
    with pytest.raises(DataError) as err:
        read_squad(path, strict=True)
    _assert_one_line(err, "question 'id\\nwith newline'", "which has 'line one'")


# --- Hub rows (google-research-datasets/tydiqa, config secondary_task) ---------------------------

EN_CONTEXT = "The Seine flows through Paris."
HUB_ROWS = [
    {
        "id": "english-1",
        "title": "Seine",
        "context": EN_CONTEXT,
        "question": "What flows through Paris?",
        "answers": {"text": ["The Seine", "Seine"], "answer_start": [0, 4]},
    },
    {
        "id": "korean-1",
        "title": "서울",
        "context": "서울은 한국의 수도이다.",
        "question": "한국의 수도는?",
        "answers": {"text": ["서울"], "answer_start": [0]},
    },
    {
        "id": "swahili-1",
        "title": "Nairobi",
        "context": "Nairobi ni mji mkuu wa Kenya.",
        "question": "Mji mkuu wa Kenya ni upi?",
        "answers": {"text": ["Nairobi"], "answer_start": [0]},
    },
    {
        "id": "english-2",
        "title": "Seine",
        "context": EN_CONTEXT,
        "question": "Which city?",
        "answers": {"text": ["Paris"], "answer_start": [3]},  # wrong offset: skipped unless strict
    },
]


@pytest.fixture(scope="module")
def hub_dataset() -> Any:
    datasets = require_module("datasets")
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(
                {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
            ),
        }
    )
    return datasets.Dataset.from_list(copy.deepcopy(HUB_ROWS), features=features)


@pytest.mark.parametrize("language", ["en", "english", "EN", " English "])
def test_hub_records_filter_by_language(hub_dataset: Any, language: str) -> None:
    examples = examples_from_hub_records(hub_dataset, language=language)
    assert examples == [
        QAExample(
            "english-1",
            "What flows through Paris?",
            EN_CONTEXT,
            (Answer("The Seine", 0), Answer("Seine", 4)),
            "Seine",
        )
    ]


def test_hub_records_without_language_keep_all(hub_dataset: Any) -> None:
    assert [ex.id for ex in examples_from_hub_records(hub_dataset)] == ["english-1", "korean-1", "swahili-1"]
    assert [ex.id for ex in examples_from_hub_records(hub_dataset, language="ko")] == ["korean-1"]
    assert set(TYDI_LANGUAGES) == {"ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"}


def test_hub_records_share_read_squad_validation(hub_dataset: Any) -> None:
    with pytest.raises(DataError) as err:
        examples_from_hub_records(hub_dataset, language="en", source="my-rows", strict=True)
    message = _assert_one_line(
        err, "my-rows: question english-2: answers[0]: answer text 'Paris'", "which has"
    )
    assert message.startswith("my-rows: ")
    with pytest.raises(ConfigError, match="unknown TyDi QA language 'xx'"):
        examples_from_hub_records(hub_dataset, language="xx")


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"answers": {"text": ["The"], "answer_start": [0, 4]}}, "has 1 texts but 2 answer_start values"),
        ({"answers": [{"text": "The", "answer_start": 0}]}, ".answers is a list, expected an object"),
        ({"answers": {"text": [1], "answer_start": [0]}}, "answers.text[0] is an integer, expected a string"),
        ({"answers": {"text": ["The"]}}, "answers has no 'answer_start' list"),
        ({"context": 3}, ".context is an integer, expected a string"),
    ],
)
def test_hub_record_structure_errors(row: dict, fragment: str) -> None:
    record = {**copy.deepcopy(HUB_ROWS[0]), **row}
    with pytest.raises(DataError) as err:
        examples_from_hub_records([record], source="rows")
    _assert_one_line(err, "rows: record 0 (question english-1)", fragment)


def test_hub_duplicate_ids_raise() -> None:
    with pytest.raises(DataError, match="duplicate question id english-1"):
        examples_from_hub_records([HUB_ROWS[0], HUB_ROWS[0]])


def test_load_tydiqa_from_hub_monkeypatched(
    hub_dataset: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import datasets

    calls = []

    def fake_load_dataset(path: str, name: str, *, split: str) -> Any:
        calls.append((path, name, split))
        return hub_dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_tydiqa_from_hub("english", "validation")
    assert calls == [("google-research-datasets/tydiqa", "secondary_task", "validation")]
    assert [ex.id for ex in examples] == ["english-1"]
    assert "hub:tydiqa:en:validation: skipped 1 of 2 questions (english-2" in caplog.text

    result = load_examples("hub:tydiqa:sw:train")
    assert calls[-1] == ("google-research-datasets/tydiqa", "secondary_task", "train")
    assert [ex.id for ex in result.examples] == ["swahili-1"] and result.skipped == []
    assert str(result.path) == "hub:tydiqa:sw:train"

    with pytest.raises(DataError, match=r"^hub:tydiqa:en:validation: question english-2: "):
        load_tydiqa_from_hub("en", "validation", strict=True)


def test_load_tydiqa_from_hub_wraps_hub_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach the Hub\nTraceback-ish detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RegtuneError) as err:
        load_tydiqa_from_hub("ko", "train")
    _assert_one_line(
        err, "cannot load google-research-datasets/tydiqa", "(offline?)", "Couldn't reach the Hub"
    )
    assert "Traceback-ish" not in str(err.value)


@pytest.mark.parametrize(
    ("source", "error", "fragment"),
    [
        ("hub:tydiqa:en", ConfigError, "expected hub:tydiqa:<language>:<split>"),
        ("hub:squad:en:train", ConfigError, "expected hub:tydiqa:<language>:<split>"),
        ("hub:tydiqa:xx:train", ConfigError, "unknown TyDi QA language 'xx'"),
        ("hub:tydiqa:en:test", ConfigError, "unknown TyDi QA split 'test'"),
    ],
)
def test_load_examples_rejects_bad_hub_sources(source: str, error: type[Exception], fragment: str) -> None:
    # These fail before any download, so no monkeypatch is needed.
    with pytest.raises(error, match=r"^[^\n]*$") as err:
        load_examples(source)
    assert fragment in str(err.value)


def test_load_examples_reads_local_files(tmp_path: Path) -> None:
    path = _write(tmp_path, _squad(_qa()), "local.json")
    assert load_examples(path).examples == read_squad(path).examples
    assert load_examples(str(path)).path == path


# --- the real TyDi QA GoldP files (../shared/data/tydiqa-goldp) ----------------------------------


@pytest.mark.slow
def test_real_english_dev_keeps_every_reference(data_dir: Path) -> None:
    result = read_squad(data_dir / "en/dev.json", strict=True)
    assert len(result.examples) == 440
    assert result.skipped == []
    assert sum(len(refs) >= 2 for refs in result.references.values()) == 246


@pytest.mark.slow
def test_real_english_train(data_dir: Path) -> None:
    result = read_squad(data_dir / "en/train.json", strict=True)
    assert len(result.examples) == 3696
    assert result.skipped == []


def test_read_questions_takes_jsonl_or_squad_json_without_answers(tmp_path: Path) -> None:
    from regtune.tasks.qa.data import read_questions

    lines = tmp_path / "q.jsonl"
    lines.write_text(
        '{"question": "Who?", "context": "Ada wrote it.", "id": "a"}\n\n'
        '{"question": "When?", "context": "In 1843."}\n'
    )
    first, second = read_questions(lines)
    assert (first.id, first.question, first.answers) == ("a", "Who?", ())
    assert second.id == "line-3" and second.context == "In 1843."
    squad = tmp_path / "q.json"
    squad.write_text(
        json.dumps(
            {
                "data": [
                    {"paragraphs": [{"context": "Ada wrote it.", "qas": [{"id": "x", "question": "Who?"}]}]}
                ]
            }
        )
    )
    assert [e.id for e in read_questions(squad)] == ["x"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"context": "c"}\n', r"line 1 \(id line-1\): the question is missing or empty"),
        ('{"question": "q", "context": "c"}\nnot json\n', "line 2: not valid JSON"),
        ('{"question": "q", "context": "  "}\n', "the context is missing or empty"),
        (
            '{"question": "q", "context": "c", "id": "d"}\n{"question": "r", "context": "c", "id": "d"}\n',
            "question id d appears more than once",
        ),
        ("\n\n", "no questions in the file"),
    ],
)
def test_read_questions_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    from regtune.core.errors import DataError
    from regtune.tasks.qa.data import read_questions

    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_questions(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
