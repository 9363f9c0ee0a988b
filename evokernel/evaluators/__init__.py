"""Evaluators: build candidates, check them against the reference, time them."""

from ._build import FUNCTION, Artifact, BuildFailure, build
from ._evaluator import (Context, Evaluator, InlineEvaluator, LocalEvaluator, Settings, create_evaluator,
                         default_threads)
from ._ray import RayEvaluator, runner_resources
from ._result import Outcome, Result
from ._runner import CHECK_ONLY, Protocol

__all__ = [
    "FUNCTION", "Artifact", "BuildFailure", "build", "Context", "Evaluator", "InlineEvaluator",
    "LocalEvaluator", "RayEvaluator", "runner_resources", "Settings", "create_evaluator", "default_threads", "Outcome", "Result", "Protocol", "CHECK_ONLY",
]
