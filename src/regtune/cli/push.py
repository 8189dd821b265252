"""``regtune push``: upload a saved model folder, model card included, to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from regtune.core.errors import RegtuneError

#: ``owner/name`` as the Hub spells repository ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="upload a saved model folder (weights, tokenizer, model card) to the Hugging Face Hub",
        description="Create the Hub repository REPO_ID if needed and upload DIR to it with huggingface_hub. "
        "Needs a network connection and a Hub token (`huggingface-cli login`, HF_TOKEN, or --token). "
        "Load the pushed model with regtune.load_model(REPO_ID) to get its registers.",
    )
    p.add_argument("dir", help="a model folder written by regtune train (DIR/model)")
    p.add_argument("repo_id", help="the Hub repository, as owner/name")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", help="Hub token (default: the saved login or HF_TOKEN)")
    p.add_argument("--message", default="Upload regtune model", help="commit message")


def check_folder(folder: Path) -> None:
    """A model folder regtune wrote: weights, config and a model card."""
    if not folder.is_dir():
        raise RegtuneError(f"{folder}: no such folder")
    # A --train-only or --peft run's folder holds only its trained tensors, as a PEFT adapter does.
    weights = next(
        (n for n in ("model.safetensors", "adapter_model.safetensors") if (folder / n).exists()),
        "model.safetensors",
    )
    missing = [n for n in ("config.json", weights, "README.md") if not (folder / n).exists()]
    if missing:
        raise RegtuneError(f"{folder}: not a regtune model folder (missing {', '.join(missing)})")


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not _REPO_ID.match(args.repo_id):
        raise RegtuneError(f"repo id {args.repo_id!r}: give it as owner/name")
    check_folder(folder)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(token=args.token)
    try:
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        commit = api.upload_folder(repo_id=args.repo_id, folder_path=folder, commit_message=args.message)
    except OfflineModeIsEnabled as err:
        raise RegtuneError(
            f"cannot push {folder}: the Hub is in offline mode (HF_HUB_OFFLINE) ({err})"
        ) from err
    except (HfHubHTTPError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RegtuneError(f"cannot push {folder} to {args.repo_id}: {first}") from err
    print(f"pushed {folder} to {commit.commit_url if hasattr(commit, 'commit_url') else args.repo_id}")
    return 0
