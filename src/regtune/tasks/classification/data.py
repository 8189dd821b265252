"""Read and validate sentence-classification files: TSV, CSV or JSONL, one example per row.

* **TSV** (``.tsv``): a header row, tab-separated, no quoting (GLUE's convention: SST-2 sentences hold
  ``"`` characters that a CSV reader would take for quotes).
* **CSV** (``.csv``): a header row, RFC 4180 quoting.
* **JSONL** (``.jsonl``): one JSON object per line.

Columns are chosen by name: one text column, or two for sentence pairs, and one label column. Labels are
kept as strings (``"0"``, ``"positive"``); :func:`label_order` maps them to ids in a stable order.

Two kinds of problem, as for QA files:

* **File-level problems always raise** :class:`~regtune.core.errors.DataError`: a missing file, bytes
  that are not UTF-8, an empty file (or a header without rows), a column that is not in the header, and a
  label (in a dev file) that the training file does not have.
* **Per-row problems are skipped and counted** unless ``strict``: an empty or missing text, a missing or
  empty label, a ragged row (more or fewer fields than the header), a JSONL line that is not a JSON
  object. With ``strict`` the first one raises.

Every message is one line: ``"{file}: line {n}: {what is wrong}"``. An example's id is its line number in
the file (``"line-7"``), so per-example scores can be paired across models.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regtune.core.errors import DataError
from regtune.core.io import atomic_write_text, read_utf8_text
from regtune.tasks.base import Skip, TaskData

logger = logging.getLogger(__name__)

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
_SKIPS_SHOWN = 3


@dataclass(frozen=True)
class ClassificationExample:
    """One row: its id (``line-N``), its text(s) (one, or two for a pair), its label (None: unlabelled)."""

    id: str
    texts: tuple[str, ...]
    label: str | None


class _RowProblem(Exception):
    """A per-row problem: skipped in non-strict mode, a DataError in strict mode."""


class _FileProblem(Exception):
    """A problem the reader cannot step over: always a DataError naming the file."""


def file_format(path: str | Path) -> str:
    """``tsv``, ``csv`` or ``jsonl`` from the file extension; a DataError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown classification file type '{suffix}'; use .tsv, .csv or .jsonl")
    return FORMATS[suffix]


def _read_text(path: Path) -> str:
    text = read_utf8_text(path)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


def _delimited_rows(text: str, fmt: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, row dict or None, problem) per data row; first the header, for the caller to check."""
    # newline="" lets the csv module see quoted fields that span lines, and count lines right.
    source = io.StringIO(text, newline="")
    if fmt == "tsv":
        reader: Any = csv.reader(source, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(source)
    header = _next_row(reader)
    yield 1, {"__header__": header}, ""
    while (fields_ := _next_row(reader)) is not None:
        line = reader.line_num
        if not fields_ or (len(fields_) == 1 and not fields_[0].strip()):
            continue  # a blank line (often the last one)
        if len(fields_) != len(header):
            yield line, None, f"has {len(fields_)} fields, the header has {len(header)}"
            continue
        yield line, dict(zip(header, fields_, strict=True)), ""


def _next_row(reader: Any) -> list[str] | None:
    """The next row, None at the end; a row the csv module cannot read ends the file with a DataError."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as err:
        raise _FileProblem(f"line {reader.line_num}: unreadable ({err})") from None


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    # Only "\n" ends a JSONL line: str.splitlines would also split at U+2028, \x85, ... which JSON
    # strings may hold raw (json.dumps with ensure_ascii=False writes them so).
    for line_no, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield line_no, None, f"not valid JSON ({err.msg})"
            continue
        if not isinstance(record, dict):
            yield line_no, None, "not a JSON object"
            continue
        yield line_no, record, ""


def _field_text(record: dict[str, Any], column: str) -> str | None:
    """A field as text; JSONL integers become their digits, lists, objects, booleans and floats are refused
    (``1.0`` and ``1`` would otherwise be two classes)."""
    value = record.get(column)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _RowProblem(f"column '{column}' holds {type(value).__name__} {json.dumps(value)[:40]}, not text")


def _example(
    record: dict[str, Any], line: int, text_columns: Sequence[str], label_column: str | None
) -> ClassificationExample:
    texts = []
    for column in text_columns:
        text = _field_text(record, column)
        if text is None:
            raise _RowProblem(f"no text in column '{column}'")
        if not text.strip():
            raise _RowProblem(f"empty text in column '{column}'")
        texts.append(text)
    label = None
    if label_column is not None:
        label = _field_text(record, label_column)
        if label is None or not label.strip():
            raise _RowProblem(f"no label in column '{label_column}'")
        label = label.strip()
    return ClassificationExample(id=f"line-{line}", texts=tuple(texts), label=label)


def _check_columns(path: Path, present: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(c) for c in missing)}; the columns are "
            f"{', '.join(repr(c) for c in present)}"
        )


def read_classification(
    path: str | Path,
    *,
    text_columns: Sequence[str] = ("sentence",),
    label_column: str | None = "label",
    strict: bool = False,
    labels: Sequence[str] | None = None,
) -> TaskData:
    """Read a TSV, CSV or JSONL file of labelled (or, with ``label_column=None``, unlabelled) texts.

    Args:
        text_columns: One column name, or two for sentence pairs.
        label_column: The label's column; None reads texts only (for prediction).
        strict: Raise on the first bad row instead of skipping it.
        labels: The labels a model knows (the training file's): another label is a DataError.

    Returns:
        A :class:`TaskData` of :class:`ClassificationExample` in file order, and the skipped rows.
    """
    path = Path(path)
    if not 1 <= len(text_columns) <= 2:
        raise DataError(f"give one text column, or two for sentence pairs; got {list(text_columns)}")
    fmt = file_format(path)
    text = _read_text(path)
    try:
        examples, skipped, seen_columns = _collect(path, fmt, text, text_columns, label_column, strict)
    except _FileProblem as err:
        raise DataError(f"{path}: {err}") from None
    if fmt == "jsonl" and not examples and seen_columns:
        _check_columns(path, sorted(seen_columns), [*text_columns, *([label_column] if label_column else [])])
    if not examples and not skipped:
        raise DataError(f"{path}: no rows after the header")
    if labels is not None:
        _check_labels(path, examples, labels)
    if skipped:
        shown = ", ".join(f"{s.example_id} ({s.reason})" for s in skipped[:_SKIPS_SHOWN])
        more = ", ..." if len(skipped) > _SKIPS_SHOWN else ""
        logger.warning("%s: skipped %d bad rows: %s%s", path, len(skipped), shown, more)
    return TaskData(path=path, examples=examples, skipped=skipped)


def _collect(
    path: Path,
    fmt: str,
    text: str,
    text_columns: Sequence[str],
    label_column: str | None,
    strict: bool,
) -> tuple[list[ClassificationExample], list[Skip], set[str]]:
    """The usable examples, the skipped rows, and (JSONL) every key seen."""
    wanted = [*text_columns, *([label_column] if label_column else [])]
    rows = _jsonl_rows(text) if fmt == "jsonl" else _delimited_rows(text, fmt)
    examples: list[ClassificationExample] = []
    skipped: list[Skip] = []
    seen_columns: set[str] = set()
    for line, record, problem in rows:
        if record is not None and "__header__" in record:
            _check_columns(path, record["__header__"], wanted)
            continue
        try:
            if record is None:
                raise _RowProblem(problem)
            if fmt == "jsonl":
                seen_columns.update(record)
            examples.append(_example(record, line, text_columns, label_column))
        except _RowProblem as err:
            if strict:
                raise DataError(f"{path}: line {line}: {err}") from None
            skipped.append(Skip(f"line-{line}", str(err)))
    return examples, skipped, seen_columns


def _check_labels(path: Path, examples: Sequence[ClassificationExample], labels: Sequence[str]) -> None:
    known = set(labels)
    for example in examples:
        if example.label is not None and example.label not in known:
            raise DataError(
                f"{path}: {example.id.replace('-', ' ')}: label '{example.label}' is not in the training "
                f"labels ({', '.join(labels)})"
            )


def label_order(examples: Sequence[ClassificationExample]) -> list[str]:
    """The labels of ``examples`` in a stable order: numerically if all are integers, else sorted as text.

    The order depends only on the set of labels, never on the row order, so two runs on the same data (or
    a shuffled copy) map labels to the same ids.
    """
    found = {e.label for e in examples if e.label is not None}
    try:
        return sorted(found, key=lambda label: (int(label), label))  # "1" and "01" tie on int: text decides
    except ValueError:
        return sorted(found)


def write_jsonl(
    examples: Sequence[ClassificationExample],
    path: str | Path,
    *,
    text_columns: Sequence[str],
    label_column: str | None,
) -> Path:
    """Write ``examples`` as JSONL with the given column names (atomically); ids become line numbers."""
    lines = []
    for example in examples:
        record: dict[str, Any] = dict(zip(text_columns, example.texts, strict=True))
        if label_column is not None and example.label is not None:
            record[label_column] = example.label
        lines.append(json.dumps(record, ensure_ascii=False))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
