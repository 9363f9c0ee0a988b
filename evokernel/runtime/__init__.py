"""What tuning leaves behind: the Kernel, its native library, the cache directory."""

from ._kernel import Kernel, TuningStats

__all__ = ["Kernel", "TuningStats"]
