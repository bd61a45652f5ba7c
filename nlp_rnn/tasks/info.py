"""What a bundle holds: task, architecture, tokenizer, data, scores, parameters per component (shared
weights counted once), and the task's own lines (languages, labels, ...)."""

import re

from torch import nn

from nlp_rnn.bundle import Bundle
from nlp_rnn.config import to_dict
from nlp_rnn.tasks import base as tasks


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def parameter_breakdown(model: nn.Module, components=tasks.DEFAULT_COMPONENTS) -> dict[str, int]:
    """Parameters per component, by name prefix (first match wins); anything unmatched is 'other'."""
    counts = {name: 0 for name, _ in components}
    for name, param in model.named_parameters():  # tied weights appear once, under their first name
        name = re.sub(r"^members\.\d+\.", "", name)  # an ensemble's members count under their components
        component = next((c for c, prefixes in components if name.startswith(prefixes)), "other")
        counts[component] = counts.get(component, 0) + param.numel()
    counts["total"] = count_parameters(model)
    return counts


def describe(bundle: Bundle) -> dict:
    meta, tok, task = bundle.meta, bundle.tokenizer, tasks.of(bundle)
    info = {
        "path": str(bundle.path),
        "task": bundle.task,
        "architecture": to_dict(bundle.config.model),
        "training_data": meta.get("data"),
        "best_validation": meta.get("best"),
        "step": meta.get("step"),
        "library_version": meta.get("library_version"),
        "format_version": meta.get("format_version"),
        "parameters": parameter_breakdown(bundle.model, task.components),
    }
    if tok is not None:
        info["tokenizer"] = {
            "type": bundle.config.tokenizer.model_type,
            "joint": tok.joint,
            "source_pieces": tok.src_vocab_size,
        }
    for key, value in task.describe(bundle).items():  # the task's own fields; dicts amend the generic ones
        if isinstance(value, dict) and isinstance(info.get(key), dict):
            info[key].update(value)
        else:
            info[key] = value
    return info
