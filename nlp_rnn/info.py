"""What a bundle holds: task, architecture, languages or labels, tokenizer, data, scores, and
parameters per component (shared weights counted once)."""

from torch import nn

from nlp_rnn.bundle import Bundle
from nlp_rnn.config import to_dict

# Component of each parameter by name prefix, first match wins (both model types).
COMPONENTS = [
    ("embeddings", ("src_embed.", "decoder.embed.", "embed.")),
    ("attention", ("decoder.attention.", "attention.")),
    ("output layer", ("decoder.output.", "output.")),
    ("encoder", ("encoder.",)),
    ("decoder", ("decoder.",)),
]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    counts = {name: 0 for name, _ in COMPONENTS}
    for name, param in model.named_parameters():  # tied weights appear once, under their first name
        component = next(c for c, prefixes in COMPONENTS if name.startswith(prefixes))
        counts[component] += param.numel()
    counts["total"] = count_parameters(model)
    return counts


def describe(bundle: Bundle) -> dict:
    meta, tok = bundle.meta, bundle.tokenizer
    info = {
        "path": str(bundle.path),
        "task": bundle.task,
        "architecture": to_dict(bundle.config.model),
        "tokenizer": {"type": bundle.config.tokenizer.model_type, "joint": tok.joint,
                      "source_pieces": tok.src_vocab_size, "target_pieces": tok.tgt_vocab_size},
        "training_data": meta.get("data"),
        "best_validation": meta.get("best"),
        "step": meta.get("step"),
        "library_version": meta.get("library_version"),
        "format_version": meta.get("format_version"),
        "parameters": parameter_breakdown(bundle.model),
    }
    if bundle.task == "translation":
        info["languages"] = f"{meta.get('src_lang')} -> {meta.get('tgt_lang')}"
    else:
        info["labels"] = meta.get("labels")
        info["tokenizer"].pop("target_pieces")
    return info
