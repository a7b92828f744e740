"""Studies: the paper's experiments and the questions it leaves, one command each.

``probslot experiment NAME [--scale cpu|gpu|tiny] [--seeds N] [--out results/NAME] [--jobs J]
[--emit commands|slurm] [KEY=VALUE ...]`` runs study NAME end to end (`run_study`): its runs as
separate processes, finished runs reused, then ``summary.json``, ``table.md``, ``results.md`` and
figures in the results folder. `STUDIES` lists them; docs/results.md shows what each found.
"""

from probslot.experiments.catalog import STUDIES, get_study
from probslot.experiments.runner import StudyFailed, StudyResult, run_study
from probslot.experiments.spec import RunSpec
from probslot.experiments.study import Scale, Study, StudyOutput

__all__ = [
    "STUDIES",
    "RunSpec",
    "Scale",
    "Study",
    "StudyFailed",
    "StudyOutput",
    "StudyResult",
    "get_study",
    "run_study",
]
