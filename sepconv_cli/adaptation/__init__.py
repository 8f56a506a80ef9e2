"""Adapting a model to one video before interpolating it (``interpolate --adapt``).

A trained interpolator has seen other footage; the video at hand is the best example of
itself. ``adapt`` fine-tunes the weights on triplets ``(i, i+1, i+2)`` of the frames it is
*given*, each with its neighbours ``i-2`` and ``i+4``, with the project's own training loop
(``training.train``), then returns the better of the adapted and the original weights on
triplets it held out:

- **Windows**: triplets spread evenly over the frames (a shot cut inside one drops it),
  each with the frames two steps before and after it (for the four-frame model, which the
  run feeds the frames around each pair; none at the input's ends or across a shot cut),
  cut into patches, moving windows preferred (``_patches``), and stored as five-frame
  windows (patch cache version 2). As many windows are held as hold the frames of
  ``AdaptOptions.triplets`` triplets (72 windows of five frames for 120 triplets of
  three). Inside a triplet the outer frames are two steps apart, twice the motion the
  model meets between neighbours at run time, so each window is also used downscaled ×2
  (the same motion in pixels as at run time, on half-size content) where that copy still
  holds a patch.
- **Any frame size**: the patch sides are chosen from the frames (``patch_sides``): the
  options' sides on large frames, down to ``MIN_SIDE`` px on small ones, crops a multiple
  of the model's stride. Input that cannot be adapted to at all (frames under
  ``MIN_SIDE``, too few frames for two triplets, nothing moving, no time left to train)
  raises ``CannotAdapt``: the caller warns and interpolates with the original weights.
- **Recipe**: Adam at ``lr`` 2e-4 with a ``warmup_steps`` linear ramp. The weights are
  already converged; AdaMax without a warm-up moves every weight by about ``lr`` in its
  first steps whatever its gradient, which shakes the network before it learns anything.
- **Against over-fitting**: with ``scenes``, half of every batch is procedural scenes
  (``data.synthetic``) textured with frames of the video itself, with known ground truth at
  random t. Off by default: in budgets of minutes the model sees each patch a few times
  only, the held-out check below guards the rest, and every step spent on scenes is one
  not spent on the video.
- **Never worse**: triplets spread over the clip (one in ``held_out_every``, at least
  ``held_out_min`` while that leaves half for training) are kept out of training, each
  scored on ``val_patches`` windows at full size and as many on its ×2 copy (run-time
  motion). The training loop keeps its best checkpoint on them; that checkpoint is used
  only if its gain over the original weights, per held-out triplet (``compare_held_out``),
  exceeds both ``min_gain`` and twice its standard error: the run-time gain of a choice
  made on a few triplets is otherwise mostly noise. Both are scored as the run will use
  them, a four-frame model with the neighbours. ``AdaptResult.adapted`` says which, and
  ``AdaptResult.scale_gains`` the gain at each scale (``scale_gains``).

Nothing here reads a frame it is not given: ``eval --adapt`` hands it the frames a method
may see (the even frames of the ``video`` benchmark), never the frames it is scored on,
and both training and held-out windows come from those.

``adapted_weights`` adds a cache keyed by the input's bytes, the base weights' bytes and
the options, so a second run on the same input (other output settings) reuses the work.

The package: ``options`` (what ``adapt`` is asked and answers), ``triplets`` (the windows
around triplets, patch sides and the two patch caches), ``held_out`` (scoring and the
verdict), ``fine_tuning`` (``adapt`` itself) and ``kept`` (``adapted_weights``, its cache).
Every name is importable from ``sepconv_cli.adaptation`` as before the split.
"""

from sepconv_cli.adaptation.fine_tuning import adapt
from sepconv_cli.adaptation.held_out import HeldOutVerdict, compare_held_out, scale_gains, score_held_out
from sepconv_cli.adaptation.kept import FORMAT_VERSION, adaptation_key, adapted_weights, cache_dir
from sepconv_cli.adaptation.options import (MIN_SIDE, OPTIMIZERS, AdaptOptions, AdaptProgress, AdaptResult,
                                            AdaptWarning, CannotAdapt, Note, Progress, parse_duration)
from sepconv_cli.adaptation.triplets import (AdaptData, PatchSides, Window, Windows, held_out_choice, patch_sides,
                                             spread_windows, window_count, write_window_caches)

__all__ = [
    "FORMAT_VERSION", "MIN_SIDE", "OPTIMIZERS", "AdaptData", "AdaptOptions", "AdaptProgress", "AdaptResult",
    "AdaptWarning", "CannotAdapt", "HeldOutVerdict", "Note", "PatchSides", "Progress", "Window", "Windows", "adapt",
    "adaptation_key", "adapted_weights", "cache_dir", "compare_held_out", "held_out_choice", "parse_duration",
    "patch_sides", "scale_gains", "score_held_out", "spread_windows", "window_count", "write_window_caches",
]
