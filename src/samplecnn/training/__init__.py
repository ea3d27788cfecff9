"""Training: LightningModule, DataModule, recipes (configs), the paper's LR stages.

    from samplecnn.training import train, load_config
    result = train("configs/paper_mtat.yaml", ["data.store=stores/mtat"])
"""
from __future__ import annotations

from samplecnn.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
