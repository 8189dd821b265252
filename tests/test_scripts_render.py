"""Pages for every script (issue #13 §4): words joined by the tokenizer's offsets, right-to-left blocks, and
Arabic, Telugu, Bengali and Korean pages drawn in headless Chromium with fonts that have their glyphs.

The word-joining cases are written out span by span as the real tokenizers give them (MiniLM's WordPiece,
multilingual-e5's SentencePiece, SmolLM2's byte-level BPE), so every expected cell is known here; the
tokenizer tests then check the same rules on the tokenizers themselves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from chromium_pipe import ChromiumPipe
from conftest import skip_or_fail
from regtune.core.errors import RegtuneError
from regtune.core.hub import load_tokenizer, resolve_model_name
from regtune.explain.methods import Attribution
from regtune.explain.render import _blocks, _pieces, write_compare_page, write_explain_page, write_figure_page
from regtune.explain.words import Piece, group_cells, offset_pieces, shared_characters
from regtune.reporting.html import has_rtl, records_table, text_direction
from regtune.tasks.classification.data import ClassificationExample
from regtune.tasks.inputs import ExplainInput
from regtune.tasks.qa.data import Answer, QAExample


def shown(pieces: Sequence[Piece]) -> list[tuple[str, bool]]:
    return [(p.text, p.starts_word) for p in pieces]


def words(pieces: Sequence[Piece]) -> list[str]:
    """The words a reader sees: cells joined where no word starts, empty words (specials' gaps) dropped."""
    out: list[str] = []
    for piece in pieces:
        if piece.starts_word or not out:
            out.append(piece.text)
        else:
            out[-1] += piece.text
    return [w for w in out if w]


# --- offset_pieces, span by span ----------------------------------------------------------------------------


def test_wordpiece_shows_the_source_characters_not_the_lowercased_pieces() -> None:
    text = "Who wrote Hamletian, 1600?"
    tokens = ["who", "wrote", "hamlet", "##ian", ",", "1600", "?"]
    spans = [(0, 0, 3), (0, 4, 9), (0, 10, 16), (0, 16, 19), (0, 19, 20), (0, 21, 25), (0, 25, 26)]
    assert shown(offset_pieces(tokens, spans, [text])) == [
        ("Who", True),
        ("wrote", True),
        ("Hamlet", True),
        ("ian", False),
        (",", False),
        ("1600", True),
        ("?", False),
    ]


def test_characters_wordpiece_drops_stay_with_their_word() -> None:
    # MiniLM on Telugu: two [UNK]s, and the vowel sign ా (index 2) that its accent stripping drops.
    text = "మహా సముద్రాలు"
    pieces = offset_pieces(["[UNK]", "[UNK]"], [(0, 0, 2), (0, 4, 13)], [text])
    assert shown(pieces) == [("మహా", True), ("సముద్రాలు", True)]
    # Dropped characters after a space open the next word instead.
    assert shown(offset_pieces(["a", "b"], [(0, 0, 1), (0, 3, 4)], ["a xb"])) == [("a", True), ("xb", True)]


def test_sentencepiece_lone_word_start_is_an_empty_cell_before_its_word() -> None:
    # multilingual-e5 on "مرات فوز": "▁" gets the span of the next piece's first letter.
    text = "مرات فوز"
    pieces = offset_pieces(["▁مرات", "▁", "فوز"], [(0, 0, 4), (0, 5, 6), (0, 5, 8)], [text])
    assert shown(pieces) == [("مرات", True), ("", True), ("فوز", False)]
    assert words(pieces) == text.split()


def test_byte_level_pieces_of_one_letter_show_it_once() -> None:
    # SmolLM2 on "كم عدد مرات فوز": ف's two UTF-8 bytes are split over "ĠÙ" (with the space) and "ģ",
    # ز's over "Ø" and "²"; all of them carry the letter's span.
    text = "كم عدد مرات فوز"
    tokens = ["Ùĥ", "Ùħ", "ĠØ¹", "Ø¯", "Ø¯", "ĠÙħ", "Ø±", "Ø§", "Øª", "ĠÙ", "ģ", "ÙĪ", "Ø", "²"]
    ends = [1, 2, 4, 5, 6, 8, 9, 10, 11, 13, 13, 14, 15, 15]
    starts = [0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 14]
    pieces = offset_pieces(tokens, [(0, s, e) for s, e in zip(starts, ends, strict=True)], [text])
    assert shown(pieces) == [
        ("ك", True),
        ("م", False),
        ("ع", True),
        ("د", False),
        ("د", False),
        ("م", True),
        ("ر", False),
        ("ا", False),
        ("ت", False),
        ("", True),
        ("ف", False),
        ("و", False),
        ("", False),
        ("ز", False),
    ]
    assert words(pieces) == text.split()


def test_byte_level_telugu_letters_and_a_lone_space_token() -> None:
    # SmolLM2 spells each Telugu letter as three byte tokens; a lone "Ġ" before digits owns the space.
    text = "మహా 16"
    tokens = ["à", "°", "®", "à", "°", "¹", "à", "°", "¾", "Ġ", "1", "6"]
    spans = [(0, c, c + 1) for c in (0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5)]
    pieces = offset_pieces(tokens, spans, [text])
    assert shown(pieces) == [
        ("", True),
        ("", False),
        ("మ", False),
        ("", False),
        ("", False),
        ("హ", False),
        ("", False),
        ("", False),
        ("ా", False),
        ("", True),
        ("1", False),
        ("6", False),
    ]
    assert words(pieces) == ["మహా", "16"]


def test_wordpiece_hangul_jamo_share_their_syllable() -> None:
    # MiniLM decomposes 한국 into jamo pieces, each with its syllable's span.
    tokens = ["ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ"]
    pieces = offset_pieces(tokens, [(0, 0, 1)] * 3 + [(0, 1, 2)] * 3, ["한국"])
    assert shown(pieces) == [("", True), ("", False), ("한", False), ("", False), ("", False), ("국", False)]


def test_specials_and_sources_start_words_and_trailing_space_breaks() -> None:
    tokens = ["[CLS]", "ab", "c", "[SEP]", "x", "y", "[SEP]"]
    spans = [None, (0, 0, 3), (0, 3, 4), None, (1, 0, 1), (1, 1, 2), None]
    # "ab " owns its trailing space: the next cell starts a word.
    assert shown(offset_pieces(tokens, spans, ["ab c", "xy"])) == [
        ("[CLS]", True),
        ("ab", True),
        ("c", True),
        ("[SEP]", True),
        ("x", True),
        ("y", False),
        ("[SEP]", True),
    ]


def test_cells_merge_only_tokens_that_cannot_be_drawn_apart() -> None:
    def cells(tokens: list[str], spans: list, text: str, positions: range | None = None) -> list[tuple]:
        pieces = offset_pieces(tokens, spans, [text])
        found = group_cells(pieces, shared_characters(spans), positions or range(len(tokens)))
        return [(c.text, c.starts_word, (c.tokens.start, c.tokens.stop)) for c in found]

    # multilingual-e5 cuts "సముద్రాలు" before a vowel sign: a browser cannot colour the two apart.
    assert cells(["▁సముద్ర", "ాలు"], [(0, 0, 6), (0, 6, 9)], "సముద్రాలు") == [("సముద్రాలు", True, (0, 2))]
    # A virama binds the next consonant, a zero-width non-joiner binds both sides.
    assert cells(["▁యొక్", "క"], [(0, 0, 4), (0, 4, 5)], "యొక్క") == [("యొక్క", True, (0, 2))]
    assert cells(["a", "b"], [(0, 0, 2), (0, 2, 3)], "a\u200cb") == [("a\u200cb", True, (0, 2))]
    # Byte pieces of one letter, then a vowel sign; a lone "Ġ" keeps its own (empty) cell.
    tokens = ["à", "°", "®", "à", "°", "¹", "à", "°", "¾", "Ġ", "1", "6"]
    spans = [(0, c, c + 1) for c in (0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5)]
    assert cells(tokens, spans, "మహా 16") == [
        ("మ", True, (0, 3)),
        ("హా", False, (3, 9)),
        ("", True, (9, 10)),
        ("1", False, (10, 11)),
        ("6", False, (11, 12)),
    ]
    assert cells(tokens, spans, "మహా 16", range(4, 12))[0] == ("హా", False, (4, 9))  # never across blocks
    jamo = ["ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ"]
    assert cells(jamo, [(0, 0, 1)] * 3 + [(0, 1, 2)] * 3, "한국") == [
        ("한", True, (0, 3)),
        ("국", False, (3, 6)),
    ]
    sentencepiece = cells(["▁مرات", "▁", "فوز"], [(0, 0, 4), (0, 5, 6), (0, 5, 8)], "مرات فوز")
    assert sentencepiece == [("مرات", True, (0, 1)), ("فوز", True, (1, 3))]
    wordpiece = cells(["hamlet", "##ian", ","], [(0, 0, 6), (0, 6, 9), (0, 9, 10)], "Hamletian,")
    assert wordpiece == [("Hamlet", True, (0, 1)), ("ian", False, (1, 2)), (",", False, (2, 3))]


def test_a_cell_of_several_tokens_shows_their_sum_and_each_score(tmp_path: Path) -> None:
    text = "మహా 16"
    tokens = ("[CLS]", "à", "°", "®", "à", "°", "¹", "à", "°", "¾", "Ġ", "1", "6", "[SEP]")
    spans = (None, *((0, c, c + 1) for c in (0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 4, 5)), None)
    example = ClassificationExample(id="te", texts=(text,), label=None)
    kinds = ("cls", *["text"] * 12, "sep")
    inp = ExplainInput(
        example, tuple(range(14)), None, tokens, kinds, (None,) * 14, None, None, (text,), spans
    )  # type: ignore[arg-type]
    scores = np.zeros(14)
    scores[4:10] = [0.5, 0.25, 0.25, -0.5, 0.25, 1.5]  # the cell "హా": sum 2.25, the row's largest
    scores[1] = -1.0
    attr = Attribution("te", "ig", "class", (5, 5), scores, np.zeros(0), 0.0)
    page = write_explain_page(tmp_path / "p.html", title="t", inputs=[inp], attributions={"ig": [attr]})
    row = re.search(r"<div class=tok>(.*?)</div>", page.read_text(encoding="utf-8")).group(1)  # type: ignore[union-attr]
    cells = re.findall(r"<i(?: class=(\S+?|\"[^\"]*\"))?(?: title=(\S+?|\"[^\"]*\"))?>(.*?)</i>", row)
    assert [c[2] for c in cells] == ["[CLS]", "మ", "హా", "", "1", "6", "[SEP]"]
    classes, title, _ = cells[2]
    assert classes == '"p8 P"'  # the largest |sum| of the row; the explained token 5 lies in it
    assert title == '"+2.25 = +0.5 à +0.25 ° +0.25 ¹ -0.5 à +0.25 ° +1.5 ¾"'
    assert cells[1][0] == "n4" and cells[1][1] == '"-1 = -1 à +0 ° +0 ®"'  # -1 / 2.25 of 8 bins


def test_explain_input_rejects_spans_outside_their_source() -> None:
    example = QAExample(id="q", question="ab", context="cd", answers=())
    args = dict(example=example, input_ids=(1, 2), token_type_ids=None, tokens=("a", "b"))
    args.update(kinds=("question", "question"), offsets=(None, None), gold_span=None, sources=("ab",))
    with pytest.raises(ValueError, match="outside its source"):
        ExplainInput(**args, source_spans=((0, 0, 1), (0, 1, 3)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 source spans for 2 tokens"):
        ExplainInput(**args, source_spans=((0, 0, 1),))  # type: ignore[arg-type]


def test_direction_follows_the_first_strong_character() -> None:
    assert text_direction("(1880) المرو أو الكوارتز") == "rtl"
    assert text_direction("Placenta المرو") == "ltr"
    assert text_direction("మహా సముద్రాలు") == "ltr"
    assert text_direction("한니발") == "ltr"
    assert text_direction("1880 ?") == "ltr"
    assert has_rtl("R3: الكوارتز") and not has_rtl("Привет, 한국")
    table = records_table([{"token": "الكوارتز", "n": 3}, {"token": "Hamlet", "n": 1}])
    assert table.count('dir="auto"') == 1 and '<td dir="auto">الكوارتز</td>' in table


# --- the same rules on the real tokenizers ------------------------------------------------------------------

#: One question per TyDi language with its own script, Arabic with its vowel marks (which WordPiece drops).
SCRIPTS = {
    "ar": "من هو مكتشف المرو أو الكوارتز ؟",
    "ar-marks": "المَشِيمَة أو الخَلاَص (بالإنجليزية: Placenta) عضو",
    "bn": "বিখ্যাত জ্যোতির্বিজ্ঞানী নিকোলাউস কোপের্নিকুসের জন্ম কবে হয় ?",
    "te": "వెల్మజాల గ్రామం యొక్క విస్తీర్ణం ఎంత ?",
    "ko": "한니발 바르카의 최종 계급은 무엇인가요?",
    "ru": "Когда родился Николай Коперник?",
    "fi": "Milloin Suomen itsenäisyysjulistus hyväksyttiin?",
    "id": "Siapakah penemu kuarsa?",
    "sw": "Je, Mlima Kilimanjaro una urefu gani?",
}
TOKENIZERS = ("minilm-l6", "multilingual-e5-small", "smollm2-135m")


@pytest.fixture(scope="module", params=TOKENIZERS)
def named_tokenizer(request: pytest.FixtureRequest) -> tuple[str, object]:
    return request.param, load(request.param)


def load(name: str) -> object:
    """A bundled model's tokenizer (e5 and SmolLM2 are converted into the cache once)."""
    try:
        return load_tokenizer(resolve_model_name(name))
    except RegtuneError as err:  # a bundled model whose package is missing
        skip_or_fail(f"{name}: {err}")


def sentence_input(tokenizer: object, text: str) -> ExplainInput:
    from regtune.tasks.classification.explain import build_explain_inputs

    example = ClassificationExample(id="s", texts=(text,), label=None)
    [item] = build_explain_inputs([example], tokenizer, max_length=128, labels=["a"])  # type: ignore[arg-type]
    return item


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_tokenizer_shows_the_words_as_written(named_tokenizer: tuple[str, object], script: str) -> None:
    _, tokenizer = named_tokenizer
    item = sentence_input(tokenizer, SCRIPTS[script])
    pieces = [p for p, kind in zip(_pieces(item), item.kinds, strict=True) if kind == "text"]
    assert words(pieces) == SCRIPTS[script].split()


def test_exact_cells_on_the_real_tokenizers() -> None:
    e5 = sentence_input(load("multilingual-e5-small"), SCRIPTS["ar"])
    assert e5.tokens[3:5] == ("▁م", "كتشف")
    assert shown(_pieces(e5)) == [
        ("<s>", True),
        ("من", True),
        ("هو", True),
        ("م", True),
        ("كتشف", False),
        ("الم", True),
        ("رو", False),
        ("أو", True),
        ("الكو", True),
        ("ارت", False),
        ("ز", False),
        ("؟", True),
        ("</s>", True),
    ]
    minilm = sentence_input(load("minilm-l6"), SCRIPTS["te"])
    assert minilm.tokens[1:6] == ("[UNK]",) * 5  # nothing but the offsets says what these are
    assert shown(_pieces(minilm))[1:7] == [(w, True) for w in SCRIPTS["te"].split()]
    smollm2 = sentence_input(load("smollm2-135m"), "గ్రామం 1349")
    assert smollm2.tokens[:3] == ("à", "°", "Ĺ")
    assert [p.text for p in _pieces(smollm2)] == [
        *("", "", "గ", "", "", "్", "", "", "ర", "", "", "ా", "", "", "మ", "", "", "ం"),
        *("", "1", "3", "4", "9"),
    ]


def qa_example(lang: str) -> QAExample:
    question, context, answer = EXAMPLES[lang]
    return QAExample(
        id=f"{lang}-1", question=question, context=context, answers=(Answer(answer, context.index(answer)),)
    )


#: (question, context excerpt, answer) from the TyDi GoldP dev files.
EXAMPLES = {
    "ar": (
        "من هو مكتشف المرو أو الكوارتز ؟",
        "المرو أو الكوارتز  هو معدن يعود اكتشافه إلى الفرنسي (بيير كوري) وأخوه (جاك) اللذان كانا يدرسان عينة"
        " من الرمل في سنة 1880 حيث لاحظا ظاهرة",
        "(بيير كوري) وأخوه (جاك)",
    ),
    "te": (
        "వెల్మజాల గ్రామం యొక్క విస్తీర్ణం ఎంత ?",
        "2011 భారత జనగణన గణాంకాల ప్రకారం ఈ గ్రామం 650 ఇళ్లతో, 2789 జనాభాతో 1349 హెక్టార్లలో విస్తరించి ఉంది."
        " గ్రామంలో మగవారి సంఖ్య 1443, ఆడవారి సంఖ్య",
        "1349 హెక్టార్ల",
    ),
    "bn": (
        "বিখ্যাত জ্যোতির্বিজ্ঞানী নিকোলাউস কোপের্নিকুসের জন্ম কবে হয় ?",
        "নিকোলাস কোপারনিকাস (পলিশ ভাষায় মিকলজ কোপারনিক , জার্মান ভাষায় নিক্লাস কপারনিক, ১৪৭৩ সালের ১৮ ফেব্রুয়ারী"
        " জন্ম ২৪ মে ১৫৪৩ মৃত্যু) ছিলেন রেনেসাঁ এবং সংস্কার যুগের মহান",
        "১৪৭৩ সালের ১৮ ফেব্রুয়ারী",
    ),
    "ko": (
        "한니발 바르카의 최종 계급은 무엇인가요?",
        "한니발 바르카(, , 기원전 247년 ~ 기원전 183년 또는 기원전 181년)는 고대 카르타고의"
        " 군사 지도자로, 대개 역사상 가장 위대한 군사령관들 중 하나로 평가된다.",
        "군사령관",
    ),
}


@pytest.mark.parametrize("name", ["minilm-l6", "multilingual-e5-small"])
def test_qa_windows_show_question_and_context_as_written(name: str) -> None:
    from regtune.tasks.qa.explain import build_explain_inputs

    examples = [qa_example(lang) for lang in EXAMPLES]
    for example, item in zip(examples, build_explain_inputs(examples, load(name)), strict=True):  # type: ignore[arg-type]
        pieces = _pieces(item)
        by_kind = {
            k: [p for p, kind in zip(pieces, item.kinds, strict=True) if kind == k]
            for k in ("question", "context")
        }
        assert words(by_kind["question"]) == example.question.split()
        assert words(by_kind["context"]) == example.context.split()
        assert item.gold_span is not None


def test_generative_prompt_shows_every_word_of_the_prompt() -> None:
    from regtune.tasks.generative_qa.explain import build_explain_inputs
    from regtune.tasks.generative_qa.prompt import prompt_text

    tokenizer = load("smollm2-135m")
    examples = [qa_example(lang) for lang in ("ar", "te")]
    for example, item in zip(
        examples, build_explain_inputs(examples, tokenizer, max_length=512, max_new_tokens=16), strict=True
    ):  # type: ignore[arg-type]
        text = prompt_text(tokenizer, example.question, example.context)  # type: ignore[arg-type]
        specials = [t for t, kind in zip(item.tokens, item.kinds, strict=True) if kind in ("cls", "sep")]
        expected = re.sub("|".join(map(re.escape, set(specials))), " ", text).split()
        assert [w for w in words(_pieces(item)) if w not in specials] == expected


# --- the pages in headless Chromium -------------------------------------------------------------------------

#: Per page: its cells and blocks as laid out (run from DevTools; the pages themselves have no script).
LAYOUT = """(() => {
  const box = (r) => [r.left, r.top, r.right, r.bottom];
  const section = document.querySelector('section.qa');
  // The first row of the question block and of the context block.
  const rows = [section.querySelector('.hm:not(.ctx) .tok'), section.querySelector('.hm.ctx .tok')];
  const blocks = rows.map((tok) => ({
    dir: getComputedStyle(tok).direction,
    cells: [...tok.querySelectorAll('i')].map((i) => {
      const range = document.createRange();
      range.selectNodeContents(i);
      const ink = [...range.getClientRects()].map(box);
      return {text: i.textContent, box: box(i.getBoundingClientRect()), ink};
    }),
  }));
  const question = document.querySelector('.meta bdi');
  const range = document.createRange();
  range.selectNodeContents(question);
  return {page: getComputedStyle(document.body).direction, question: getComputedStyle(question).direction,
          questionWidth: range.getBoundingClientRect().width, blocks,
          section: box(section.getBoundingClientRect())};
})()"""
#: After a DOM change, two frames: DevTools' font report reads the last layout and paint, not a pending one.
_SETTLE = "; document.body.offsetHeight; new Promise((done) => "
_SETTLE += "requestAnimationFrame(() => requestAnimationFrame(done)))"
FLATTEN = (
    "document.querySelectorAll('.tok').forEach((tok) => { tok.textContent = tok.textContent; })" + _SETTLE
)
#: Sections lay out only on screen (content-visibility: auto); measuring needs them all laid out.
SHOW_ALL = (
    "document.querySelectorAll('section').forEach((s) => { s.style.contentVisibility = 'visible'; })"
    + _SETTLE
)


def chromium() -> str:
    from test_report import chromium_binary

    return chromium_binary()


def fake_attributions(
    inputs: Sequence[ExplainInput], registers: int, seed: int, target: str = "span"
) -> dict:
    """Scores drawn at random (the pages only draw them); each explains the gold span, or the last token."""
    out: dict[str, list[Attribution]] = {}
    for m, method in enumerate(("ig", "attn-grad")):
        rng = np.random.default_rng(seed + m)
        out[method] = [
            Attribution(
                question_id=inp.question_id,
                method=method,
                target=target,
                span=inp.gold_span or (len(inp) - 1, len(inp) - 1),
                text=rng.normal(size=len(inp)),
                registers=rng.normal(size=registers),
                output=1.0,
            )
            for inp in inputs
        ]
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[ExplainInput]]]:
    """The pages `regtune explain` and `regtune analyze` write, on TyDi questions of four scripts, with
    multilingual-e5's windows (and SmolLM2's byte-level prompts), from the same render functions."""
    from regtune.tasks.generative_qa.explain import build_explain_inputs as prompts
    from regtune.tasks.qa.explain import build_explain_inputs as windows

    folder = tmp_path_factory.mktemp("pages")
    e5 = load("multilingual-e5-small")
    ar, te, bn, ko = (windows([qa_example(lang)], e5) for lang in ("ar", "te", "bn", "ko"))  # type: ignore[arg-type]
    out = {
        "ar": (
            write_compare_page(
                folder / "ar.html",
                title="Arabic: τ=0 vs τ=4",
                inputs=ar,
                attributions_a=fake_attributions(ar, 0, 1),
                attributions_b=fake_attributions(ar, 4, 2),
                labels=("τ=0", "τ=4"),
            ),
            ar,
        ),
        "te": (
            write_explain_page(
                folder / "te.html", title="Telugu", inputs=te, attributions=fake_attributions(te, 4, 3)
            ),
            te,
        ),
        "bn-ko": (
            write_explain_page(
                folder / "bn-ko.html",
                title="Bengali, Korean",
                inputs=bn + ko,
                attributions=fake_attributions(bn + ko, 4, 4),
            ),
            bn + ko,
        ),
    }
    smollm2 = load("smollm2-135m")
    byte_level = prompts([qa_example("te"), qa_example("ar")], smollm2, max_length=512, max_new_tokens=16)  # type: ignore[arg-type]
    scores = fake_attributions(byte_level, 0, 5, target="first_token")
    out["bytes"] = (
        write_explain_page(
            folder / "bytes.html", title="SmolLM2 bytes", inputs=byte_level, attributions=scores
        ),
        byte_level,
    )
    tokens = [
        {"register": r, "token": t, "mass": 0.1 * r}
        for r, t in enumerate(("الكوارتز", "గ్రామం", "한니발", "(بيير"))
    ]
    figure = write_figure_page(
        folder / "analyze.html", title="analyze", tables={"Tokens each register attends to most": tokens}
    )
    out["analyze"] = (figure, [])
    return out


def font_file(postscript_name: str) -> tuple[str, int]:
    """The file (and index in a collection) fontconfig holds for a PostScript name Chromium reports."""
    found = subprocess.run(
        ["fc-list", "-f", "%{file}\t%{index}\n", f":postscriptname={postscript_name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")[0]
    assert found, f"fontconfig does not know the font {postscript_name!r} chromium used"
    path, index = found.split("\t")
    return path, int(index)


_CMAPS: dict[str, set[int]] = {}


def covered(postscript_name: str) -> set[int]:
    """Code points the font has glyphs for (its cmap)."""
    if postscript_name not in _CMAPS:
        _CMAPS[postscript_name] = covered_file(*font_file(postscript_name))
    return _CMAPS[postscript_name]


def covered_file(path: str, index: int = 0) -> set[int]:
    from fontTools.ttLib import TTFont

    with TTFont(path, fontNumber=index, lazy=True) as font:
        return set(font.getBestCmap())


def tofu(browser: ChromiumPipe, selector: str, reported: bool = True) -> list[str]:
    """Characters of the elements matching ``selector`` that no font which drew the element has a glyph
    for: what Chromium drew as a box (whitespace and invisible format characters aside).

    With ``reported=False``, elements Chromium reports no font for are left out: a cell whose word it
    shaped across cells can come back with none, although its glyphs are drawn (the caller checks that
    by other means).
    """
    texts = browser.evaluate(
        f"[...document.querySelectorAll({json.dumps(selector)})].map((e) => e.textContent)"
    )
    missing = []
    for text, fonts in zip(texts, browser.fonts(selector), strict=True):
        if not fonts and not reported:
            continue
        glyphs = set().union(*(covered(f["postScriptName"]) for f in fonts)) if fonts else set()
        missing += [
            c for c in text if not c.isspace() and unicodedata.category(c) != "Cf" and ord(c) not in glyphs
        ]
    return missing


#: Languages whose text the pages must draw; fontconfig must have a font for each.
LANGS = ("ar", "bn", "te", "ko", "ru")


def require_fonts() -> None:
    for lang in LANGS:
        found = subprocess.run(
            ["fc-list", f":lang={lang}", "family"], capture_output=True, text=True, check=False
        )
        if not found.stdout.strip():
            skip_or_fail(
                f"no font for {lang} (.ci/run installs them: apt-get install fonts-noto-ui-core fonts-nanum)"
            )


def check_layout(layout: dict, inp: ExplainInput, rtl: bool) -> None:
    """The cells the page means to draw (a token, or tokens that share a letter cluster), each with its
    own glyphs inside its coloured box (a cell whose glyphs the browser drew in a neighbour's box would
    be empty), the cells of a word touching and words apart, in the block's direction; the page itself
    left to right."""
    assert layout["page"] == "ltr"
    assert layout["question"] == ("rtl" if rtl else "ltr")
    first_context = inp.kinds.index("context")
    for block, cells in zip(layout["blocks"], _blocks(inp, (0, first_context, len(inp))), strict=True):
        assert block["dir"] == ("rtl" if rtl else "ltr")
        assert [c["text"] for c in block["cells"]] == [c.text for c in cells]
        strong = "rtl" if rtl else "ltr"
        for cell in block["cells"]:
            for ink in cell["ink"]:
                assert cell["box"][0] - 1 <= ink[0] and ink[2] <= cell["box"][2] + 1, cell
            if cell["text"].strip():
                assert sum(ink[2] - ink[0] for ink in cell["ink"]) > 1, cell
        for k in range(1, len(cells)):
            prev, cell = block["cells"][k - 1], block["cells"][k]
            same_line = abs(prev["box"][1] - cell["box"][1]) < 1
            readable = all(
                c["text"] and text_direction(c["text"]) == strong and c["text"][0].isalpha()
                for c in (prev, cell)
            )
            if not (same_line and readable):
                continue
            # The edge where this cell should follow the previous one, and the space a word start leaves.
            step = prev["box"][0] - cell["box"][2] if rtl else cell["box"][0] - prev["box"][2]
            if cells[k].starts_word:
                assert step > 2, (prev, cell)
            else:
                assert abs(step) <= 1, (prev, cell)


def screenshot(browser: ChromiumPipe, layout: dict, path: Path) -> Path:
    """The first section (up to 1400 px of it) as a PNG."""
    _, top, right, bottom = layout["section"]
    shot = browser.screenshot(
        path, {"x": 0, "y": top, "width": right + 20, "height": min(bottom - top, 1400)}
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000
    return shot


def draw_with_fonts(binary: str, pages: dict, tmp_path: Path) -> dict[str, float]:
    """Open every page with the system's fonts, check it, screenshot it; the question's width per page."""
    widths = {}
    browser = ChromiumPipe(binary, tmp_path / "profile")
    try:
        for name, (page, inputs) in pages.items():
            browser.open(page.as_uri())
            browser.evaluate(SHOW_ALL)
            assert browser.console_errors() == [], name
            if name == "analyze":
                assert tofu(browser, "td") == []
                directions = (
                    "[...document.querySelectorAll('td')].map((td) => getComputedStyle(td).direction)"
                )
                # The token column: the Arabic cells right to left, the others left to right.
                assert browser.evaluate(directions)[1::3] == ["rtl", "ltr", "ltr", "rtl"]
                continue
            assert tofu(browser, ".meta bdi") == [] and tofu(browser, ".tok i", reported=False) == [], name
            layout = browser.evaluate(LAYOUT)
            check_layout(layout, inputs[0], rtl=name == "ar")
            widths[name] = layout["questionWidth"]
            screenshot(browser, layout, tmp_path / f"{name}.png")
            # Every token strip as one text node in its own style: the fonts for all of its characters.
            browser.evaluate(FLATTEN)
            assert tofu(browser, ".tok") == [], name
            assert browser.console_errors() == [], name
    finally:
        browser.close()
    return widths


def draw_without_fonts(binary: str, pages: dict, tmp_path: Path) -> dict[str, float]:
    """The control: the Telugu, Bengali and Korean pages with only the default sans-serif font's folder
    (DejaVu, which has Latin, Cyrillic and Arabic but none of these), where Chromium can only draw boxes;
    the same check must find them. The question's width per page."""
    default = subprocess.run(
        ["fc-match", "-f", "%{file}", "sans-serif"], capture_output=True, text=True, check=True
    )
    assert ord("మ") not in covered_file(default.stdout), "the control font has Telugu glyphs: no tofu to see"
    control = tmp_path / "fonts.conf"
    control.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        f"<dir>{Path(default.stdout).parent}</dir><cachedir>{tmp_path / 'fc-cache'}</cachedir></fontconfig>",
        encoding="utf-8",
    )
    widths = {}
    browser = ChromiumPipe(
        binary, tmp_path / "profile-tofu", env={**os.environ, "FONTCONFIG_FILE": str(control)}
    )
    try:
        for name, letters in (("te", "వెల్మజాల"), ("bn-ko", "বিখ্যাত한니발")):
            browser.open(pages[name][0].as_uri())
            browser.evaluate(SHOW_ALL)
            layout = browser.evaluate(LAYOUT)
            widths[name] = layout["questionWidth"]
            screenshot(browser, layout, tmp_path / f"{name}-tofu.png")
            browser.evaluate(FLATTEN)
            assert set(letters) <= set(tofu(browser, ".meta bdi, .tok")), name
    finally:
        browser.close()
    return widths


def test_pages_draw_every_script_with_fonts_that_have_the_glyphs(pages: dict, tmp_path: Path) -> None:
    binary = chromium()
    require_fonts()
    fonts = draw_with_fonts(binary, pages, tmp_path)
    boxes = draw_without_fonts(binary, pages, tmp_path)
    widths = {name: {"fonts": width, "tofu": boxes.get(name)} for name, width in fonts.items()}
    (tmp_path / "widths.json").write_text(json.dumps(widths, indent=1), encoding="utf-8")
    # Boxes are one per code point; real glyphs combine marks into clusters and differ in width.
    for name in boxes:
        assert abs(fonts[name] / boxes[name] - 1) > 0.05, widths
