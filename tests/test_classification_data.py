"""The classification reader: TSV/CSV/JSONL, columns, pairs, stable label ids, and every bad input.

Bad input is one line naming the file, the line and what is wrong; per-row problems are skipped and
counted unless strict; file-level problems always stop. Through the CLI: exit status 2, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regtune.cli import main as cli
from regtune.core.errors import DataError
from regtune.tasks import infer_task
from regtune.tasks.classification.data import label_order, read_classification, write_jsonl

HEADER = "sentence\tlabel\n"


def _tsv(tmp_path: Path, body: str, name: str = "data.tsv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def test_reads_tsv_rows_in_order_with_line_ids(tmp_path: Path) -> None:
    path = _tsv(tmp_path, 'a "quoted" film\t1\nbleak\t0\n\n')
    data = read_classification(path)
    assert [(e.id, e.texts, e.label) for e in data.examples] == [
        ("line-2", ('a "quoted" film',), "1"),  # TSV: no quoting, the quotes are text (GLUE's convention)
        ("line-3", ("bleak",), "0"),
    ]
    assert data.skipped == []


def test_reads_csv_with_quoting_and_sentence_pairs(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text('premise,hypothesis,gold\n"a, b",c,yes\n"two\nlines",d,no\n', encoding="utf-8")
    data = read_classification(path, text_columns=("premise", "hypothesis"), label_column="gold")
    assert [(e.texts, e.label) for e in data.examples] == [
        (("a, b", "c"), "yes"),
        (("two\nlines", "d"), "no"),
    ]


def test_reads_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "good", "y": 1}\n\n{"text": "bad", "y": "0"}\n', encoding="utf-8")
    data = read_classification(path, text_columns=("text",), label_column="y")
    assert [(e.id, e.texts[0], e.label) for e in data.examples] == [
        ("line-1", "good", "1"),
        ("line-3", "bad", "0"),
    ]


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("ok\t1\n   \t0\n", 3, "empty text in column 'sentence'"),
        ("ok\t1\nno label here\t\n", 3, "no label in column 'label'"),
        ("ok\t1\ntoo\tmany\tfields\n", 3, "has 3 fields, the header has 2"),
        ("ok\t1\njust one field\n", 3, "has 1 fields, the header has 2"),
    ],
    ids=["empty-text", "missing-label", "ragged-long", "ragged-short"],
)
def test_row_problems_are_skipped_and_counted_or_raise_when_strict(
    tmp_path: Path, body: str, line: int, reason: str
) -> None:
    path = _tsv(tmp_path, body)
    data = read_classification(path)
    assert [e.id for e in data.examples] == ["line-2"]
    assert [(s.example_id, s.reason) for s in data.skipped] == [(f"line-{line}", reason)]
    with pytest.raises(DataError) as err:
        read_classification(path, strict=True)
    assert str(err.value) == f"{path}: line {line}: {reason}"


def test_bad_jsonl_lines_are_row_problems(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"sentence": "ok", "label": 1}\n[1, 2]\n{"sentence": "x"\n', encoding="utf-8")
    data = read_classification(path)
    assert [(s.example_id, s.reason.split(" (")[0]) for s in data.skipped] == [
        ("line-2", "not a JSON object"),
        ("line-3", "not valid JSON"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\n  \n", "empty file"),
        (HEADER.encode(), "no rows after the header"),
        (b"sentence\tlabel\ncaf\xe9\t1\n", "line 2: not UTF-8 (byte 0xe9); save the file as UTF-8"),
        (b"text\tlabel\nhi\t1\n", "no column 'sentence'; the columns are 'text', 'label'"),
    ],
    ids=["empty", "blank", "header-only", "not-utf8", "missing-column"],
)
def test_file_problems_always_raise(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_classification(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown classification file type '\.txt'"):
        read_classification(tmp_path / "x.txt")
    with pytest.raises(DataError, match="no such file"):
        read_classification(tmp_path / "missing.tsv")


def test_dev_label_unseen_in_train_is_an_error(tmp_path: Path) -> None:
    path = _tsv(tmp_path, "fine\t1\nodd\t2\n")
    with pytest.raises(DataError) as err:
        read_classification(path, labels=["0", "1"])
    assert str(err.value) == f"{path}: line 3: label '2' is not in the training labels (0, 1)"


def test_label_order_is_stable_and_numeric_when_labels_are_integers(tmp_path: Path) -> None:
    numeric = read_classification(_tsv(tmp_path, "a\t10\nb\t2\nc\t1\n", "n.tsv")).examples
    assert label_order(numeric) == ["1", "2", "10"]  # not "1", "10", "2"
    assert label_order(list(reversed(numeric))) == ["1", "2", "10"]  # row order does not matter
    text = read_classification(_tsv(tmp_path, "a\tpos\nb\tneg\nc\tneutral\n", "t.tsv")).examples
    assert label_order(text) == ["neg", "neutral", "pos"]


def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    data = read_classification(_tsv(tmp_path, "one\t0\ntwo\t1\n"))
    out = write_jsonl(data.examples, tmp_path / "copy.jsonl", text_columns=["sentence"], label_column="label")
    again = read_classification(out)
    assert [(e.texts, e.label) for e in again.examples] == [(e.texts, e.label) for e in data.examples]


def test_task_is_inferred_from_the_extension() -> None:
    assert infer_task("x/train.tsv") == infer_task("a.csv") == infer_task("a.JSONL") == "classification"
    assert infer_task("en/train.json") == infer_task("hub:tydiqa:en:train") == "qa"
    assert infer_task("notes.txt") is None


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        ("ok\t1\n", "text\tlabel\n", "no column 'sentence'"),
        ("", HEADER, "no rows after the header"),
        ("ok\t1\n\t0\n", HEADER, "line 3: empty text in column 'sentence'"),
    ],
    ids=["missing-column", "header-only", "strict-empty-text"],
)
def test_cli_bad_classification_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, header: str, message: str
) -> None:
    bad = _tsv(tmp_path, body, header=header)
    good = _tsv(tmp_path, "fine\t1\nbad\t0\n", name="good.tsv")
    argv = [
        "train",
        "--train",
        str(bad),
        "--dev",
        str(good),
        "--output-dir",
        str(tmp_path / "run"),
        "--strict",
    ]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"regtune: error: {bad}: ") and message in err


def test_cli_needs_task_when_the_extension_says_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.txt"
    path.write_text("x", encoding="utf-8")
    code = cli.main(["train", "--train", str(path), "--dev", str(path), "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot tell the task" in err and "--task" in err


def test_jsonl_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "hi", "label": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="no column 'sentence'"):
        read_classification(path)


def test_a_row_the_csv_module_cannot_read_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text("sentence,label\nfine,1\n" + "x" * 200_000 + ",0\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_classification(path)
    assert str(err.value).startswith(f"{path}: line 3: unreadable (field larger than field limit")


@pytest.mark.parametrize(
    ("value", "kind"), [([1, 2], "list"), ({"a": 1}, "dict"), (True, "bool"), (1.0, "float")], ids=str
)
def test_jsonl_non_scalar_labels_are_row_problems(tmp_path: Path, value: object, kind: str) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"sentence": "fine", "label": 1}, {"sentence": "odd", "label": value}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = read_classification(path)
    assert [e.label for e in data.examples] == ["1"]  # a JSON integer label is its digits
    assert data.skipped[0].example_id == "line-2" and f"holds {kind}" in data.skipped[0].reason


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    # U+2028 and \x85 are line breaks to str.splitlines, but not to JSONL (only "\n" ends a record).
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"sentence": "a\u2028b\x85c", "label": 0}, ensure_ascii=False) + "\r\n")
    data = read_classification(path)
    assert [(e.id, e.texts[0]) for e in data.examples] == [("line-1", "a\u2028b\x85c")]
    out = write_jsonl(data.examples, tmp_path / "copy.jsonl", text_columns=["sentence"], label_column="label")
    assert read_classification(out).examples[0].texts == data.examples[0].texts


def test_integer_labels_that_tie_keep_one_order(tmp_path: Path) -> None:
    first = read_classification(_tsv(tmp_path, "a\t01\nb\t1\nc\t+1\nd\t0\n", "a.tsv")).examples
    second = read_classification(_tsv(tmp_path, "a\t+1\nb\t0\nc\t1\nd\t01\n", "b.tsv")).examples
    assert label_order(first) == label_order(second) == ["0", "+1", "01", "1"]


def test_label_column_may_not_be_a_text_column() -> None:
    from regtune.core.errors import ConfigError
    from regtune.training.config import resolve_config

    with pytest.raises(ConfigError, match="both a text and the label"):
        resolve_config(task="classification", text_columns=["label"], label_column="label")


def test_cli_dev_label_unseen_in_train_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = _tsv(tmp_path, "fine\tpos\nbad\tneg\n", name="train.tsv")
    dev = _tsv(tmp_path, "ok\tpos\nmeh\tneutral\n", name="dev.tsv")
    code = cli.main(["train", "--train", str(train), "--dev", str(dev), "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{dev}: line 3: label 'neutral' is not in the training labels (neg, pos)" in err
