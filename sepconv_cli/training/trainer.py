"""The ``Trainer``, one run on this process: set-up and resume, the loop, the hooks that
validate and write checkpoints on its schedule, the final files; and ``train``, which
runs one with every process starting, and stopping, together."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepconv_cli import __version__
from sepconv_cli.errors import InputError, OutputError, SepconvError, WeightsError
from sepconv_cli.flow import Neighbours
from sepconv_cli.losses import Objective, build_objective, default_losses
from sepconv_cli.models.registry import MODELS, build_model, load_weights, model_config, save_weights, widened
from sepconv_cli.training.averaging import WeightAverage, save_average, snapshot_path, snapshots
from sepconv_cli.training.checkpoints import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _atomic_save, _rng_state,
                                              _set_rng_state, export_checkpoint, parameter_digest, read_checkpoint)
from sepconv_cli.training.config import (OPTIMIZERS, PRECISIONS, Note, ProgressFn, TrainConfig, TrainingError,
                                         TrainProgress, TrainResult, default_run_dir)
from sepconv_cli.training.distributed import Distributed, setup_distributed
from sepconv_cli.training.run_data import build_run_data
from sepconv_cli.training.run_files import RunWriter
from sepconv_cli.training.stopping import graceful_stop
from sepconv_cli.training.validation import batch_inputs, evaluate, predict_samples, run_model


@dataclass
class _Window:
    """The sums behind the next "train" row of metrics: losses, steps and seconds since the last one."""

    values: torch.Tensor
    steps: int = 0
    seconds: float = 0.0
    grad_max: float = 0.0  # the largest step's gradient norm: a spike is what a mean hides

    def reset(self) -> None:
        self.values.zero_()
        self.steps, self.seconds, self.grad_max = 0, 0.0, 0.0


class Trainer:
    """One training run on this process; ``run()`` returns a ``TrainResult``. Use ``train``."""

    def __init__(self, config: TrainConfig, run_dir: Path, env: Distributed, *, resume: bool,
                 args: list[str], note: Note, progress: ProgressFn) -> None:
        self.config = config
        self.run_dir = run_dir
        self.env = env
        self.resume = resume
        self.args = args
        self.note = note if env.main else (lambda text: None)
        self.progress = progress if env.main else (lambda p: None)
        self.device = env.device
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self.best: dict[str, Any] = {"psnr": None, "step": None}
        self.start_psnr: float | None = None
        self.last_checkpoint_step: int | None = None
        self.validated_step: int | None = None
        self.trained_seconds = 0.0
        self.average: WeightAverage | None = None

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything that can fail on bad input, before the processes start working together."""
        self._check_options()
        checkpoint = self._resumed_checkpoint()
        self._build_network()
        self._build_optimisation()
        self._setup_data()
        if checkpoint is not None:
            self._restore(checkpoint)
        self._build_average(checkpoint)

    def _check_options(self) -> None:
        c = self.config
        if c.model not in MODELS:
            raise InputError(f"unknown model '{c.model}' (known: {', '.join(sorted(MODELS))})")
        if c.precision not in PRECISIONS:
            raise InputError(f"unknown precision '{c.precision}' ({', '.join(PRECISIONS)})")
        if c.precision == "fp16" and self.device.type != "cuda":
            raise InputError("--precision fp16 needs a CUDA device (use bf16 or fp32 on the CPU)")
        if c.batch_size % self.env.world:
            raise InputError(f"--batch-size {c.batch_size} is the global batch: it must divide among {self.env.world} processes")
        for name in ("batch_size", "crop", "log_every"):
            if getattr(c, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if c.epochs is None and c.max_steps is None and c.time_budget is None:
            raise InputError("give --epochs, --max-steps or --time-budget (the run would never end)")
        if not 0 <= c.ema < 1:
            raise InputError(f"--ema {c.ema}: the decay must be at least 0 (off) and below 1")
        self.per_rank = c.batch_size // self.env.world
        self.channels_last = self.device.type == "cuda" if c.channels_last is None else bool(c.channels_last)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.precision)

    def _resumed_checkpoint(self) -> dict[str, Any] | None:
        """The run's last checkpoint when resuming; a new run must not overwrite one."""
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if self.resume:
            checkpoint = read_checkpoint(last, map_location="cpu")
            if checkpoint.get("model") != self.config.model:
                raise InputError(f"{self.run_dir} is a {checkpoint.get('model')} run, not {self.config.model}")
            return checkpoint
        if last.exists():
            raise OutputError(f"{self.run_dir} already holds a training run: continue it with --resume {self.run_dir}, "
                              "or choose another --out")
        return None

    def _build_network(self) -> None:
        c = self.config
        # The network: the same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(c.seed)
        if c.init and not self.resume:
            network = load_weights(c.init, model=c.model)
            changes = {k: _plain(v) for k, v in c.model_config.items()}
            if changes and any(model_config(network).get(k) != v for k, v in changes.items()):
                # A change that keeps what the network computes (new inputs at zero weight) is a start, not a clash.
                grown = widened(network, changes)
                if grown is None:
                    raise InputError(f"--model-config differs from the configuration stored in {c.init}")
                network = grown
        else:
            try:
                network = build_model(c.model, c.model_config)
            except (TypeError, ValueError, WeightsError) as exc:
                raise InputError(f"bad --model-config for {c.model}: {exc}") from None
        # Record the full configuration, so a resume rebuilds exactly this network.
        c.model_config = model_config(network)
        stride = network.stride
        if c.crop % stride:
            raise InputError(f"--crop {c.crop} must be divisible by {stride} ({c.model} needs sides divisible by {stride})")
        self.network = network.to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    def _build_optimisation(self) -> None:
        c = self.config
        self.objective: Objective = build_objective(c.losses or default_losses(c.model), c.vgg_weights).to(self.device)
        if c.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer '{c.optimizer}' ({', '.join(OPTIMIZERS)})")
        self.optimizer = OPTIMIZERS[c.optimizer](self.network.parameters(), lr=c.lr)
        self.scheduler = (torch.optim.lr_scheduler.StepLR(self.optimizer, c.lr_decay_epochs, c.lr_decay_factor)
                          if c.lr_decay_epochs > 0 else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=c.precision == "fp16")

    def _setup_data(self) -> None:
        data = build_run_data(self.config, self.network, self.env, self.per_rank, self.note)
        self.data_description = data.description
        self.train_set, self.val_set = data.train_set, data.val_set
        self.sampler, self.loader, self.val_loader = data.sampler, data.loader, data.val_loader
        self.steps_per_epoch, self.total_steps = data.steps_per_epoch, data.total_steps

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.network.load_state_dict(checkpoint["model_state"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(f"the checkpoint in {self.run_dir} does not match this {self.config.model} network "
                             f"({str(exc).splitlines()[0][:160]})") from None
        if self.scheduler is not None and checkpoint.get("scheduler"):
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        if checkpoint.get("train_triplets") != len(self.train_set):
            raise InputError(f"the training data changed since {self.run_dir} started ({checkpoint.get('train_triplets')} "
                             f"triplets then, {len(self.train_set)} now): resume with the same data, or start a new run")
        self.step = int(checkpoint["step"])
        self.epoch = int(checkpoint["epoch"])
        self.validated_step = checkpoint.get("validated_step")
        self.epoch_step = int(checkpoint["epoch_step"])
        self.best = dict(checkpoint.get("best") or self.best)
        self.trained_seconds = float(checkpoint.get("trained_seconds", 0.0))
        self.last_checkpoint_step = self.step
        _set_rng_state(checkpoint["rng"])

    def _build_average(self, checkpoint: dict[str, Any] | None) -> None:
        """The weights' moving average, when asked for: the checkpoint's, continued; else one
        started from the network as it is now (the ``init`` weights, or a resumed run's live
        ones when that run had no average)."""
        if self.config.ema <= 0:
            return
        self.average = WeightAverage(self.network, self.config.ema)
        stored = checkpoint.get("ema") if checkpoint is not None else None
        if stored:
            try:
                self.average.load_state_dict(stored)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise InputError(f"the weight average in {self.run_dir}'s checkpoint does not match this "
                                 f"{self.config.model} network ({str(exc).splitlines()[0][:160]})") from None

    @property
    def _shipped(self) -> nn.Module:
        """The network that is validated, sampled and exported: the average when there is one."""
        return self.average.module if self.average is not None else self.network

    # -- checkpoints -------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.config.model,
            "model_config": model_config(self.network),
            "model_state": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "ema": self.average.state_dict() if self.average is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "validated_step": self.validated_step,
            "train_triplets": len(self.train_set),
            "best": self.best,
            "trained_seconds": self.trained_seconds,
            "rng": _rng_state(),
            "config": asdict(self.config),
            "args": list(self.args),
            "sepconv_version": __version__,
        }

    def save_epoch_end(self) -> None:
        """last.ckpt, and the exported weights as a snapshot once ``average_from`` is reached."""
        if self.config.average_from is not None and self.step >= self.config.average_from:
            path = snapshot_path(self.run_dir, self.step)
            path.parent.mkdir(exist_ok=True)
            self.export(path)
        self.save_last()

    def save_last(self) -> None:
        """Write last.ckpt (rank 0; call through ``_on_main`` in a distributed run)."""
        if self.last_checkpoint_step != self.step:
            _atomic_save(self._checkpoint(), self.writer.checkpoints / "last.ckpt")
            self.last_checkpoint_step = self.step

    def export(self, path: Path) -> None:
        metadata = {
            "trained_by": f"sepconv train {__version__}", "step": self.step, "epoch": self.epoch,
            "losses": self.objective.describe(), "data": self.data_description,
            "best_val_psnr": self.best.get("psnr"), "best_step": self.best.get("step"),
        }
        if self.average is not None:
            metadata["ema"] = {"decay": self.average.decay, "updates": self.average.updates}
        try:
            save_weights(self._shipped, path, metadata=metadata)
        except OSError as exc:
            raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from None

    # -- validation --------------------------------------------------------------------

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def validate(self, epoch_end: bool) -> None:
        """Rank 0 validates (the others wait); at an epoch's end also samples and last.ckpt."""
        self.validated_step = self.step
        self._on_main(lambda: self._validate(epoch_end))

    def _validate(self, epoch_end: bool) -> None:
        if self.val_loader is None:
            if epoch_end:
                self.save_epoch_end()
                self.writer.flush_tables()
            return
        # Validation runs in fp32 whatever the training precision: exact scores, and cheap.
        scores = evaluate(self._shipped, self.val_loader, self.device, channels_last=self.channels_last)
        row = {"kind": "val", "step": self.step, "epoch": self.epoch, "time": round(self.trained_seconds, 2),
               "psnr": round(scores["psnr"], 4), "ssim": round(scores["ssim"], 5), "val_l1": round(scores["l1"], 6)}
        self.writer.log(row)
        if self.start_psnr is None:
            self.start_psnr = scores["psnr"]
        improved = self.best.get("psnr") is None or scores["psnr"] > self.best["psnr"]
        if improved:
            self.best = {"psnr": scores["psnr"], "ssim": scores["ssim"], "step": self.step}
        if epoch_end and self.config.samples > 0:
            count = min(self.config.samples, len(self.val_set))
            batch = torch.utils.data.default_collate([self.val_set[i] for i in range(count)])
            self.writer.save_samples(self.epoch, predict_samples(self._shipped, batch, self.device))
        if epoch_end:
            self.save_epoch_end()
        if improved:
            _atomic_save(self._checkpoint(), self.writer.checkpoints / "best.ckpt")
        self.writer.flush_tables()
        self.note(f"step {self.step} (epoch {self.epoch}): validation PSNR {scores['psnr']:.2f} dB, "
                  f"SSIM {scores['ssim']:.4f}" + (" (best)" if improved else ""))

    # -- the run -----------------------------------------------------------------------

    def run(self) -> TrainResult:
        c = self.config
        if self.env.main:
            self._start_writer()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.network.train()
        self.model: nn.Module = self._parallel_model()
        verb = "continuing" if self.resume else "training"
        averaged = f"; validating and exporting a weight average (EMA {c.ema:g})" if self.average is not None else ""
        self.note(f"{verb} {c.model} ({sum(p.numel() for p in self.network.parameters()) / 1e6:.2f} M parameters) "
                  f"on {self.data_description}; loss {self.objective.describe()}{averaged}; "
                  f"{self.env.world} process(es) on {self.device}; writing to {self.run_dir}")
        if c.validate_init and not self.resume and self.step == 0:
            self.validate(epoch_end=False)
        reason = self._loop()
        # A final validation unless the user asked to stop now (time budget, Ctrl-C).
        if reason not in ("time-budget", "interrupted") and self.validated_step != self.step:
            self.validate(epoch_end=False)
        digests = self.env.gather(parameter_digest(self.network))
        weights = self.run_dir / "weights.pt"
        self._on_main(lambda: self._finish(reason, digests, weights))
        return TrainResult(self.run_dir, self.step, self.epoch, reason, self.best.get("psnr"), weights, self._rate,
                           self.best.get("step"), self.start_psnr)

    def _start_writer(self) -> None:
        """The run folder's writer, and config.json (rank 0); a resume drops the metrics it redoes."""
        c, env = self.config, self.env
        self.writer = RunWriter(self.run_dir, [*self._averaged, "grad_max"], self.note)
        if self.resume:
            self.writer.reload_metrics(self.step)
        self.writer.write_json("config.json", {
            "config": asdict(c), "losses": self.objective.describe(), "data": self.data_description,
            "train_triplets": len(self.train_set), "val_triplets": len(self.val_set) if self.val_set else 0,
            "world_size": env.world, "batch_per_process": self.per_rank, "steps_per_epoch": self.steps_per_epoch,
            "device": str(self.device), "channels_last": self.channels_last,
            "sepconv_version": __version__, "torch_version": torch.__version__, "args": list(self.args),
        })

    def _parallel_model(self) -> nn.Module:
        """The network as the loop calls it: wrapped in DistributedDataParallel when there are several processes."""
        if not self.env.active:
            return self.network
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.network, device_ids=ids, gradient_as_bucket_view=True)

    def _finish(self, reason: str, digests: list[Any], weights: Path) -> None:
        """The final files (rank 0): last.ckpt, the weights, best.pt when the best was earlier, tables, summary."""
        self.save_last()
        self.export(weights)
        best = self.writer.checkpoints / "best.ckpt"
        if best.exists() and self.best.get("step") != self.step:
            export_checkpoint(best, self.run_dir / "best.pt")
        if self.config.average_from is not None and (members := snapshots(self.run_dir, self.config.average_from)):
            save_average(members, self.run_dir / "averaged.pt")
            self.note(f"averaged.pt: the average of {len(members)} snapshots from step {self.config.average_from} on")
        self.writer.flush_tables()
        in_sync = len(set(digests)) == 1
        self.writer.write_json("summary.json", {
            "reason": reason, "step": self.step, "epoch": self.epoch, "best": self.best,
            "trained_seconds": round(self.trained_seconds, 2), "samples_per_s": round(self._rate, 3),
            "world_size": self.env.world, "rank_digests": digests, "ranks_in_sync": in_sync,
        })
        if not in_sync:
            self.note("warning: the processes ended with different weights (see summary.json)")
        self.note(f"stopped at step {self.step} (epoch {self.epoch}, {reason}); weights: {weights}")

    def _on_main(self, action: Callable[[], None]) -> None:
        """Run ``action`` on rank 0; every rank raises if it failed (no rank is left waiting)."""
        error: SepconvError | None = None
        if self.env.main:
            try:
                action()
            except SepconvError as exc:
                error = exc
        if self.env.active:
            failed = self.env.sum(torch.tensor([float(error is not None)], device=self.device))
            if float(failed) > 0 and error is None:
                error = SepconvError("rank 0 failed to write the run's files (see its message)")
        if error is not None:
            raise error

    # -- the loop ----------------------------------------------------------------------

    def _loop(self) -> str:
        """Epochs until a limit, the time budget or Ctrl-C stops the run; returns which."""
        self._started = time.perf_counter()
        self._rate = 0.0
        window = _Window(torch.zeros(1 + len(self._averaged), dtype=torch.float64))  # the loss, then _averaged
        with graceful_stop() as interrupt:
            while True:
                reason = self._limit_reached() or self._epoch(interrupt, window)
                if reason:
                    return reason

    def _epoch(self, interrupt: dict[str, bool], window: _Window) -> str | None:
        """The rest of this epoch (all of it unless resumed part-way); why the run stops, or None to go on."""
        self.sampler.set_epoch(self.epoch)
        self.sampler.start = self.epoch_step * self.per_rank
        self.train_set.set_epoch(self.epoch)
        batches = iter(self.loader)
        while True:
            tick = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            except RuntimeError:
                if interrupt["stop"]:  # a DataLoader worker killed by the same Ctrl-C
                    return "interrupted"
                raise
            reason = self._step(batch, tick, interrupt, window)
            if reason:
                return reason
        if self.epoch_step:  # the loader ended early (cannot happen with drop_last)
            raise TrainingError(f"the data loader stopped after {self.epoch_step} of {self.steps_per_epoch} steps")
        return None

    def _step(self, batch: torch.Tensor, tick: float, interrupt: dict[str, bool], window: _Window) -> str | None:
        """One optimizer step on ``batch`` (loaded since ``tick``) and what follows it on the schedule."""
        c, env = self.config, self.env
        values = self._train_step(batch)
        now = time.perf_counter()
        last_step_seconds = now - tick
        # Stop flags ride on the loss's all-reduce: Ctrl-C on any process, and rank 0's
        # clock for the time budget (stop when another step would overrun it).
        over = (env.main and c.time_budget is not None
                and now - self._started + last_step_seconds >= c.time_budget)
        flags = torch.tensor([float(interrupt["stop"]), float(over)], device=values.device)
        packed = env.sum(torch.cat([values, flags]))
        values = (packed[:-2] / env.world).cpu().double()
        interrupted, out_of_time = bool(packed[-2] > 0), bool(packed[-1] > 0)
        if not torch.isfinite(values[0]):
            raise TrainingError(self._nan_message(float(values[0])))
        self.step += 1
        self.epoch_step += 1
        self.trained_seconds += last_step_seconds
        self._record(values, last_step_seconds, window)
        self._on_schedule()
        if interrupted:
            return "interrupted"
        if out_of_time:
            return "time-budget"
        return self._limit_reached()

    def _record(self, values: torch.Tensor, seconds: float, window: _Window) -> None:
        """Progress after every step; a "train" row of metrics every ``log_every`` steps and at an epoch's end."""
        c = self.config
        window.values += values
        window.grad_max = max(window.grad_max, float(values[-1]))
        window.steps += 1
        window.seconds += seconds
        # Training throughput (data loading included, validation and checkpoints not).
        rate = window.steps * c.batch_size / max(window.seconds, 1e-9)
        self._rate = rate
        self.progress(TrainProgress(self.step, self.total_steps, self.epoch, float(values[0]), rate,
                                    self.start_psnr, self.best.get("psnr")))
        if self.env.main and (self.step % c.log_every == 0 or self.epoch_step == self.steps_per_epoch):
            mean = (window.values / window.steps).tolist()
            self.writer.log({
                "kind": "train", "step": self.step, "epoch": self.epoch,
                "time": round(self.trained_seconds, 2), "lr": self.optimizer.param_groups[0]["lr"],
                "loss": mean[0], **dict(zip(self._averaged, mean[1:])), "grad_max": window.grad_max,
                "samples_per_s": round(rate, 3),
            })
            window.reset()

    def _on_schedule(self) -> None:
        """After a step: at an epoch's end the next epoch, its learning rate and a validation;
        else a validation or a checkpoint when one is due."""
        c = self.config
        if self.epoch_step == self.steps_per_epoch:
            self.epoch += 1
            self.epoch_step = 0
            if self.scheduler is not None:
                self.scheduler.step()
            self.validate(epoch_end=True)
        elif c.val_every and self.step % c.val_every == 0:
            self.validate(epoch_end=False)
        elif c.checkpoint_every and self.step % c.checkpoint_every == 0:
            self._on_main(self.save_last)

    def _warm_up(self) -> None:
        """Scale this step's learning rate by the warm-up ramp (a function of the step alone, so resumes match)."""
        c = self.config
        if c.warmup_steps <= 0:
            return
        ramp = min(1.0, (self.step + 1) / c.warmup_steps)
        decay = c.lr_decay_factor ** (self.epoch // c.lr_decay_epochs) if c.lr_decay_epochs > 0 else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * decay * ramp

    def _train_step(self, batch: torch.Tensor) -> torch.Tensor:
        self._warm_up()
        x = batch_inputs(batch, self.device, self.channels_last)
        frame1, middle, frame2, times = x.frame1, x.middle, x.frame2, x.times
        with self._autocast():
            if self.objective.needs_flipped:
                # One forward pass over both temporal orders (DDP allows one forward per backward).
                both_times = None if times is None else torch.cat([times, 1 - times])
                both_around = None
                if x.neighbours is not None:  # reversed in time, the frame after becomes the one before
                    n = x.neighbours
                    both_around = Neighbours(torch.cat([n.f0m, n.f12]), torch.cat([n.f12, n.f0m]),
                                             valid=torch.cat([n.valid, n.valid]))
                both = run_model(self.model, torch.cat([frame1, frame2]), torch.cat([frame2, frame1]), both_times,
                                 both_around)
                prediction, flipped = both.chunk(2)
            else:
                prediction, flipped = run_model(self.model, frame1, frame2, times, x.neighbours), None
            total, terms = self.objective(prediction, middle, flipped)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)  # the norm (and the clip) of the true gradients, not the fp16-scaled ones
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # logged before any clipping
        if self.config.clip_grad > 0:
            torch.nn.utils.clip_grads_with_norm_(params, self.config.clip_grad, norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            # The unwrapped network's parameters: DDP's wrapper holds the same tensors.
            self.average.update(self.network)
        return torch.stack([total.detach(), *(terms[n].detach() for n in self.objective.names), norm.detach()]).float()

    @property
    def _averaged(self) -> list[str]:
        """What a "train" row averages after the loss, in the order ``_train_step`` returns it.
        The terms are prefixed: a bare ``ssim`` term would share the column of validation's SSIM."""
        return [*(f"loss_{name}" for name in self.objective.names), "grad_norm"]

    def _limit_reached(self) -> str | None:
        c = self.config
        if c.epochs is not None and self.epoch >= c.epochs:
            return "epochs"
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max-steps"
        return None

    def _nan_message(self, value: float) -> str:
        where = f"loss became {value} at step {self.step + 1} (epoch {self.epoch})"
        if self.last_checkpoint_step is None:
            kept = "no checkpoint had been written yet"
        else:
            kept = f"the last good checkpoint {self.run_dir / 'checkpoints' / 'last.ckpt'} (step {self.last_checkpoint_step}) is kept"
        return f"{where}; training stopped, {kept}. Try a lower --lr or --precision fp32, then --resume"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def train(config: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = False,
          args: list[str] | None = None, note: Note | None = None, progress: ProgressFn | None = None) -> TrainResult:
    """Train (or, with ``resume=True``, continue) a run; see ``sepconv_cli.training``.

    ``run_dir`` defaults to ``runs/<model>-<timestamp>``. ``note`` receives one-line
    messages, ``progress`` a ``TrainProgress`` after every step (both on rank 0 only).
    Raises ``SepconvError`` subclasses on bad input, a NaN loss or a failed write.
    """
    config = dataclasses.replace(config, model_config=dict(config.model_config), losses=list(config.losses))
    env = setup_distributed(config.device)
    try:
        chosen = Path(run_dir) if run_dir is not None else default_run_dir(config.model)
        chosen = Path(env.broadcast(str(chosen)))
        trainer = Trainer(config, chosen, env, resume=resume, args=list(args if args is not None else sys.argv[1:]),
                          note=note or (lambda text: None), progress=progress or (lambda p: None))
        failure: SepconvError | None = None
        try:
            trainer.setup()
        except SepconvError as exc:
            failure = exc
        if env.active:  # every process stops when one cannot start, instead of waiting forever
            failed = env.sum(torch.tensor([float(failure is not None)], device=env.device))
            if float(failed) > 0 and failure is None:
                failure = SepconvError("another training process failed to start (see its message)")
        if failure is not None:
            raise failure
        result = trainer.run()
        # Rank 0 still writes the final files while the others are done: tearing the gloo
        # group down under it made rank 0 abort at exit now and then ("terminate called").
        env.barrier()
        return result
    finally:
        env.close()
