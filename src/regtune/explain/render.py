"""Pages people can look at: token heat maps of attributions, for one model or two side by side.

One section per question. Its question tokens and its context tokens sit in separate blocks, with one
heat-map row per method (per method and model on the compare page). A cell's background is its score on a
diverging scale: red positive, blue negative, intensity ``|a| / max|a|`` over that row's text tokens
(the question's whole window, [CLS]/[SEP] included, as :attr:`Attribution.text` holds them). The exact
score is the cell's tooltip. Registers are a strip of cells R0..R{R-1} before [CLS], on their own scale,
with their share of all absolute attribution as text. Outlined cells are the explained predicted span;
underlined cells are the gold span.

Every script reads as written: a cell shows its token's own characters of the source text, taken by the
tokenizer's offsets (:mod:`regtune.explain.words`), and the cells of one word touch. A block whose text
starts right-to-left (Arabic) gets ``dir=rtl``, and question, answer and predicted texts sit in
``<bdi>``, so the browser orders them right to left inside the left-to-right page; each cell's colour is
its own element's background, so it stays on its token in either direction. Glyphs come from the
system's fonts (``.ci/run`` installs Noto and Nanum for Arabic, Bengali, Telugu and Korean).

Pages are one self-contained file: inline CSS, no script, no fonts, and PNG plots embedded as base64
data URIs, so a page can be mailed or moved alone and never shows a broken image. Colours come from
CSS classes of 8 bins per sign rather than inline styles, which keeps a 200-question × 3-method page to
a few MB; ``content-visibility`` lets the browser lay out only the sections on screen.

The raw scores belong in JSON beside the page (:meth:`Attribution.to_dict`); this module only draws.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from regtune.core.errors import ConfigError
from regtune.core.io import atomic_write_text
from regtune.explain.words import Cell, Piece, group_cells, offset_pieces, shared_characters
from regtune.reporting.html import escape as _e
from regtune.reporting.html import page_head, png_figure, records_table, text_direction

if TYPE_CHECKING:  # only attributes are read: importing this module needs neither torch nor transformers
    from regtune.explain.methods import Attribution
    from regtune.tasks.inputs import ExplainInput

#: Colour bins per sign; a score under half a bin of the row's max stays white.
BINS = 8
#: Word-start markers of byte-level BPE (RoBERTa) and SentencePiece (XLM-R, DeBERTa-v3) tokens.
_WORD_STARTS = ("Ġ", "▁")
_RED, _BLUE = (214, 39, 40), (33, 102, 172)
#: Token kinds without character offsets, shown as word pieces joined by their markers.
_WORDS = ("question", "text")


def _bin_css() -> str:
    rules = []
    for k in range(1, BINS + 1):
        alpha = round(0.9 * k / BINS, 3)
        ink = ";color:#fff" if k > 0.75 * BINS else ""  # dark cells need light text to stay readable
        for name, (r, g, b) in (("p", _RED), ("n", _BLUE)):
            rules.append(f".{name}{k}{{background:rgba({r},{g},{b},{alpha}){ink}}}")
    return "".join(rules)


#: The explanation pages' own rules on top of the shared BASE_CSS.
_CSS = (
    "h3{margin:0 0 .3em;font-size:1.05em}table{font-size:.88em;margin:.4em 0 1em}"
    "section.qa{border-top:1px solid #ddd;padding:.6em 0;content-visibility:auto;"
    "contain-intrinsic-size:auto 900px}"
    ".meta{font-size:.9em;margin:.2em 0 .5em}.meta b{font-weight:600}"
    ".blk{font-size:.8em;color:#555;margin:.5em 0 .15em;text-transform:uppercase;letter-spacing:.05em}"
    ".hm{display:grid;grid-template-columns:10em max-content 1fr;gap:3px .6em;align-items:start}"
    ".hm.ctx{grid-template-columns:10em 1fr}.lab{font-size:.82em;color:#333;overflow-wrap:anywhere}"
    ".tok{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.84em;line-height:1.9}"
    "i{font-style:normal;padding:0 1px;border-radius:2px}.s{color:#555;font-size:.75em}"
    # No padding between token cells: a browser shapes a word across its cells (Arabic joining, Indic
    # conjuncts) only where no padding, border or margin sits between them. An empty cell (a whitespace
    # token) keeps a sliver to hover; a special token is its own left-to-right island in an RTL block.
    ".tok i{padding:0}.tok i:empty{padding:0 2px}.tok .s{unicode-bidi:isolate;direction:ltr}"
    ".P{outline:2px solid #111;outline-offset:-1px}.G{border-bottom:3px solid #1a7f37}"
    ".rs{white-space:nowrap;border-right:2px solid #bbb;padding-right:.4em;font-size:.78em}"
    ".rs i{display:inline-block;min-width:1.9em;text-align:center;border:1px solid #ccc;margin-right:1px}"
    ".x{background:repeating-linear-gradient(45deg,#ddd 0 3px,#fff 3px 6px)}"
    ".toc{columns:12em;font-size:.85em}" + _bin_css()
)


def _score(value: float) -> str:
    """An exact-enough score for a tooltip; never contains characters an unquoted attribute forbids."""
    return f"{value:+.4g}" if math.isfinite(value) else str(value)


def _cell(text: str, classes: Sequence[str], title: str = "") -> str:
    """One token cell, in as few bytes as stay valid HTML (there are ~10⁵ of them on a big page)."""
    cls = " ".join(c for c in classes if c)
    attrs = "" if not cls else f" class={cls}" if " " not in cls else f' class="{cls}"'
    if title:
        attrs += f" title={title}" if title.isascii() and " " not in title else f' title="{_e(title)}"'
    return f"<i{attrs}>{_e(text)}</i>"


def _bins(values: np.ndarray) -> list[str]:
    """Colour class per score: ``p1..p8`` / ``n1..n8`` by |a| / max|a| over ``values``, ``x`` for NaN/inf."""
    finite = np.isfinite(values)
    top = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    out = []
    for value, ok in zip(values.tolist(), finite.tolist(), strict=True):
        level = round(BINS * abs(value) / top) if ok and top > 0 else 0
        out.append("x" if not ok else "" if level == 0 else f"{'p' if value > 0 else 'n'}{level}")
    return out


def _pieces(inp: ExplainInput) -> list[Piece]:
    """(shown text, starts a new word) per token, so subword pieces of one word sit together.

    Inputs with character spans for their tokens (every task's) show each token's own characters
    (:func:`regtune.explain.words.offset_pieces`). Inputs built without them (by hand) fall back to:
    context tokens show the context's own characters, joined when no character lies between them; other
    tokens' markers decide: ``##`` continues a word, ``Ġ``/``▁`` starts one, and an unmarked token
    continues one only in windows whose tokenizer marks word starts.
    """
    if inp.source_spans:
        return offset_pieces(inp.tokens, inp.source_spans, inp.sources)
    context = getattr(inp.example, "context", "")
    marks_starts = any(t.startswith(_WORD_STARTS) for t in inp.tokens)
    out: list[Piece] = []
    previous_end: int | None = None
    previous_kind = "cls"
    for token, kind, offset in zip(inp.tokens, inp.kinds, inp.offsets, strict=True):
        if kind == "context" and offset is not None:
            out.append(Piece(context[offset[0] : offset[1]] or token, offset[0] != previous_end))
            previous_end = offset[1]
        elif kind not in _WORDS or previous_kind != kind:  # specials, and a block's first token
            marked = kind in _WORDS and token[:1] in _WORD_STARTS
            out.append(Piece((token[1:] or token) if marked else token, True))
        elif token.startswith("##") and len(token) > 2:
            out.append(Piece(token[2:], False))
        elif token.startswith(_WORD_STARTS) and len(token) > 1:
            out.append(Piece(token[1:], True))
        else:
            out.append(Piece(token, not marks_starts))
        if kind != "context":
            previous_end = None
        previous_kind = kind
    return out


def _span_text(inp: ExplainInput, span: tuple[int, int], pieces: Sequence[Piece]) -> str:
    start, end = inp.offsets[span[0]], inp.offsets[span[1]]
    if start is not None and end is not None:
        return inp.example.context[start[0] : end[1]]
    return "".join((" " if new else "") + text for text, new in pieces[span[0] : span[1] + 1]).strip()


def _blocks(inp: ExplainInput, bounds: Sequence[int]) -> list[list[Cell]]:
    """The heat-map cells of each block ``bounds[k]:bounds[k+1]`` of the input's tokens."""
    pieces = _pieces(inp)
    shares = shared_characters(inp.source_spans) if inp.source_spans else [False] * len(inp)
    return [group_cells(pieces, shares, range(a, b)) for a, b in itertools.pairwise(bounds)]


def _direction(inp: ExplainInput, cells: Sequence[Cell]) -> str:
    """`` dir=rtl`` for a block whose text (special tokens aside) starts right-to-left, else nothing.

    Decided here rather than by ``dir=auto``: the block starts with [CLS], whose Latin letters would
    make the browser lay an Arabic question out left to right.
    """
    text = " ".join(c.text for c in cells if inp.kinds[c.tokens.start] not in ("cls", "sep"))
    return " dir=rtl" if text_direction(text) == "rtl" else ""


def _overlap(a: range, b: range) -> bool:
    return a.start < b.stop and b.start < a.stop


def _rows(inp: ExplainInput, blocks: Sequence[Sequence[Cell]], attr: Attribution) -> list[str]:
    """One ``tok`` block of heat-map cells per block, coloured on one scale over the whole row.

    A cell of several tokens (see :func:`regtune.explain.words.group_cells`) is coloured by their summed
    score and is outlined or underlined if any of its tokens is; its tooltip lists each token's score.
    """
    text = np.asarray(attr.text, dtype=np.float64)
    scores = [[float(text[c.tokens].sum()) for c in cells] for cells in blocks]
    colours = iter(_bins(np.asarray([v for row in scores for v in row], dtype=np.float64)))
    gold = range(inp.gold_span[0], inp.gold_span[1] + 1) if inp.gold_span else range(0)
    span = range(attr.span[0], attr.span[1] + 1)
    out = []
    for cells, values in zip(blocks, scores, strict=True):
        html = []
        for cell, value in zip(cells, values, strict=True):
            classes = (
                next(colours),
                "s" if inp.kinds[cell.tokens.start] in ("cls", "sep") else "",
                "P" if _overlap(cell.tokens, span) else "",
                "G" if _overlap(cell.tokens, gold) else "",
            )
            title = _score(value)
            if len(cell.tokens) > 1:
                title += " = " + " ".join(f"{_score(text[i])} {inp.tokens[i]}" for i in cell.tokens)
            # Whitespace between cells only where a word starts: pieces of one word never wrap apart.
            html.append((" " if cell.starts_word and html else "") + _cell(cell.text, classes, title))
        out.append(f"<div class=tok{_direction(inp, cells)}>{''.join(html)}</div>")
    return out


def _register_strip(attr: Attribution) -> str:
    """R0..R{R-1} on their own scale, then the registers' share; empty for τ=0."""
    regs = np.asarray(attr.registers, dtype=np.float64)
    if regs.size == 0:
        return ""
    colours = _bins(regs)
    cells = "".join(_cell(f"R{r}", (colours[r],), _score(v)) for r, v in enumerate(regs.tolist()))
    share = f"{100 * attr.register_share:.1f}%"
    return f'<span class=rs title="register share of |attribution|: {share}">{cells} {share}</span>'


def _label(name: str, attr: Attribution) -> str:
    details = [f"target {attr.target}", f"F(x) = {attr.output:.4g}"]
    if attr.convergence_delta is not None:
        details.append(f"convergence delta {attr.convergence_delta:.3g}")
    if attr.buckets:
        details += [f"{key} {value:.3g}" for key, value in attr.buckets.items()]
    return f'<div class=lab title="{_e(", ".join(details))}">{_e(name)}</div>'


def _section(
    index: int,
    inp: ExplainInput,
    rows: Sequence[tuple[str, str, Attribution]],
    label_names: Sequence[str] | None = None,
) -> str:
    """One question: header, answers, then its question block and context block of heat-map rows; or,
    for a classified sentence, its gold and predicted labels and one block of heat-map rows.

    ``rows`` are (method, model label, attribution); the model label is empty on the run page.
    """
    if "text" in inp.kinds:
        return _sentence_section(index, inp, rows, label_names)
    pieces = _pieces(inp)
    first_context = next((i for i, k in enumerate(inp.kinds) if k == "context"), len(inp))
    blocks = _blocks(inp, (0, first_context, len(inp)))
    # <bdi>: each text takes its own direction (an Arabic answer), isolated from the labels around it.
    answers = " | ".join(f"<bdi>{_e(a.text)}</bdi>" for a in inp.example.answers) or "(none)"
    gold = f"tokens {inp.gold_span[0]}–{inp.gold_span[1]}" if inp.gold_span else "not in this window"
    meta = [f"<b>Question:</b> <bdi>{_e(inp.example.question)}</bdi>", f"<b>Gold:</b> {answers} ({gold})"]
    for model in dict.fromkeys(model for _, model, _ in rows):
        # Every method of a model explains its one predicted span, unless a caller chose other spans.
        spans = dict.fromkeys(tuple(attr.span) for _, m, attr in rows if m == model)
        texts = " | ".join(
            f"<bdi>{_e(_span_text(inp, s, pieces))}</bdi> (tokens {s[0]}–{s[1]})" for s in spans
        )
        meta.append(f"<b>Predicted{f' ({_e(model)})' if model else ''}:</b> {texts}")
    question, context = [], []
    for method, model, attr in rows:
        label = _label(f"{method} · {model}" if model else method, attr)
        asked, passage = _rows(inp, blocks, attr)
        question.append(f"{label}<div>{_register_strip(attr)}</div>{asked}")
        context.append(label + passage)
    return (
        f"<section class=qa id=q{index}><h3>{_e(inp.question_id)}</h3>"
        f"<div class=meta>{'<br>'.join(meta)}</div>"
        f"<div class=blk>question</div><div class=hm>{''.join(question)}</div>"
        f"<div class=blk>context</div><div class='hm ctx'>{''.join(context)}</div></section>"
    )


def _sentence_section(
    index: int,
    inp: ExplainInput,
    rows: Sequence[tuple[str, str, Attribution]],
    label_names: Sequence[str] | None,
) -> str:
    """One classified sentence (or pair): gold and predicted labels, then one heat-map row per method."""

    def name(label: int | None) -> str:
        if label is None:
            return "(none)"
        return str(label_names[label]) if label_names and 0 <= label < len(label_names) else f"class {label}"

    blocks = _blocks(inp, (0, len(inp)))
    meta = [f"<b>Gold:</b> {_e(name(inp.gold_label))}"]
    for model in dict.fromkeys(model for _, model, _ in rows):
        labels = dict.fromkeys(attr.label for _, m, attr in rows if m == model)
        verdict = " | ".join(
            _e(name(label)) + (" ✓" if label == inp.gold_label else " ✗") for label in labels
        )
        meta.append(f"<b>Predicted{f' ({_e(model)})' if model else ''}:</b> {verdict}")
    rows_html = []
    for method, model, attr in rows:
        label = _label(f"{method} · {model}" if model else method, attr)
        [cells] = _rows(inp, blocks, attr)
        rows_html.append(f"{label}<div>{_register_strip(attr)}</div>{cells}")
    return (
        f"<section class=qa id=q{index}><h3>{_e(inp.question_id)}</h3>"
        f"<div class=meta>{'<br>'.join(meta)}</div>"
        f"<div class=blk>sentence ([CLS], whose state the head reads, outlined)</div>"
        f"<div class=hm>{''.join(rows_html)}</div></section>"
    )


def _check(
    inputs: Sequence[ExplainInput], attributions: Mapping[str, Sequence[Attribution]], what: str
) -> None:
    """Every method has one attribution per input, in order, sized to its window (the caller's data)."""
    for method, attrs in attributions.items():
        if len(attrs) != len(inputs):
            raise ConfigError(
                f"{what}: method {method!r} has {len(attrs)} attributions for {len(inputs)} inputs"
            )
        for inp, attr in zip(inputs, attrs, strict=True):
            if attr.question_id != inp.question_id:
                raise ConfigError(
                    f"{what}: method {method!r} explains {attr.question_id!r} where {inp.question_id!r} "
                    "is expected; pass attributions in the order of the inputs"
                )
            if len(attr.text) != len(inp) or not (0 <= attr.span[0] <= attr.span[1] < len(inp)):
                raise ConfigError(
                    f"{what}: {method!r} on {inp.question_id!r} has {len(attr.text)} scores and span "
                    f"{attr.span} for a window of {len(inp)} tokens"
                )


def _summary_table(summary: Sequence[Mapping[str, Any]], heading: str = "Summary") -> str:
    if not summary:
        return ""
    return f"<h2>{_e(heading)}</h2>{records_table(summary)}"


def _legend(compare: bool, sentences: bool = False) -> str:
    """How to read the page; ``sentences`` for classified sentences (one block, [CLS] outlined)."""
    blank = "\u2002"  # an en space: a legend swatch needs a width
    scale = "".join(_cell(blank, (f"n{k}",)) for k in range(BINS, 0, -1))
    scale += _cell("0", ()) + "".join(_cell(blank, (f"p{k}",)) for k in range(1, BINS + 1))
    rows = "rows of model A and model B one above the other per method" if compare else "one row per method"
    if sentences:
        layout = f"Each sentence has one block with {rows}, under its gold label and each model's prediction"
        covered = "[CLS]/[SEP] included"
        marks = (
            "<span class=tok><i class=P title=cls>[CLS]</i> <i class=s title=special>[SEP]</i> "
            '<i class="x" title=nan>nan</i></span>: [CLS], whose final state the classifier reads, is '
            "outlined, special tokens muted, non-finite scores hatched."
        )
    else:
        layout = f"Each question has a question block and a context block with {rows}"
        covered = "[CLS]/[SEP] and question included"
        marks = (
            "<span class=tok><i class=P title=span>predicted</i> <i class=G title=gold>gold</i> "
            '<i class=s title=special>[CLS]</i> <i class="x" title=nan>nan</i></span>: the explained '
            "predicted span is outlined, the gold span underlined, special tokens muted, non-finite scores "
            "hatched."
        )
    return (
        f"<div class=aid><b>How to read this page.</b> {layout}. Colour: <span class=tok>−max {scale} +max"
        "</span>, red for positive and blue for negative attribution, intensity |a|/max|a| over the row's "
        f"text tokens ({covered}), so rows compare by pattern, not by size. Hover a cell for its exact "
        f"score, a row label for the explained target and output. {marks} Cells show the text as written "
        "(the tokenizer's offsets): tokens that share a letter (the byte pieces of one letter, a vowel sign "
        "cut from its consonant) share one cell, coloured by their summed score. The strip "
        "<span class=rs><i title=register>R0</i></span> before [CLS] holds the registers on their own "
        "scale (|r|/max|r| over registers), followed by their share of all absolute attribution; a model "
        "without registers has no strip.</div>"
    )


def _notes(notes: Sequence[str]) -> str:
    return "<h2>Notes</h2><ul>" + "".join(f"<li class=note>{_e(n)}</li>" for n in notes) + "</ul>"


def _page(
    title: str,
    inputs: Sequence[ExplainInput],
    sections: Sequence[str],
    *,
    compare: bool,
    subtitle: str,
    summary: Sequence[Mapping[str, Any]],
    images: Sequence[Path],
    notes: Sequence[str],
    unit: str = "question",
) -> str:
    figures = "".join(png_figure(p) for p in images)  # read first: a missing image fails before any HTML
    toc = "".join(f"<li><a href=#q{i}>{_e(inp.question_id)}</a></li>" for i, inp in enumerate(inputs))
    sentences = any("text" in inp.kinds for inp in inputs)
    parts = [*page_head(title, _CSS, subtitle), _legend(compare, sentences=sentences)]
    if notes:
        parts.append(_notes(notes))
    parts.append(_summary_table(summary))
    if figures:
        parts.append(f"<h2>Plots</h2>{figures}")
    # A long index would push the first question off screen: fold it beyond a screenful of ids.
    parts.append(
        f"<h2>{unit.capitalize()}s</h2><details{' open' if len(inputs) <= 30 else ''}><summary>index of "
        f"{len(inputs)} {unit}s</summary><ul class=toc>{toc}</ul></details>"
    )
    parts.extend(sections)
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"


def write_explain_page(
    path: Path,
    *,
    title: str,
    inputs: Sequence[ExplainInput],
    attributions: Mapping[str, Sequence[Attribution]],
    summary: Sequence[Mapping[str, Any]] = (),
    images: Sequence[Path] = (),
    notes: Sequence[str] = (),
    label_names: Sequence[str] | None = None,
    unit: str = "question",
) -> Path:
    """Write one model's heat-map page (atomically) and return its path.

    Args:
        path: The HTML file to write; its folder is created.
        title: Page title.
        inputs: The explained windows, one section each, in this order.
        attributions: Method name -> one :class:`Attribution` per input, in the order of ``inputs``.
        summary: Rows of a summary table shown on top (column order: first appearance of each key).
        images: PNG plots, embedded in the page.
        notes: Plain-text remarks shown on top.
        label_names: Class names by id, for classification pages.
        unit: What one input is ("question", "example").

    Raises:
        ConfigError: Attributions that do not match the inputs, or an image that is missing or not a PNG.
    """
    _check(inputs, attributions, str(path))
    sections = [
        _section(i, inp, [(method, "", attrs[i]) for method, attrs in attributions.items()], label_names)
        for i, inp in enumerate(inputs)
    ]
    subtitle = f"{len(inputs)} {unit}s · methods: {', '.join(attributions) or 'none'}"
    page = _page(
        title,
        inputs,
        sections,
        compare=False,
        subtitle=subtitle,
        summary=summary,
        images=images,
        notes=notes,
        unit=unit,
    )
    return atomic_write_text(path, page)


def write_compare_page(
    path: Path,
    *,
    title: str,
    inputs: Sequence[ExplainInput],
    attributions_a: Mapping[str, Sequence[Attribution]],
    attributions_b: Mapping[str, Sequence[Attribution]],
    labels: tuple[str, str] = ("A", "B"),
    summary: Sequence[Mapping[str, Any]] = (),
    images: Sequence[Path] = (),
    notes: Sequence[str] = (),
    label_names: Sequence[str] | None = None,
    unit: str = "question",
) -> Path:
    """Write a page comparing two models on the same windows (atomically) and return its path.

    Per question and method, model A's row sits above model B's, each coloured on its own scale. Both
    models must have been explained on the same :class:`ExplainInput` windows, so rows align by token. A
    method only one model has gets only that model's row. Arguments are as for
    :func:`write_explain_page`; ``labels`` name the two models.

    Raises:
        ConfigError: Attributions that do not match the inputs, equal labels, or a bad image.
    """
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ConfigError(f"{path}: need two different model labels, got {labels!r}")
    _check(inputs, attributions_a, f"{path} ({labels[0]})")
    _check(inputs, attributions_b, f"{path} ({labels[1]})")
    methods = list(dict.fromkeys([*attributions_a, *attributions_b]))
    sections = []
    for i, inp in enumerate(inputs):
        rows = [
            (method, label, attrs[method][i])
            for method in methods
            for label, attrs in zip(labels, (attributions_a, attributions_b), strict=True)
            if method in attrs
        ]
        sections.append(_section(i, inp, rows, label_names))
    subtitle = f"{labels[0]} vs {labels[1]} · {len(inputs)} {unit}s · methods: {', '.join(methods) or 'none'}"
    page = _page(
        title,
        inputs,
        sections,
        compare=True,
        subtitle=subtitle,
        summary=summary,
        images=images,
        notes=notes,
        unit=unit,
    )
    return atomic_write_text(path, page)


def write_figure_page(
    path: Path,
    *,
    title: str,
    subtitle: str = "",
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    images: Sequence[Path] = (),
    notes: Sequence[str] = (),
) -> Path:
    """A page of tables and PNG plots (``regtune analyze``), no heat maps, no network.

    The plots are linked by relative path, not embedded: they are result files beside the page already,
    and embedding them would store every plot twice.

    Args:
        path: The HTML file to write (atomically).
        title: Page title.
        subtitle: One line under the title.
        tables: Heading -> rows (dicts of column -> value), one table each, in order.
        images: PNG files, linked relative to the page (keep them with it when moving it).
        notes: Lines listed under "Notes".
    """
    figures = "".join(png_figure(p, Path(path).parent) for p in images)
    parts = page_head(title, _CSS, subtitle)
    if notes:
        parts.append(_notes(notes))
    for heading, rows in (tables or {}).items():
        parts.append(_summary_table(rows, heading))
    if figures:
        parts.append(f"<h2>Plots</h2>{figures}")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(p for p in parts if p) + "\n")
