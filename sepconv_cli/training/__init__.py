"""Training: the loop, checkpoints and resume, validation, distributed set-up, export.

``train(config, run_dir)`` trains the model ``config.model`` on a patch cache (or on
procedural scenes rendered on the fly) and writes, from rank 0 only::

    RUN_DIR/
      config.json              the resolved configuration (TrainConfig, full model config, data)
      checkpoints/last.ckpt    model + optimizer + scheduler + scaler + step/epoch + RNG states
                               (+ the weight average with ``ema``);
      checkpoints/best.ckpt    ... at the best validation PSNR so far (both written atomically)
      metrics.jsonl            one JSON row per log interval ("train") and validation ("val")
      metrics.csv              the same rows as a table
      curves.png               training loss and validation PSNR/SSIM against the step
      samples/epoch_XXX.png    fixed validation triplets: frame 0 | frame 1 | prediction | truth
      weights.pt               the final network in the compact format ``interpolate --weights`` reads
                               (with ``ema``: the average, as validated; the live weights stay in last.ckpt)
      summary.json             how the run ended (step, reason, best PSNR, per-rank digests)

``train(config, run_dir, resume=True)`` continues from ``last.ckpt`` exactly: the data
order and augmentation are functions of (seed, epoch, index) (see ``data.dataset``), so K
steps, a resume and N - K more steps give the same parameters as N steps in one go.

Distributed: under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) every process joins a
process group (NCCL on CUDA, gloo on CPU), the model is wrapped in
DistributedDataParallel and the data split by a DistributedSampler. ``batch_size`` is the
*global* batch, divided among the processes, so a run's numbers do not depend on how
many processes share it. Each step one small all-reduce carries the loss (for logging
and the NaN check) and the stop flags (time budget, Ctrl-C), so all ranks stop together.

Nothing here prints: messages go to ``note(text)`` and progress to ``progress(TrainProgress)``.

The package, from the bottom up: ``config`` (what decides a run and what it reports),
``distributed`` (this process's rank and device, the sampler), ``averaging`` (the weights'
moving average, and the average of several weights files), ``checkpoints`` (checkpoint files, atomic writes, RNG states),
``run_files`` (metrics, curves and sample sheets), ``validation`` (a batch through the
network, held-out scores), ``run_data`` (datasets and loaders from the config) and
``trainer`` (the ``Trainer`` and ``train``). Every name is importable from
``sepconv_cli.training`` as before the split.
"""

from sepconv_cli.training.averaging import WeightAverage, average_weights, warm_decay
from sepconv_cli.training.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _atomic_save, _atomic_text,
                                              _rng_state, _set_rng_state, export_checkpoint, exported_state,
                                              load_run_config, parameter_digest, read_checkpoint)
from sepconv_cli.training.config import (OPTIMIZERS, PRECISIONS, RESUMABLE, Note, ProgressFn, TrainConfig,
                                         TrainingError, TrainProgress, TrainResult, default_run_dir)
from sepconv_cli.training.distributed import Distributed, EpochSampler, resolve_device, setup_distributed
from sepconv_cli.training.run_data import RunData, build_run_data, held_out_dataset
from sepconv_cli.training.run_files import RunWriter, plot_curves, sample_sheet
from sepconv_cli.training.trainer import Trainer, train
from sepconv_cli.training.validation import Inputs, batch_inputs, evaluate, predict_samples, run_model, split_batch

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "OPTIMIZERS", "PRECISIONS", "RESUMABLE", "Distributed", "EpochSampler",
    "Inputs", "Note", "ProgressFn", "RunData", "RunWriter", "TrainConfig", "TrainProgress", "TrainResult", "Trainer",
    "TrainingError", "WeightAverage", "average_weights", "_atomic_save", "_atomic_text", "_rng_state", "_set_rng_state", "batch_inputs",
    "build_run_data", "default_run_dir", "evaluate", "export_checkpoint", "exported_state", "held_out_dataset",
    "load_run_config", "parameter_digest", "plot_curves", "predict_samples", "read_checkpoint", "resolve_device",
    "run_model", "sample_sheet", "setup_distributed", "split_batch", "train", "warm_decay",
]
