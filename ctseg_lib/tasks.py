"""The task registry: everything the library knows about a segmentation task, in one place.

The book has two tasks, both from the Medical Segmentation Decathlon (Antonelli et al. 2022,
Nature Communications 13, 4128): ``liver`` (Task03_Liver, 131 training CT, labels 0 background,
1 liver, 2 tumour — MSD calls it "cancer") and ``lung`` (Task06_Lung, 63 training CT, labels
0 background, 1 tumour).  The CLI (``ctseg synth / download / evaluate --task``), the phantom
generator, the data switch of the chapters and the evaluation all read :data:`TASKS`; adding a
task means adding one :class:`Task` here (and a phantom generator), nothing else.

The MD5 sums are those of the official MSD tar files (``Task03_Liver.tar``, ``Task06_Lung.tar``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import CTSegError

#: Mirror of the MSD tar files (the Decathlon's own Google-Drive links need a browser).
MSD_MIRROR = "https://msd-for-monai.s3-us-west-2.amazonaws.com"


@dataclass(frozen=True)
class Task:
    """One MSD task.

    Attributes:
        name: short name used everywhere (``"liver"``).
        code: MSD task number (3 for Task03).
        msd_folder: folder name inside the MSD tar (``"Task03_Liver"``).
        labels: ``{value: name}`` with the MSD names (0 is always background).
        md5: MD5 of the official tar; url: where :func:`~ctseg_lib.data.download.download_task` gets it.
        window: default display / intensity window preset (a key of ``preprocessing.WINDOWS``).
        phantom: ``"module:function"`` drawing the task's anatomy into a canvas
            (see :mod:`ctseg_lib.data.synthetic`); imported lazily.
        synthetic_name, description: what ``dataset.json`` of a phantom dataset says.
        size_gb: approximate download size, for messages.
        lesion_labels: the label values evaluated lesion by lesion (detection), e.g. the tumour.
    """

    name: str
    code: int
    msd_folder: str
    labels: dict[int, str]
    md5: str
    window: str
    phantom: str
    synthetic_name: str
    description: str
    size_gb: float = 0.0
    url: str = field(default="")
    lesion_labels: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of output channels of a segmentation network, background included."""
        return len(self.labels)

    @property
    def foreground(self) -> dict[int, str]:
        """``labels`` without the background."""
        return {k: v for k, v in self.labels.items() if k > 0}

    def json_labels(self) -> dict[str, str]:
        """The labels as ``dataset.json`` writes them (string keys)."""
        return {str(k): v for k, v in self.labels.items()}

    def phantom_function(self):
        """The phantom drawing function ``draw(grid, rng, half_width, half_depth) -> Canvas``."""
        import importlib

        module, func = self.phantom.split(":")
        return getattr(importlib.import_module(module), func)


TASKS: dict[str, Task] = {
    "liver": Task(
        name="liver", code=3, msd_folder="Task03_Liver", labels={0: "background", 1: "liver", 2: "cancer"},
        md5="a90ec6c4aa7f6a3d087205e23d4e6397", window="liver",
        phantom="ctseg_lib.data.phantom_abdomen:draw_abdomen", synthetic_name="SyntheticLiver",
        description="ctseg synthetic portal-venous abdominal CT phantoms (liver + liver tumours), "
                    "MSD Task03_Liver layout",
        size_gb=28.0, url=f"{MSD_MIRROR}/Task03_Liver.tar", lesion_labels=(2,)),
    "lung": Task(
        name="lung", code=6, msd_folder="Task06_Lung", labels={0: "background", 1: "cancer"},
        md5="8afd997733c7fc0432f71255ba4e52dc", window="lung",
        phantom="ctseg_lib.data.phantom_thorax:draw_thorax", synthetic_name="SyntheticLung",
        description="ctseg synthetic chest CT phantoms (one lung tumour each), MSD Task06_Lung layout",
        size_gb=9.0, url=f"{MSD_MIRROR}/Task06_Lung.tar", lesion_labels=(1,)),
}


def task_names() -> list[str]:
    """Names of the registered tasks, sorted (for ``argparse`` choices)."""
    return sorted(TASKS)


def get_task(name: str) -> Task:
    """The registered :class:`Task` called ``name``; a :class:`CTSegError` listing the known ones otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise CTSegError(f"unknown task {name!r}; expected one of {task_names()}") from None
