"""regtune.explain.render: heat-map pages for one model and for two, from hand-made windows and scores.

No model and no tokenizer: the windows are written out token by token (BERT-style ``##`` pieces, with the
offsets a fast tokenizer would give), so every cell count, colour bin and span mark is known here.
"""

from __future__ import annotations

import html
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from regtune.core.errors import ConfigError
from regtune.explain.methods import Attribution
from regtune.explain.render import BINS, _pieces, write_compare_page, write_explain_page, write_figure_page
from regtune.tasks.inputs import ExplainInput
from regtune.tasks.qa.data import Answer, QAExample
from test_report import PROBE, chromium_binary, run_chromium

METHODS = ("ig", "attn-grad", "lrp")
EVIL = '<script>alert("x")</script>'


def make_input(
    qid: str, question: list[str], words: list[str], gold: tuple[int, int] | None, text: str | None = None
) -> ExplainInput:
    """A BERT-style window ``[CLS] question [SEP] context [SEP]``; ``##`` words join their predecessor.

    ``gold`` is in context-word indices; the returned gold span is in window token indices. ``text`` is
    the question as written (default: the tokens joined).
    """
    context, offsets, pieces = "", [], []
    for word in words:
        if word.startswith("##"):
            start = len(context)
            context += word[2:]
        else:
            context += " " if context else ""
            start = len(context)
            context += word.capitalize()  # display must come from the context, not the lowercase token
        offsets.append((start, len(context)))
        pieces.append(word)
    tokens = ("[CLS]", *question, "[SEP]", *pieces, "[SEP]")
    kinds = ("cls", *["question"] * len(question), "sep", *["context"] * len(pieces), "sep")
    first = len(question) + 2
    all_offsets = (None,) * first + tuple(offsets) + (None,)
    span = None if gold is None else (first + gold[0], first + gold[1])
    answers = () if gold is None else (Answer(context[offsets[gold[0]][0] : offsets[gold[1]][1]], 0),)
    return ExplainInput(
        example=QAExample(id=qid, question=text or " ".join(question), context=context, answers=answers),
        input_ids=tuple(range(len(tokens))),
        token_type_ids=None,
        tokens=tokens,
        kinds=kinds,  # type: ignore[arg-type]
        offsets=all_offsets,
        gold_span=span,
    )


def make_attribution(inp: ExplainInput, method: str, num_registers: int, seed: int) -> Attribution:
    rng = np.random.default_rng(seed)
    first = inp.kinds.index("context")
    return Attribution(
        question_id=inp.question_id,
        method=method,
        target="span",
        span=(first, first + 1),
        text=rng.normal(size=len(inp)),
        registers=rng.normal(size=num_registers),
        output=1.5,
        convergence_delta=0.01 if method == "ig" else None,
    )


INPUTS = [
    make_input(
        "q-hamlet",
        ["who", "wrote", "ham", "##let", "?"],
        ["ham", "##let", "was", "written", "by", "shake", "##speare", "."],
        (5, 6),
    ),
    make_input("q-evil", ["<", "script", ">", "what", "?"], ["nothing", "&", "<b>", "here"], (1, 1), EVIL),
    make_input("q-nogold", ["why", "?"], ["because", "reasons"], None),
]


def attributions_for(num_registers: int, seed: int = 0) -> dict[str, list[Attribution]]:
    return {
        method: [
            make_attribution(inp, method, num_registers, seed + 10 * m + q) for q, inp in enumerate(INPUTS)
        ]
        for m, method in enumerate(METHODS)
    }


# --- reading a page back ------------------------------------------------------------------------------------

CELL = re.compile(r'<i(?: class=("[^"]*"|[^ >]+))?(?: title=([^ >]+))?>(.*?)</i>')


def cells(fragment: str) -> list[tuple[set[str], str, str]]:
    """(classes, title, shown text) of every token cell in ``fragment``."""
    return [(set(c.strip('"').split()), t, html.unescape(x)) for c, t, x in CELL.findall(fragment)]


def sections(page: str) -> list[str]:
    return re.findall(r"<section.*?</section>", page, re.S)


def token_rows(section: str) -> list[str]:
    """The question rows, then the context rows, of one section (each a <div class=tok>)."""
    return re.findall(r"<div class=tok>(.*?)</div>", section, re.S)


class TagBalance(HTMLParser):
    """Fails on a closing tag that does not close the innermost open one (void elements aside)."""

    VOID = frozenset({"meta", "br", "img"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def assert_balanced(page: str) -> None:
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.stack == []


@pytest.fixture(scope="module")
def plot_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3, 2))
    FigureCanvasAgg(figure)
    figure.subplots().bar(["τ=0", "τ=4"], [0.0, 0.3])
    path = tmp_path_factory.mktemp("plots") / "register share.png"
    figure.savefig(path, format="png", dpi=60)
    return path


# --- the run page -------------------------------------------------------------------------------------------


def test_explain_page_structure(tmp_path: Path, plot_png: Path) -> None:
    attributions = attributions_for(num_registers=4)
    summary = [{"method": "ig", "register_share": 0.123456, "n": 3}, {"method": "<lrp>", "n": 2}]
    path = write_explain_page(
        tmp_path / "out" / "explain.html",
        title="τ=4 <run>",
        inputs=INPUTS,
        attributions=attributions,
        summary=summary,
        images=[plot_png],
        notes=["a note & more"],
    )
    page = path.read_text(encoding="utf-8")
    assert_balanced(page)
    assert "<script" not in page.lower() and html.escape(EVIL) in page
    assert html.escape("τ=4 <run>") in page and "a note &amp; more" in page and "&lt;lrp&gt;" in page
    assert "0.1235" in page  # summary floats at 4 significant digits
    assert not re.search(r'(?:src|href)="?(?:https?:)?//', page)  # nothing external
    assert page.count('<img src="data:image/png;base64,') == 1

    found = sections(page)
    assert len(found) == len(INPUTS)
    for inp, section in zip(INPUTS, found, strict=True):
        rows = token_rows(section)
        assert len(rows) == 2 * len(METHODS)  # a question row and a context row per method
        first_context = inp.kinds.index("context")
        for m, method in enumerate(METHODS):
            attr = attributions[method][INPUTS.index(inp)]
            row = cells(rows[m]) + cells(rows[len(METHODS) + m])
            assert len(row) == len(inp)
            assert len(cells(rows[m])) == first_context  # [CLS] question [SEP] sit in the question block
            assert [title for _, title, _ in row] == [f"{v:+.4g}" for v in attr.text]
            predicted = [i for i, (classes, _, _) in enumerate(row) if "P" in classes]
            assert predicted == list(range(attr.span[0], attr.span[1] + 1))
            gold = [i for i, (classes, _, _) in enumerate(row) if "G" in classes]
            expected = [] if inp.gold_span is None else list(range(inp.gold_span[0], inp.gold_span[1] + 1))
            assert gold == expected
            specials = [i for i, (classes, _, _) in enumerate(row) if "s" in classes]
            assert specials == [i for i, k in enumerate(inp.kinds) if k in ("cls", "sep")]
        strips = re.findall(r"<span class=rs.*?</span>", section, re.S)
        assert len(strips) == len(METHODS)
        assert [x for _, _, x in cells(strips[0])] == ["R0", "R1", "R2", "R3"]
        share = attributions["ig"][INPUTS.index(inp)].register_share
        assert f"{100 * share:.1f}%" in strips[0]

    evil = found[1]
    assert [x for _, _, x in cells(token_rows(evil)[0])] == [
        "[CLS]",
        "<",
        "script",
        ">",
        "what",
        "?",
        "[SEP]",
    ]
    assert "&lt;b&gt;" in evil
    assert "not in this window" in found[2]
    assert "Predicted:</b> <bdi>Hamlet</bdi>" in found[0].replace("\n", "")


def test_colours_follow_the_row_scale(tmp_path: Path) -> None:
    inp = INPUTS[2]  # [CLS] why ? [SEP] because reasons [SEP]
    text = np.array([0.0, 1.0, -0.5, 0.04, 2.0, -2.0, np.nan])[: len(inp)]
    attr = Attribution(inp.question_id, "ig", "span", (4, 4), text, np.array([0.0, -3.0, 1.5]), 0.0)
    page = write_explain_page(
        tmp_path / "p.html", title="t", inputs=[inp], attributions={"ig": [attr]}
    ).read_text(encoding="utf-8")
    rows = token_rows(sections(page)[0])
    row = cells(rows[0]) + cells(rows[1])
    colour = [next((c for c in classes if re.fullmatch(r"[pn]\d|x", c)), "") for classes, _, _ in row]
    # |a| / max|a| with max = 2 over the text, in BINS bins per sign; NaN is hatched.
    assert colour == ["", f"p{BINS // 2}", f"n{BINS // 4}", "", f"p{BINS}", f"n{BINS}", "x"][: len(inp)]
    strip = re.search(r"<span class=rs.*?</span>", sections(page)[0], re.S)
    assert strip is not None
    assert [sorted(c) for c, _, _ in cells(strip.group(0))] == [[], [f"n{BINS}"], [f"p{BINS // 2}"]]


def test_pieces_join_subwords() -> None:
    hamlet = _pieces(INPUTS[0])
    shown = [text for text, _ in hamlet]
    assert shown[:5] == ["[CLS]", "who", "wrote", "ham", "let"]
    assert shown[7:9] == ["Ham", "let"]  # context shows the context's own characters
    assert [new for _, new in hamlet[3:5]] == [True, False] and [new for _, new in hamlet[7:9]] == [
        True,
        False,
    ]
    roberta = ExplainInput(
        example=QAExample(id="r", question="Who wrote it?", context="Ab", answers=()),
        input_ids=(0, 1, 2, 3, 4, 5, 6, 7),
        token_type_ids=None,
        tokens=("<s>", "Who", "Ġwrote", "Ġit", "?", "</s>", "</s>", "Ab"),
        kinds=("cls", "question", "question", "question", "question", "sep", "sep", "context"),
        offsets=(None, None, None, None, None, None, None, (0, 2)),
        gold_span=None,
    )
    assert _pieces(roberta)[1:5] == [("Who", True), ("wrote", True), ("it", True), ("?", False)]


# --- the compare page ---------------------------------------------------------------------------------------


def test_compare_page_registers_only_where_the_model_has_them(tmp_path: Path) -> None:
    a, b = attributions_for(num_registers=0, seed=1), attributions_for(num_registers=4, seed=2)
    del a["lrp"]  # a method only one model has gets only that model's row
    labels = ("τ=0 <stock>", "τ=4")
    page = write_compare_page(
        tmp_path / "compare.html",
        title="compare",
        inputs=INPUTS,
        attributions_a=a,
        attributions_b=b,
        labels=labels,
        summary=[{"model": labels[0], "f1": 50.0}],
    ).read_text(encoding="utf-8")
    assert_balanced(page)
    assert "<stock>" not in page and html.escape(labels[0]) in page
    for q, (inp, section) in enumerate(zip(INPUTS, sections(page), strict=True)):
        rows = token_rows(section)
        assert len(rows) == 2 * 5  # ig A, ig B, attn-grad A, attn-grad B, lrp B
        labels_shown = re.findall(r'<div class=lab title="[^"]*">(.*?)</div>', section)
        assert labels_shown[:5] == [
            "ig · τ=0 &lt;stock&gt;",
            "ig · τ=4",
            "attn-grad · τ=0 &lt;stock&gt;",
            "attn-grad · τ=4",
            "lrp · τ=4",
        ]
        assert section.count("<span class=rs") == 3  # B's rows only
        for r in range(5):
            assert len(cells(rows[r])) + len(cells(rows[5 + r])) == len(inp)
        context_row = cells(rows[5])
        assert context_row[0][1] == f"{a['ig'][q].text[inp.kinds.index('context')]:+.4g}"
        assert f"Predicted ({html.escape(labels[0])}):" in section and "Predicted (τ=4):" in section


# --- bad input ----------------------------------------------------------------------------------------------


def test_mismatched_attributions_and_bad_images_are_errors(tmp_path: Path) -> None:
    good = attributions_for(num_registers=2)
    with pytest.raises(ConfigError, match="order of the inputs"):
        write_explain_page(tmp_path / "x.html", title="t", inputs=INPUTS[::-1], attributions=good)
    with pytest.raises(ConfigError, match="2 attributions for 3 inputs"):
        write_explain_page(tmp_path / "x.html", title="t", inputs=INPUTS, attributions={"ig": good["ig"][:2]})
    with pytest.raises(ConfigError, match="different model labels"):
        write_compare_page(
            tmp_path / "x.html",
            title="t",
            inputs=INPUTS,
            attributions_a=good,
            attributions_b=good,
            labels=("m", "m"),
        )
    fake = tmp_path / "fake.png"
    fake.write_text("not a png", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a PNG"):
        write_explain_page(tmp_path / "x.html", title="t", inputs=INPUTS, attributions=good, images=[fake])
    with pytest.raises(ConfigError, match="cannot read image"):
        write_explain_page(
            tmp_path / "x.html", title="t", inputs=INPUTS, attributions=good, images=[tmp_path / "no.png"]
        )
    assert not (tmp_path / "x.html").exists()  # nothing half-written


def test_a_large_page_stays_compact(tmp_path: Path) -> None:
    words = [f"w{i}" if i % 3 else f"##p{i}" for i in range(1, 120)]
    inputs = [make_input(f"q{i}", ["what", "is", "it", "?"], words, (3, 5)) for i in range(200)]
    a = {m: [make_attribution(inp, m, 0, i) for i, inp in enumerate(inputs)] for m in METHODS}
    b = {m: [make_attribution(inp, m, 8, i + 1) for i, inp in enumerate(inputs)] for m in METHODS}
    started = time.perf_counter()
    page = write_compare_page(
        tmp_path / "big.html", title="big", inputs=inputs, attributions_a=a, attributions_b=b
    )
    seconds = time.perf_counter() - started
    n_cells = 2 * len(METHODS) * sum(len(inp) for inp in inputs)
    size = page.stat().st_size
    assert size / n_cells < 60, f"{size / n_cells:.1f} bytes per token cell"
    assert seconds < 60
    assert len(sections(page.read_text(encoding="utf-8"))) == 200


# --- rendered in a real browser -----------------------------------------------------------------------------


def probe(binary: str, page: Path, tmp_path: Path) -> dict:
    """Load a copy of ``page`` with the test_report probe injected; its report of images and problems."""
    copy = page.parent / f"probe-{page.name}"  # beside the page, so relative image links still resolve
    copy.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    result = run_chromium(binary, tmp_path / "profile", "--dump-dom", copy.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="__probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the probe did not run; chromium said:\n{result.stderr[-2000:]}"
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    return json.loads(html.unescape(found.group(1)))


def test_pages_render_in_headless_chromium(tmp_path: Path, plot_png: Path) -> None:
    binary = chromium_binary()
    run = write_explain_page(
        tmp_path / "run" / "explain.html",
        title="run",
        inputs=INPUTS,
        attributions=attributions_for(4),
        images=[plot_png],
    )
    compare = write_compare_page(
        tmp_path / "cmp" / "compare.html",
        title="compare",
        inputs=INPUTS,
        attributions_a=attributions_for(0),
        attributions_b=attributions_for(4),
        images=[plot_png, plot_png],
    )
    figures = write_figure_page(
        tmp_path / "analyze" / "index.html",
        title="analyze <τ=8>",
        tables={"Per layer": [{"model": "tau8", "layer": 1, "share": 0.25}], "Empty": []},
        images=[plot_png],
        notes=["a note"],
    )
    text = figures.read_text(encoding="utf-8")
    assert "<h2>Per layer</h2>" in text and "analyze &lt;τ=8&gt;" in text and "<script" not in text
    for page, n_images in ((run, 1), (compare, 2), (figures, 1)):
        report = probe(binary, page, tmp_path)
        assert report["problems"] == []
        assert len(report["images"]) == n_images
        assert all(image["naturalWidth"] > 0 for image in report["images"]), report["images"]
