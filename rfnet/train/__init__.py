"""Training RFNet on Ray Train (``TorchTrainer``, DDP over N workers, CPU or GPU).

``reliable-ad train-rfnet --data DIR --out DIR`` calls :func:`train_rfnet`. The driver reads the
RF1M-layout set, splits it into train / validation / test (:func:`rfnet.data.holdout_split`, by
image-path hash, so evaluation can reproduce the split from the parameters stored in the
checkpoint; the test share is never trained or selected on) and starts one Ray Train run;
each worker runs :func:`train_loop_per_worker`:

- **data**: ``loader="memory"``: every worker decodes the train set once into RAM (and its share
  of the validation set), then each epoch takes its slice of one *global* seeded permutation, so
  N workers with global batch B see exactly the batches 1 worker would (the DDP equivalence test
  relies on it). ``loader="stream"``: Ray Data shards (``rfnet.data.to_ray_dataset``) streamed
  every epoch, for sets that do not fit in memory.
- **imbalance**: ``balance="weights"`` scales each sample's loss by ``N / (K * n_class)`` and
  divides by the *per-worker batch size* (not the batch's weight sum), so DDP's gradient average
  equals the single-worker loss exactly; ``"sampler"`` draws class-balanced epochs.
- **augmentations** (see :func:`augment`): joint horizontal flip of image and product, a small
  edge-replicated shift, and colour jitter applied identically to image and product. No vertical
  flips (gravity is what Space Mismatch is about), no crops (could cut the product or a
  hallucinated part), no scaling (sizes relative to the frame are Size Mismatch's evidence), no hue
  changes of the image alone (would fake or hide Indistinctiveness).
- **schedule**: AdamW, linear warm-up, cosine decay to zero at the last epoch. With a wall-clock
  budget (``optim.max_train_minutes``, counted from the job's start, Ray start-up included) the
  number of epochs is re-planned after every epoch from the measured epoch time, and the cosine is
  stretched to it; the epoch with the best validation macro F1 is kept. ``optim.ema_decay``: an
  exponential moving average of the weights is what is validated, selected and saved.
- **descriptor** (``data.cache_descriptor``): each example's product descriptor is computed once
  from the unaugmented image; its box entries follow the flip and shift of every batch.
- **precision**: bf16 autocast on GPUs through :mod:`pipelines.device`; weights stay fp32.
- **reporting**: every worker calls ``ray.train.report`` once per epoch (validation counts and
  timings are all-reduced first, so every decision is the same on every worker); rank 0 alone
  writes: the resume checkpoint (weights, optimizer, trainer state: safetensors + JSON, no pickle)
  handed to Ray Train, TensorBoard scalars under ``OUT/tensorboard``, and the best model to ``OUT``
  (``model.safetensors``, ``config.json``, ``meta.json``), loadable by ``rfnet.load_rfnet(OUT)``.
- **resume**: Ray Train's run directory is ``OUT/ray_train/rfnet-<config hash>``; rerunning the
  same command after a crash continues from the last reported epoch (Ray Train V2 restores the
  run's checkpoint manager from storage; ``ray.train.get_checkpoint()`` returns the last one). A
  worker lost during a run costs no rerun: Ray Train restarts the worker group
  (``workers.max_failures`` times) and it resumes the same way.
"""

from rfnet.train.collectives import (
    all_reduce,
    broadcast,
    broadcast_trees,
)
from rfnet.train.driver import (
    RESUMABLE_CHANGES,
    RUN_PREFIX,
    SPLIT_FILES,
    TrainResult,
    ensure_ray,
    explicit_splits,
    prepare_split,
    run_key,
    train_rfnet,
    worker_env,
)
from rfnet.train.examples import (
    Examples,
    PrepProgress,
    load_examples,
    log_search,
    precompute_maps,
)
from rfnet.train.fitting import (
    evaluate_batches,
    fit_descriptor_stats,
    fit_descriptor_trees,
    refit_saved_trees,
)
from rfnet.train.loaders import (
    MemoryData,
    StreamData,
)
from rfnet.train.loop import (
    EMA_FILE,
    END_MARGIN_S,
    MODEL_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    TREE_FOLDS,
    TREE_WEIGHTS,
    RaySession,
    WorkerRun,
    fit_worker,
    load_optimizer,
    save_optimizer,
    train_loop_per_worker,
)
from rfnet.train.steps import (
    augment,
    class_weights,
    ema_update,
    epoch_order,
    lr_factor,
    weighted_loss,
)

__all__ = [
    "EMA_FILE",
    "END_MARGIN_S",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "RESUMABLE_CHANGES",
    "RUN_PREFIX",
    "SPLIT_FILES",
    "STATE_FILE",
    "TREE_FOLDS",
    "TREE_WEIGHTS",
    "Examples",
    "MemoryData",
    "PrepProgress",
    "RaySession",
    "StreamData",
    "TrainResult",
    "WorkerRun",
    "all_reduce",
    "augment",
    "broadcast",
    "broadcast_trees",
    "class_weights",
    "ema_update",
    "ensure_ray",
    "epoch_order",
    "evaluate_batches",
    "explicit_splits",
    "fit_descriptor_stats",
    "fit_descriptor_trees",
    "fit_worker",
    "load_examples",
    "load_optimizer",
    "log_search",
    "lr_factor",
    "precompute_maps",
    "prepare_split",
    "refit_saved_trees",
    "run_key",
    "save_optimizer",
    "train_loop_per_worker",
    "train_rfnet",
    "weighted_loss",
    "worker_env",
]
