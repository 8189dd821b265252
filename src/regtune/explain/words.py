"""Token cells as readable words: each token shows its own characters of the text it was cut from.

Tokenizers mark words in different ways. WordPiece prefixes continuation pieces with ``##``. SentencePiece
(XLM-R, multilingual-e5) and byte-level BPE (RoBERTa, SmolLM2) mark word *starts* with ``▁`` or ``Ġ``.
Byte-level pieces of non-Latin text are UTF-8 bytes spelled as Latin-1 letters (``Ø§`` for ``ا``), which
no marker stripping makes readable. What every fast tokenizer gives alike is its offset mapping: each
token's character span in the text it tokenised. So a token cell shows characters of the source text,
never the token string, and the cells of one run of tokens read as the text itself.

The rules, for consecutive tokens of one source text (:func:`offset_pieces`):

* A cell shows the characters of its token's span. Characters no token covers still show, in reading
  order: up to the next whitespace they end the previous cell (the Telugu vowel signs and zero-width
  joiners that WordPiece drops belong to the letter before them), after it they start the next cell.
* A character is shown once, by the *last* token whose span covers it. Tokens do share characters: a
  byte-level tokenizer splits one Arabic or Telugu letter's two or three UTF-8 bytes over tokens that all
  carry that letter's span; WordPiece splits a Hangul syllable into jamo tokens that keep the syllable's
  span; XLM-R's lone ``▁`` token gets the span of the next word's first letter.
* Whitespace is never shown inside a cell. Whitespace before a cell's characters starts a new word
  (the page puts a space, a line-break opportunity, before that cell); cells of one word touch, so a
  word never wraps apart and scripts that join letters (Arabic) or form conjuncts (Telugu, Bengali)
  shape across the cells of one word.
* A token without a span (a special token) shows its token string and stands alone.

Cells are then one per token, except that tokens which cannot be drawn apart share one
(:func:`group_cells`): tokens that share characters, and a token that starts inside another's letter
cluster (a vowel sign cut from its consonant). A per-word cell was the alternative; it would have to
invent a word score for every word and could not outline a predicted span that starts inside a word,
so the page stays at the finest unit a browser can colour: the token, or the letter cluster.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the pages import this module without torch
    from regtune.tasks.inputs import SourceSpan


class Piece(NamedTuple):
    """What one token cell shows, and whether a new word starts at it (a space goes before it)."""

    text: str
    starts_word: bool


def offset_pieces(
    tokens: Sequence[str], spans: Sequence[SourceSpan | None], sources: Sequence[str]
) -> list[Piece]:
    """One :class:`Piece` per token, from the tokenizer's character spans (see the module docstring).

    Args:
        tokens: The tokenizer's token strings, shown for tokens without a span.
        spans: Per token, ``(source, start, end)`` into ``sources``, or None (special tokens).
        sources: The texts the tokens were cut from (QA: question and context).

    Returns:
        Per token, its shown text (whitespace stripped, possibly empty) and whether it starts a word.
    """
    out: list[Piece] = []
    cursor: tuple[int, int] | None = None  # (source, char) where the previous cell's characters stopped
    break_after = False  # the previous cell's characters were followed by whitespace it owned
    for i, (token, span) in enumerate(zip(tokens, spans, strict=True)):
        if span is None:
            out.append(Piece(token, True))
            cursor, break_after = None, False
            continue
        source, start, end = span
        following = spans[i + 1] if i + 1 < len(spans) else None
        if following is not None and following[0] == source and following[1] < end:
            end = max(start, following[1])  # the next token covers the rest: it shows those characters
        run_end = cursor[1] if cursor is not None and cursor[0] == source else None  # None: a new run
        gap = "" if run_end is None else sources[source][run_end:start]
        cut = 0 if break_after else next((j for j, c in enumerate(gap) if c.isspace()), len(gap))
        if cut:  # uncovered characters before any whitespace end the previous cell's word
            out[-1] = Piece(out[-1].text + gap[:cut], out[-1].starts_word)
        begin = start if run_end is None else run_end + cut
        end = max(end, begin)  # never a character twice, whatever order the spans come in
        raw = sources[source][begin:end]
        shown = raw.strip()
        starts = run_end is None or break_after or raw[:1].isspace()
        out.append(Piece(shown, starts))
        # Whitespace after a cell's characters separates it from the next cell; a cell of whitespace
        # only (a lone ``Ġ``) already took its space before it and joins the word that follows.
        break_after = bool(shown) and raw[-1].isspace()
        cursor = (source, end)
    return out


class Cell(NamedTuple):
    """One heat-map cell: its text, whether a word starts at it, and the token positions it draws."""

    text: str
    starts_word: bool
    tokens: range


#: Joiners that bind the characters on both sides into one cluster (UAX #29's ZWJ and ZWNJ, both Extend).
_JOINERS = ("\u200c", "\u200d")


def _inside_cluster(before: str, after: str) -> bool:
    """Whether a cell boundary between the texts ``before`` and ``after`` would cut a letter cluster.

    The cases of Unicode's grapheme clusters (UAX #29) that token boundaries meet in these scripts: a mark
    (a Telugu or Bengali vowel sign, an Arabic vowel mark) or a joiner after the boundary, a joiner or a
    virama (which binds the next consonant into a conjunct) before it.
    """
    if not before or not after:
        return False
    if unicodedata.category(after[0]) in ("Mn", "Mc", "Me") or after[0] in _JOINERS:
        return True
    return before[-1] in _JOINERS or unicodedata.combining(before[-1]) == 9  # combining class 9: virama


def group_cells(pieces: Sequence[Piece], shares_next: Sequence[bool], positions: range) -> list[Cell]:
    """The cells of the tokens at ``positions``: one per token, except where tokens cannot be drawn apart.

    A browser draws a letter cluster whole, in the box of the element where it starts: a token that
    begins with a vowel sign would get an empty box and its colour would never show. So a token joins
    the cell before it when the two share characters (``shares_next``: their spans overlap, as for the
    byte pieces of one letter, the jamo of one syllable, a lone ``▁``) or when the boundary between them
    falls inside a cluster. The page colours such a cell by the sum of its tokens' scores (attributions
    add up) and lists each token's score in its tooltip; every other cell is exactly one token.

    Args:
        pieces: Per token of the input, from :func:`offset_pieces` (or markers).
        shares_next: Per token of the input, whether its span overlaps the next token's.
        positions: The block's token positions (cells never cross blocks).
    """
    shared: list[Cell] = []  # first the tokens that share characters, then whole clusters
    for i in positions:
        piece, last = pieces[i], shared[-1] if shared else None
        if last is not None and shares_next[i - 1] and not piece.starts_word:
            shared[-1] = Cell(last.text + piece.text, last.starts_word, range(last.tokens.start, i + 1))
        else:
            shared.append(Cell(piece.text, piece.starts_word, range(i, i + 1)))
    cells: list[Cell] = []
    for cell in shared:
        if cells and not cell.starts_word and _inside_cluster(cells[-1].text, cell.text):
            last = cells[-1]
            cells[-1] = Cell(
                last.text + cell.text, last.starts_word, range(last.tokens.start, cell.tokens.stop)
            )
        else:
            cells.append(cell)
    return cells


def shared_characters(spans: Sequence[SourceSpan | None]) -> list[bool]:
    """Per token, whether its span overlaps the next token's in the same source (they share characters)."""
    out = []
    for span, following in zip(spans, [*spans[1:], None], strict=True):
        out.append(
            span is not None and following is not None and following[0] == span[0] and following[1] < span[2]
        )
    return out
