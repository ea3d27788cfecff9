"""The m^n-DCNN model family: configs, the builder, and one registry.

    >>> from samplecnn.models import create_model, list_models
    >>> model = create_model("samplecnn", n_tags=50)   # the paper's 3^9 model
    >>> logits = model(torch.randn(4, 1, 59049))        # (4, 50) logits; sigmoid for scores
"""
from .config import ModelConfig, authors_channels
from .registry import (PAPER_TABLE, create_model, describe_model, get_model_config,
                       get_model_entry, list_models, model_from_config, register_model)
from .samplecnn import FusedSampleCNN, SampleCNN, count_flops

__all__ = [
    "FusedSampleCNN", "ModelConfig", "SampleCNN", "PAPER_TABLE", "authors_channels", "count_flops",
    "create_model", "describe_model", "get_model_config", "get_model_entry", "list_models",
    "model_from_config", "register_model",
]
