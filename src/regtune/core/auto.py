"""Saved register models name themselves, so that plain ``transformers`` never drops their registers.

A model with registers (τ > 0) saves ``model_type: "regtune_<family>"`` (``regtune_bert``,
``regtune_llama``, ...) instead of its family's type; everything else in ``config.json`` and the weights is
the stock format. This is the standard custom-model pattern of ``transformers``, with no remote code:

* **with ``import regtune``** the ``regtune_*`` types are registered with ``AutoConfig`` and the ``Auto*``
  model classes (base model, question answering, sequence classification, masked LM for the encoders,
  causal LM for the decoders).
  ``AutoModelForQuestionAnswering.from_pretrained(run/model)`` then builds the stock class with the
  registers attached and loaded: the same model as :func:`regtune.load_model`. (Folders of
  ``--train-only`` and ``--peft`` runs hold only their trained tensors, as PEFT adapters do: load those
  with :func:`regtune.load_model`, which puts them back onto their base model);
* **without it**, ``transformers`` refuses the folder loudly ("model type `regtune_bert` ... not
  recognize[d]") instead of silently loading a different model without registers.

Why a model type rather than something softer: ``from_pretrained`` reads nothing else before it picks the
class, so only the type can stop it. A τ=0 model is the stock model and keeps its stock type. Folders
saved before this existed keep their stock type and still load with :func:`regtune.load_model`.
"""

from __future__ import annotations

from typing import Any

import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    PretrainedConfig,
)
from transformers.models.auto import modeling_auto

PREFIX = "regtune_"
#: The Auto classes a saved register model of each kind loads through, with their name mappings.
_ENCODER_HEADS = (
    (AutoModel, modeling_auto.MODEL_MAPPING_NAMES),
    (AutoModelForQuestionAnswering, modeling_auto.MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES),
    (AutoModelForSequenceClassification, modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
    (AutoModelForMaskedLM, modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),  # regtune pretrain's models
)
_CAUSAL_HEADS = (
    (AutoModel, modeling_auto.MODEL_MAPPING_NAMES),
    (AutoModelForCausalLM, modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    (AutoModelForSequenceClassification, modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
)
#: Family model_type -> its registered config class.
_CONFIGS: dict[str, type[PretrainedConfig]] = {}


def saved_type(family: str) -> str:
    """The model_type a register model of ``family`` saves (``bert`` -> ``regtune_bert``)."""
    return PREFIX + family.replace("-", "_")


def family_type(config: PretrainedConfig) -> str:
    """The stock family of a config, whether it carries its own type or a ``regtune_*`` one."""
    model_type = getattr(config, "model_type", "")
    for family, cls in _CONFIGS.items():
        if model_type == cls.model_type:
            return family
    return model_type


def mark_register_model(config: PretrainedConfig) -> None:
    """Make ``config`` (of a model that now has registers) save its ``regtune_*`` type."""
    family = family_type(config)
    if family in _CONFIGS and not isinstance(config, _CONFIGS[family]):
        config.__class__ = _CONFIGS[family]


def _model_class(stock: type, config_class: type[PretrainedConfig]) -> type:
    """The stock model class, with the registers of its config attached in ``__init__``."""

    def __init__(self: Any, config: PretrainedConfig, *args: Any, **kwargs: Any) -> None:
        stock.__init__(self, config, *args, **kwargs)
        from regtune.core.registers import CONFIG_KEY, RegisterConfig, _attach, get_register_module

        # Some heads build their base model through AutoModel.from_config, which already attached them.
        if get_register_module(self) is None:
            settings = RegisterConfig.from_dict(getattr(config, CONFIG_KEY, None) or {})
            _attach(self, settings, initialize=False)

    # Named as the stock class: save_pretrained writes the class name into config.architectures, which
    # must stay one that transformers and load_model know (a model loaded here, fine-tuned and saved again).
    model_class = type(stock.__name__, (stock,), {"config_class": config_class, "__init__": __init__})
    model_class.__qualname__ = f"Regtune{stock.__name__}"  # what repr() shows
    return model_class


def register_auto_classes(encoders: tuple[str, ...], decoders: tuple[str, ...]) -> None:
    """Register every family's ``regtune_*`` config and model classes with the Auto classes (once)."""
    for family in (*encoders, *decoders):
        if family in _CONFIGS:
            continue
        stock_config = transformers.CONFIG_MAPPING[family]
        config_class = type(
            f"Regtune{stock_config.__name__}", (stock_config,), {"model_type": saved_type(family)}
        )
        AutoConfig.register(config_class.model_type, config_class)
        _CONFIGS[family] = config_class
        for auto, names in _CAUSAL_HEADS if family in decoders else _ENCODER_HEADS:
            stock = getattr(transformers, names[family], None) if family in names else None
            if stock is not None:
                auto.register(config_class, _model_class(stock, config_class))
