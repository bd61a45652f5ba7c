"""`nlp-rnn average`: a bundle whose weights are the mean of a run's kept checkpoints (the last N or the
best N of `train.keep_checkpoints`); or the mean of
several models fine-tuned from one start (a "model soup", Wortsman et al. 2022: runs with one
`train.init_seed` and different seeds). Both average buffers too (a batch-norm head's running statistics):
`averaging.mean_state`."""

import json
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import bundle as bundles
from nlp_rnn.averaging import mean_state
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks.base import load


def average_checkpoints(
    run: Path, output: Path, last: Optional[int] = None, best: Optional[int] = None
) -> dict:
    if (last is None) == (best is None) or (last or best or 0) < 1:
        raise NlpRnnError("average: give --last N or --best N (N at least 1)")
    _refuse_overwriting(output, [run])
    index = Path(run) / "checkpoints" / "index.jsonl"
    if not index.is_file():
        raise NlpRnnError(f"{run}: no kept checkpoints (train with train.keep_checkpoints: N)")
    kept = [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [r for r in kept if (index.parent / r["name"] / bundles.WEIGHTS).is_file()]
    chosen = kept[-last:] if last else sorted(kept, key=lambda r: r["score"], reverse=True)[:best]
    wanted = last or best
    if len(chosen) < wanted:
        raise NlpRnnError(f"{run}: {len(kept)} kept checkpoints, fewer than the {wanted} asked for")
    bundle = load(run)  # best/: config, tokenizer, meta and the model to fill
    model = bundle.model
    states = (bundles.read_weights(index.parent / r["name"], model) for r in chosen)
    with torch.no_grad():
        model.load_state_dict(mean_state(states), strict=False)
    steps = [r["step"] for r in chosen]
    bundle.meta["averaged"] = {
        "from": str(run),
        "steps": steps,
        "how": f"last {last}" if last else f"best {best}",
    }
    bundles.save(output, bundle)
    return {"output": str(output), "steps": steps}


def average_models(models: list[Path], output: Path) -> dict:
    """The mean of the weights of `models` (bundles or training folders), saved as the first's bundle. They
    must be one task, one architecture (the same tensors and shapes), one tokenizer and, for classifiers,
    the same labels; otherwise one line naming the first model and the one that differs. Floating-point
    buffers (a batch-norm head's statistics) are averaged too; integer buffers are the first's."""
    if len(models) < 2:
        raise NlpRnnError("average: give at least two --model (or a RUN with --last/--best)")
    _refuse_overwriting(output, models)
    first = load(models[0])

    def states():
        yield first.model.state_dict()
        for path in models[1:]:
            other = load(path)
            differs = _difference(first, other)
            if differs:
                raise NlpRnnError(
                    f"average: {models[0]} and {path} have different {differs}: their weights cannot be averaged"
                )
            yield other.model.state_dict()

    with torch.no_grad():
        first.model.load_state_dict(mean_state(states()))
    # the first model's validation, step, date, test scores and stored precision, not the mean's
    for key in ("best", "step", "created", "tests", "weights_dtype"):
        first.meta.pop(key, None)
    first.meta["averaged"] = {"from": [str(m) for m in models], "how": f"the mean of {len(models)} models"}
    bundles.save(output, first)
    return {"output": str(output), "models": [str(m) for m in models]}


def _refuse_overwriting(output: Path, sources: list) -> None:
    """`bundles.save` replaces OUTPUT whole: it must not be, or hold, a folder averaged from."""
    out = Path(output).resolve()
    for source in sources:
        path = Path(source)
        if not path.exists():
            continue  # a Hub name: nothing local to overwrite
        here = {path.resolve(), bundles.resolve(path).resolve()}
        if any(out == p or out in p.parents for p in here):
            raise NlpRnnError(f"average: --output {output} would overwrite {source}; give another folder")


def _difference(a, b) -> str:
    """What keeps two bundles' weights from being averaged, as in "A and B have different ...", or ''."""
    why = bundles.unlike(a, b)
    if why:
        return why
    mine, theirs = a.model.state_dict(), b.model.state_dict()
    if mine.keys() != theirs.keys():
        return f"architectures (tensor {sorted(mine.keys() ^ theirs.keys())[0]} in one only)"
    for name, tensor in mine.items():
        if tensor.shape != theirs[name].shape:
            return f"architectures ({name}: {tuple(tensor.shape)} against {tuple(theirs[name].shape)})"
    return ""
