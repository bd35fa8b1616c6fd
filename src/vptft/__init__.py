"""vptft: the library behind the VPT-vs-full-finetuning reproduction workflow."""

__version__ = "0.1.0"
