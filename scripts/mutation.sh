#!/usr/bin/env bash
# Mutation testing of the training protocol's code (strategies/, engine, selection, schedule, head_grid, sweep):
# mutmut changes one operator, constant or call at a time and runs the in-process tests that reach it; a mutant
# the tests still pass ("survived") is a plausible bug they would miss. Modules and tests: [tool.mutmut] in
# pyproject.toml. Not part of CI (engine + strategies/{base,prompts,tokens}: 43 min on 2 cores). Results: mutants/mutmut-results.txt; README gives the
# last score and what survived.
#   scripts/mutation.sh            # the whole run
#   scripts/mutation.sh "vptft.schedule*"   # the mutants of one module (mutmut's own name patterns)
#   scripts/mutation.sh --fresh ...         # forget the last run first: mutmut keeps each verdict until the
#                                           # mutated function changes, so tests added since would not count
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--fresh" ]; then
    rm -rf mutants
    shift
fi
.venv/bin/pip install -q 'mutmut==3.8.1'
# mutmut forks the test process once per mutant: torch's thread pool must not exist yet when it forks, so one
# thread (conftest gives each pytest worker its share of the cores; 2 "workers" = 1 thread)
# (the core count is read before: GNU nproc answers OMP_NUM_THREADS)
cores=$(nproc)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTEST_XDIST_WORKER_COUNT=2
time .venv/bin/mutmut run --max-children "$cores" "$@"
.venv/bin/mutmut results --all true > mutants/mutmut-results.txt || .venv/bin/mutmut results > mutants/mutmut-results.txt
grep -c ": survived" mutants/mutmut-results.txt || true
