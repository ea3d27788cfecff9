"""Training: LightningModule, DataModule, recipes (configs), the paper's LR stages.

    from samplecnn.training import train, load_config
    result = train("configs/paper_mtat.yaml", ["data.store=stores/mtat"])
"""
from __future__ import annotations

import importlib

# Names are resolved lazily: the CLI's parser reads `fast.TRAIN_MODES` without importing
# Lightning, and `import samplecnn.training.config` stays cheap.
_EXPORTS = {
    "DEFAULTS": "config", "PAPER_LR_STAGES": "config", "RECIPES": "config",
    "apply_overrides": "config", "deep_merge": "config", "dump_config": "config",
    "load_config": "config", "resolve_config": "config", "write_config": "config",
    "EpochSampler": "datamodule", "SegmentDataModule": "datamodule",
    "TaggingModule": "module",
    "AtomicCheckpointIO": "run", "RunCheckpoint": "run", "TrainResult": "run",
    "build_model_config": "run", "train": "run",
    "LRStageSchedule": "schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"samplecnn.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'samplecnn.training' has no attribute {name!r}")
