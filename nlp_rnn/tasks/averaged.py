"""`nlp-rnn average`: a bundle whose weights are the mean of a run's kept checkpoints (the last N or the
best N of `train.keep_checkpoints`), with the running mean the Trainer's weight averaging uses."""

import json
from pathlib import Path
from typing import Optional

import torch

from nlp_rnn import bundle as bundles
from nlp_rnn.averaging import WeightAverage
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks.base import load


def average_checkpoints(
    run: Path, output: Path, last: Optional[int] = None, best: Optional[int] = None
) -> dict:
    if (last is None) == (best is None) or (last or best or 0) < 1:
        raise NlpRnnError("average: give --last N or --best N (N at least 1)")
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
    average = WeightAverage(model, "mean")
    for record in chosen:
        model.load_state_dict(bundles.read_weights(index.parent / record["name"], model), strict=False)
        average.update()
    with torch.no_grad():
        for p, mean in zip(average.params, average.average):
            p.copy_(mean)
    steps = [r["step"] for r in chosen]
    bundle.meta["averaged"] = {
        "from": str(run),
        "steps": steps,
        "how": f"last {last}" if last else f"best {best}",
    }
    bundles.save(output, bundle)
    return {"output": str(output), "steps": steps}
