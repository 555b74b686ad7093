"""The ``lbedge`` command line: one module per stage of the work, listed in ``--help`` in the order of the work.

Exit statuses scripts can rely on: 0 the command did its job; 1 it failed at run time (one ``error: ...`` line on
stderr); 2 it was called wrongly (a usage message); 130 interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM.
Every command that takes a model names it the same way: ``-m/--model PATH``, a bundle or a checkpoint folder.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from .. import __version__
from ..errors import LBEdgeError, UsageError
from ..interrupt import exit_status, sigterm_as_interrupt

EXIT_ERROR = 1  # the command failed at run time
EXIT_USAGE = 2  # the command was called wrongly (click's own usage errors use it too)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()) if text else type(exc).__name__


class LBEdgeGroup(click.Group):
    """The ``lbedge`` group: commands listed in the order they were added (the order of the work); every
    command's errors become one line and an exit status; SIGTERM stops a command as Ctrl-C does."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with sigterm_as_interrupt():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            click.echo("interrupted", err=True)
            ctx.exit(exit_status(exc))
        except LBEdgeError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            ctx.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR)
        except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback only on request
            if os.environ.get("LBEDGE_DEBUG"):
                raise
            click.echo(
                f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); this is a bug in lbedge: "
                "run again with LBEDGE_DEBUG=1 for the traceback and report it",
                err=True,
            )
            ctx.exit(EXIT_ERROR)


class _StderrHandler(logging.Handler):
    """Log records as ``warning: ...`` lines (progress as ``... step``) on whatever ``sys.stderr`` is now."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "... " if record.name == "lbedge.progress" else f"{record.levelname.lower()}: "
            click.echo(prefix + record.getMessage(), err=True)
        except Exception:  # noqa: BLE001 - logging must never fail the command
            pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    root = logging.getLogger("lbedge")
    root.setLevel(level)
    logging.getLogger("lbedge.progress").setLevel(logging.ERROR if quiet else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        root.addHandler(_StderrHandler())
        root.propagate = False


@click.group(cls=LBEdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lbedge")
@click.option("--verbose", "-v", count=True, help="More messages (-v: details, -vv: debugging).")
@click.option("--quiet", "-q", is_flag=True, help="Only errors (no progress).")
def main(verbose: int, quiet: bool) -> None:
    """lbedge: LanguageBind zero-shot perception for the edge.

    Get a model (download, or a bundle), try it on files (classify, embed), deploy it (build, then compile on
    the device), and run it on sensors (demo) or measure it (eval, bench). Every command names its model with
    -m/--model: a bundle folder (ONNX Runtime/TensorRT, no torch) or an official checkpoint folder (PyTorch).
    Offline, `lbedge demo --lb-mini --headless` runs lb-mini, a small model lbedge trained on its synthetic
    world, on recorded sensor streams (make demo).

    Exit status: 0 done, 1 failed, 2 wrong usage, 130 interrupted (Ctrl-C), 143 stopped (SIGTERM).
    """
    _setup_logging(verbose, quiet)


def _register() -> None:
    """Add the commands in the order of the work (what ``--help`` lists)."""
    from . import deploy, info, ros, run, train, use, watch

    for command in (
        info.info,
        info.download,
        use.classify,
        use.embed,
        deploy.build,
        deploy.export,
        deploy.quantize,
        deploy.build_text,
        deploy.bake,
        deploy.validate,
        deploy.bench,
        deploy.compile_cmd,
        run.demo,
        watch.watch,
        ros.label_bag,
        run.eval_cmd,
        train.train,
    ):
        main.add_command(command)


_register()

# kept importable for code that used them from lbedge.cli
from .common import label_progress, writable_output  # noqa: E402

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "LBEdgeGroup", "label_progress", "main", "writable_output"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
