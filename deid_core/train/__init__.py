"""Training (paper §3 "At training time", §3.2, §4): settings, the face cache, datasets,
the training loop and its checkpoints.

Modules: :mod:`~deid_core.train.config`, :mod:`~deid_core.train.prepare` (``deid prepare``:
the aligned-face cache), :mod:`~deid_core.train.data` (datasets, step sampler),
:mod:`~deid_core.train.checkpoint`, :mod:`~deid_core.train.trainer` (``deid train``).
"""
from deid_core.train.config import (  # noqa: F401
    lam_at, LOSS_KEYS, PAPER_128_SCHEDULE, PAPER_256_SCHEDULE, sample_lams, TrainConfig)
from deid_core.train.prepare import (  # noqa: F401
    list_images, prepare_faces, PrepareSummary, read_face_index)
from deid_core.train.data import (  # noqa: F401
    FaceCacheDataset, InMemoryFaces, StepBatchSampler)
from deid_core.train.checkpoint import (  # noqa: F401
    atomic_save, CHECKPOINT_NAME, export_weights, rng_state, set_rng_state)
from deid_core.train.trainer import (  # noqa: F401
    ema_update, face_region, load_identity, resolve_amp, save_grid, train,
    Trainer)
