"""Networks only: they take frames whose sides are multiples of ``model.stride`` and
know nothing about padding to that stride, tiling or videos (see ``engine.py``)."""

from sepconv_cli.models.registry import MODELS, ModelSpec, build_model, load_weights, save_weights

__all__ = ["MODELS", "ModelSpec", "build_model", "load_weights", "save_weights"]
