"""`rbols run | eval | score | matrix | report | audit | export | repair | methods | models | data check`.

Exit status: 0 done; 1 a run failed (its directory says why); 2 bad input or an unusable state on disk (the
message names it and the fix); 130 interrupted (Ctrl-C: rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import os
import sys

from robustbench_ols.cli.parser import build_parser
from robustbench_ols.common.errors import RbolsError, RunFailed


def _asked_backend(argv) -> list[str]:
    """A plugin backend named by --backend: loaded before the command line is parsed, so that its options are."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", default=None)
    name = pre.parse_known_args(argv)[0].backend
    if name is None:
        return []
    from robustbench_ols.executors import BACKENDS
    if name in BACKENDS.names():
        return []
    BACKENDS.get(name)  # loads and checks it: SpecError when unknown, ContractError when not a Backend
    return [name]


def main(argv=None) -> int:
    try:
        args = build_parser(_asked_backend(sys.argv[1:] if argv is None else argv)).parse_args(argv)
        # imported once the command line is parsed: commands.py imports torch (seconds), which --help never needs
        from robustbench_ols.cli import audit_command, commands
        return getattr(audit_command if args.command == "audit" else commands, f"cmd_{args.command}")(args)
    except RunFailed as e:
        print(f"rbols: {e}", file=sys.stderr)
        return 1
    except RbolsError as e:
        print(f"rbols: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Interrupted says where and how to resume; a bare Ctrl-C, that nothing ran
        print(f"\nrbols: {e or 'interrupted; nothing of a run was recorded yet'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rbols methods | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet too
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
