"""``sepconv eval``'s library: benchmarks, methods to compare, and the scoring run.

    from sepconv_cli.evaluation import open_benchmark, build_methods, run_evaluation
    dataset = open_benchmark("middlebury", [Path("data/middlebury")])
    result = run_evaluation(dataset, build_methods(["blend", "flow"]), limit=10)
    for s in result.overall():
        print(s.method, s.psnr, s.ssim)

Benchmarks other than ``video-thirds`` predict midpoints; ``video-thirds`` predicts at
t = 1/3 and 2/3 (``Triplet.t``), and ``result.per_time()`` splits its scores by t.

See ``benchmarks`` for the dataset layouts and protocols, ``method`` for the base every
method derives from, ``methods`` for the baselines, self-ensembling and
``build_methods``, ``rife`` for the RIFE peer, and ``runner`` for exactly how scores are
computed.
"""

from sepconv_cli.evaluation.benchmarks import (
    BENCHMARKS,
    DATA_ENV,
    Dataset,
    Sample,
    Skip,
    Triplet,
    default_root,
    open_benchmark,
)
from sepconv_cli.evaluation.method import Method
from sepconv_cli.evaluation.methods import (
    BASELINES,
    DEFAULT_MODEL,
    PEERS,
    ModelMethod,
    build_methods,
    default_methods,
)
from sepconv_cli.evaluation.runner import (
    PSNR_CAP,
    Evaluation,
    FrameScore,
    SampleScore,
    run_evaluation,
    score,
    split_methods,
    time_label,
    write_csv,
    write_json,
    write_report,
)

__all__ = [
    "BASELINES",
    "BENCHMARKS",
    "DATA_ENV",
    "DEFAULT_MODEL",
    "PEERS",
    "PSNR_CAP",
    "Dataset",
    "Evaluation",
    "FrameScore",
    "Method",
    "ModelMethod",
    "Sample",
    "SampleScore",
    "Skip",
    "Triplet",
    "build_methods",
    "default_methods",
    "default_root",
    "open_benchmark",
    "run_evaluation",
    "score",
    "split_methods",
    "time_label",
    "write_csv",
    "write_json",
    "write_report",
]
