"""Jobs: the wiring from names to a finished record (manifest, backbone, store, protocol).

The command line, the demo and the benchmarks call these; the protocols themselves stay
pure functions over arrays.
"""

from medtransfer.jobs.common import (
    DataOptions,
    FeatureJob,
    ModelOptions,
    RunOptions,
    feature_params,
    prepare_features,
    write_job_record,
)
from medtransfer.jobs.fewshot import FewShotOptions, FewShotResult, run_few_shot

__all__ = [
    "DataOptions",
    "FeatureJob",
    "FewShotOptions",
    "FewShotResult",
    "ModelOptions",
    "RunOptions",
    "feature_params",
    "prepare_features",
    "run_few_shot",
    "write_job_record",
]
