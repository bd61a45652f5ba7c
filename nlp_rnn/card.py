"""The model card (`README.md`) every saved bundle carries, and bundles on the Hugging Face Hub:
`hf://ORG/NAME[@REVISION]` loads through `huggingface_hub` (cached; `HF_HUB_OFFLINE=1` honoured),
`push` uploads a bundle folder."""

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from nlp_rnn.errors import BundleError, NlpRnnError

CARD = "README.md"
HUB = re.compile(r"^hf:/+(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?/?$")
PRIVATE = ("trainer.pt", ".*")  # never uploaded: the trainer state (optimizer, RNG), hidden files


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_card(task: str, config: dict, meta: dict) -> str:
    """Markdown: what the model is, what it was trained on and how, how well it scores, how to use it."""
    lines = [f"# nlp-rnn {task} model", ""]
    model = config.get("model", {})
    if model.get("encoder") == "language_model" and isinstance(model.get("body"), dict):
        # a classifier over a language model's stack: its shape is the body's; the native encoder's fields
        # (cell, hidden_size, pooling...) are unused defaults
        body = model["body"]
        model = {k: body[k] for k in ("cell", "embedding_dim", "hidden_size", "num_layers") if k in body} | {
            k: model[k]
            for k in ("encoder", "window", "grad_windows", "head_size", "head_norm", "head_norm_steps")
            if k in model
        }
    shape = ", ".join(
        f"{k} {v}" for k, v in model.items() if isinstance(v, (int, str)) and not isinstance(v, bool)
    )
    lines += [f"A recurrent {task.replace('_', ' ')} model trained with nlp-rnn ({shape}).", ""]
    if meta.get("src_lang"):
        lines.append(f"- **Languages:** {meta['src_lang']} → {meta.get('tgt_lang', '?')}")
    if meta.get("labels"):
        lines.append(f"- **Labels:** {', '.join(map(str, meta['labels']))}")
    if meta.get("parameters"):
        lines.append(f"- **Parameters:** {meta['parameters']:,}")
    tokenizer = config.get("tokenizer", {})
    if tokenizer:
        normalise = ", ".join(tokenizer.get("normalise") or []) or "none"
        lines.append(
            f"- **Tokenizer:** {tokenizer.get('model_type')} ({tokenizer.get('vocab_size')} pieces); "
            f"normalisation: {normalise}"
        )
    data = meta.get("data") or {}
    if data:
        lines += ["", "## Training data", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in data.items() if v is not None]
    if meta.get("init_from"):
        start = meta["init_from"]
        whole = isinstance(start, dict) and start.get("head")
        lines.append(
            f"- started from: {start.get('path') if isinstance(start, dict) else start}"
            + (" (head included)" if whole else "")
        )
    lines += ["", "## Training", ""]
    best = meta.get("best") or {}
    if best.get("elapsed_s") is not None:
        lines.append(
            f"- training time to the kept model: {best['elapsed_s'] / 60:.1f} minutes, step {best.get('step')}"
        )
    if meta.get("hardware"):
        lines.append(f"- hardware: {meta['hardware']}")
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    averaged = meta.get("averaged")
    if isinstance(averaged, dict) and isinstance(averaged.get("from"), list):
        lines.append(
            f"- weights: the mean of {len(averaged['from'])} models fine-tuned from one start (a model soup): "
            + ", ".join(averaged["from"])
            + (" (the command above trained the first)" if meta.get("command") else "")
        )
    elif isinstance(averaged, dict):
        lines.append(
            f"- weights: the mean of the checkpoints of steps {', '.join(map(str, averaged.get('steps') or []))} "
            f"of {averaged.get('from')}"
        )
    train = config.get("train", {})
    if train:
        lines.append(
            "- settings: "
            + ", ".join(
                f"{k} {_fmt(train[k])}"
                for k in ("lr", "optimizer", "precision", "seed", "init_seed")
                if train.get(k) is not None
            )
        )
    scores = {k: v for k, v in best.items() if k.startswith("val_")}
    if scores or meta.get("tests"):
        lines += ["", "## Scores", ""]
        lines += [f"- validation {k.removeprefix('val_')}: {_fmt(v)}" for k, v in scores.items()]
        lines += [f"- {name}: {_fmt(value)}" for name, value in (meta.get("tests") or {}).items()]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "pip install nlp-rnn",
        "nlp-rnn info hf://ORG/NAME   # or a local folder; --model hf://ORG/NAME in every command",
        "```",
        "",
        "## Limitations",
        "",
        "Trained on the data above only: expect lower quality on text unlike it (other domains, other",
        "languages, other conventions). The validation scores are those the kept model was chosen on.",
        "",
    ]
    return "\n".join(lines)


def hub_reference(path: str | Path) -> Optional[tuple[str, Optional[str]]]:
    """(repo, revision) of `hf://ORG/NAME[@REVISION]` (a Path collapses its '//': 'hf:/ORG/NAME' too)."""
    match = HUB.match(str(path))
    return (match["repo"], match["revision"]) if match else None


def from_hub(repo: str, revision: Optional[str]) -> Path:
    """The local (cached) folder of a Hub model repository; offline mode reads the cache only."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise NlpRnnError("hf:// models need huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id=repo, revision=revision))
    except LocalEntryNotFoundError:
        raise BundleError(
            f"hf://{repo}: not in the local Hub cache and the Hub cannot be reached (offline mode or no network)"
        ) from None
    except HfHubHTTPError as err:
        raise BundleError(f"hf://{repo}: {str(err).splitlines()[0]}") from None


def upload_folder(bundle_dir: Path, folder: Path) -> Path:
    """The exact folder `push` uploads: the bundle's files but the trainer state, with its model card."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(bundle_dir, folder, ignore=shutil.ignore_patterns(*PRIVATE))
    if not (folder / CARD).is_file():
        meta = json.loads((bundle_dir / "meta.json").read_text(encoding="utf-8"))
        config = json.loads((bundle_dir / "config.json").read_text(encoding="utf-8"))
        (folder / CARD).write_text(model_card(meta.get("task", "?"), config, meta), encoding="utf-8")
    return folder


def push(bundle_dir: Path, repo: str, private: bool, staging: Path) -> str:
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise NlpRnnError("push needs huggingface_hub: pip install huggingface_hub") from None
    folder = upload_folder(bundle_dir, staging)
    api = HfApi()
    api.create_repo(repo, private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="nlp-rnn bundle")
    return str(getattr(commit, "commit_url", commit))
