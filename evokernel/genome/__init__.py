"""Schedule genomes: encoding, decoding onto Halide, and variation."""

from ._decode import apply, schedule_code
from ._genome import INLINE, ROOT, Genome, StageGene
from ._plan import SCHEDULE_ENCODING, plan
from ._space import ScheduleSpace, StageSpace
from ._variation import crossover, factors, mutate, random_genome, repair, templates, unscheduled

__all__ = [
    "Genome", "StageGene", "INLINE", "ROOT", "ScheduleSpace", "StageSpace", "apply", "schedule_code",
    "plan", "crossover", "factors", "mutate", "random_genome", "repair", "templates",
    "unscheduled", "SCHEDULE_ENCODING",
]
