"""Copy finished run directories for publishing with no path of this machine in them:

    python docs/results/portable_copy.py RESULTS_DIR DEST DATA_ROOT_AS_GIVEN

A run's spec.json records where its data came from as an absolute path (`execution.data_root`,
`execution.data_source`: the run record must not depend on the working directory); the published copy
says it as the commands in the README give it (e.g. ../shared/data). Nothing else is changed, and
nothing that enters the run_id is touched.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    src, dest, given = Path(argv[0]), Path(argv[1]), argv[2]
    dest.mkdir(parents=True, exist_ok=True)
    for done in sorted(src.glob("*/DONE")):
        run = done.parent
        shutil.copytree(run, dest / run.name, dirs_exist_ok=True)
        path = dest / run.name / "spec.json"
        record = json.loads(path.read_text())
        ex = record.get("execution", {})
        root = ex.get("data_root")
        if root:
            ex["data_source"] = str(ex.get("data_source", "")).replace(root, given)
            ex["data_root"] = given
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
