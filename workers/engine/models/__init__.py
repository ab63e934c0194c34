"""Base models, LoRA adapters, presets and sample encoding for the engine."""
from workers.engine.models.batching import Batch, collate
from workers.engine.models.encoding import IGNORE_INDEX, EncodedSample, encode_sample, strip_image_tokens
from workers.engine.models.loading import LoadedModel, load_model
from workers.engine.models.presets import PRESETS, build_preset, materialize_preset
from workers.engine.models.specs import ALL_LINEAR, LoraSpec, ModelSpec

__all__ = [
    "ALL_LINEAR", "IGNORE_INDEX", "PRESETS", "Batch", "EncodedSample", "LoadedModel", "LoraSpec", "ModelSpec",
    "build_preset", "collate", "encode_sample", "load_model", "materialize_preset", "strip_image_tokens",
]
