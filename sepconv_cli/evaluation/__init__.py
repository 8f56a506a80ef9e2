"""``sepconv eval``'s library: benchmarks, methods to compare, and the scoring run.

    from sepconv_cli.evaluation import open_benchmark, build_methods, run_evaluation
    dataset = open_benchmark("middlebury", [Path("data/middlebury")])
    result = run_evaluation(dataset, build_methods(["blend", "flow"]), limit=10)
    for s in result.overall():
        print(s.method, s.psnr, s.ssim)

See ``benchmarks`` for the dataset layouts and protocols, ``methods`` for the
baselines and self-ensembling, and ``runner`` for exactly how scores are computed.
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
from sepconv_cli.evaluation.methods import BASELINES, Method, ModelMethod, build_methods
from sepconv_cli.evaluation.runner import (
    PSNR_CAP,
    Evaluation,
    FrameScore,
    SampleScore,
    run_evaluation,
    score,
    write_csv,
    write_json,
    write_report,
)

__all__ = [
    "BASELINES",
    "BENCHMARKS",
    "DATA_ENV",
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
    "default_root",
    "open_benchmark",
    "run_evaluation",
    "score",
    "write_csv",
    "write_json",
    "write_report",
]
