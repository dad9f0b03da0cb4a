"""`vpt COMMAND ...` (or `python -m vpt_ray COMMAND ...`): one entry point for every command.

Each command is a module that also runs on its own as `python -m vpt_ray.X`; this dispatcher only
picks the module and runs it as `__main__` with the rest of the command line (runpy), so
`vpt phase 1 --set a=b` and `python -m vpt_ray.phase 1 --set a=b` are the same run and
`vpt X --help` is the module's help.
The registry is explicit: a command whose module is not installed says so instead of failing
with an import traceback.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys

# command -> (module run as `python -m`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "phase": ("vpt_ray.phase", "run phase N end to end: data, features, CV, search, backtest"),
    "train": ("vpt_ray.train", "data -> features -> search -> final model (no backtest)"),
    "backtest": ("vpt_ray.backtest", "backtest a saved model on a period outside its training"),
    "data": ("vpt_ray.data", "fetch, import and check bar data (local, GCS, Polygon, your files)"),
    "audit": ("vpt_ray.audit", "leakage and honesty audit of a run"),
    "compare": ("vpt_ray.compare", "runs side by side (default: the tracker's history)"),
    "optimize": ("vpt_ray.optimize", "rerun a phase with the reduced config its verdict wrote"),
    "report": ("vpt_ray.html_report", "(re)build a run's self-contained report.html"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: vpt COMMAND [ARGS...]",
        "",
        "Ray-based scaler for the Volume-Price-Trade XGBoost model.",
        "",
        "commands:",
        *[f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()],
        "",
        "`vpt COMMAND --help` shows a command's options. Each command is also",
        "`python -m vpt_ray.COMMAND` (report: vpt_ray.html_report).",
    ]
    return "\n".join(lines)


def _runnable(module: str) -> str | None:
    """The module `python -m module` would run (a package's __main__), or None if absent."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:
        main = f"{module}.__main__"
        return main if importlib.util.find_spec(main) is not None else None
    return module


def run(command: str, argv: list[str]) -> int:
    """Run one command with its arguments; returns the exit code."""
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"vpt: unknown command {command!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module, _ = COMMANDS[command]
    if _runnable(module) is None:
        print(
            f"vpt {command}: not available in this installation (no module {module}); "
            f"`vpt --help` lists the commands",
            file=sys.stderr,
        )
        return 2
    from vpt_ray.pipeline.parsers import INVOKED_AS

    saved = sys.argv
    sys.argv = [f"vpt {command}", *argv]
    INVOKED_AS["command"] = f"vpt {command}"  # the usage line's name (runpy replaces argv[0])
    try:  # exactly what `python -m module` runs, including its __main__ block
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
        INVOKED_AS.pop("command", None)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
