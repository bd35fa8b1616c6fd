"""`python -m vptft <verb>`. A workflow job is one such process: it pins the CPU arithmetic (vptft.reproducibility),
then hands itself to the run's warm worker where one answers (vptft.worker: no imports of torch and timm to pay),
else runs the verb here. Once the verb has written its outputs (atomically, files closed), the process ends
without the interpreter's teardown, which takes ~2 s after importing torch and timm (measured on the 2-core CI
machine) - seconds every one of a run's hundreds of jobs would pay."""

import os
import sys

from vptft import reproducibility, worker

reproducibility.pin()  # before anything imports torch or numpy

if sys.argv[1:2] != ["worker"] and (status := worker.delegate(sys.argv[1:])) is not None:
    os._exit(status)

from vptft.cli import main

main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
