"""Scoring whole test sets: BLEU/chrF for translation models, accuracy/F1 for classifiers."""

import time
from pathlib import Path
from typing import Optional, Sequence

from nlp_rnn.bundle import Bundle
from nlp_rnn.data import read_hub, read_lines, read_table
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.metrics import bleu, chrf


def _hyps_file(base: Path, name: str, several: bool) -> Path:
    return base if not several else base.with_name(f"{base.stem}.{name}{base.suffix}")


def _model_info(bundle: Bundle) -> dict:
    meta = bundle.meta
    keys = ("task", "src_lang", "tgt_lang", "labels", "parameters", "step", "library_version")
    return {"path": str(bundle.path), **{k: meta[k] for k in keys if k in meta}}


def translation_sets(
    src: Sequence[Path], ref: Sequence[Path], data: Sequence[Path], dataset: Optional[str], splits: Sequence[str],
    src_col: str, tgt_col: str,
) -> list[tuple[str, list[str], list[str]]]:
    """(name, sources, references) for every test set named on the command line."""
    if len(src) != len(ref):
        raise NlpRnnError(f"give one --ref per --src (got {len(src)} --src and {len(ref)} --ref)")
    sets = []
    for s, r in zip(src, ref):
        sources, refs = read_lines(s), read_lines(r)
        if len(sources) != len(refs):
            raise NlpRnnError(f"{s} has {len(sources)} lines but {r} has {len(refs)}: source and reference must be line-aligned")
        sets.append((Path(s).stem, sources, refs))
    for table in data:
        cols = read_table(table, [src_col, tgt_col])
        sets.append((Path(table).stem, [str(x) for x in cols[src_col]], [str(x) for x in cols[tgt_col]]))
    if dataset:
        for split in splits or ["test"]:
            cols = read_hub(dataset, split, [src_col, tgt_col])
            sets.append((f"{dataset}:{split}", cols[src_col], cols[tgt_col]))
    if not sets:
        raise NlpRnnError("no test set: give --src F --ref F, --data TABLE, or --dataset NAME")
    return sets


def evaluate_translation(
    bundle: Bundle, src, ref, data, dataset, splits, src_lang, tgt_lang, beam_size, length_penalty, batch_size, hyps_out,
    precision: str = "fp32",
) -> dict:
    from nlp_rnn.predict import Translator

    translator = Translator(bundle, precision)
    opts = translator.options(beam_size=beam_size, length_penalty=length_penalty)
    batch_size = batch_size or (256 if opts.beam_size == 1 else 64)
    sets = translation_sets(src, ref, data, dataset, splits, src_lang or bundle.meta.get("src_lang", "src"),
                            tgt_lang or bundle.meta.get("tgt_lang", "tgt"))
    results = []
    for name, sources, refs in sets:
        started = time.perf_counter()
        outputs = translator.translate(sources, opts, batch_size)
        seconds = time.perf_counter() - started
        texts = [o[0].text if o else "" for o in outputs]
        if hyps_out is not None:
            _hyps_file(Path(hyps_out), name, len(sets) > 1).write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        bleu_score, bleu_sig = bleu(texts, refs)
        chrf_score, chrf_sig = chrf(texts, refs)
        results.append({
            "name": name, "sentences": len(sources), "bleu": round(bleu_score.score, 2), "chrf": round(chrf_score.score, 2),
            "bleu_detail": str(bleu_score), "seconds": round(seconds, 2), "sentences_per_s": round(len(sources) / seconds, 1),
        })
    return {
        "task": "translation", "model": _model_info(bundle), "sets": results,
        "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
        "decoding": {"beam_size": opts.beam_size, "length_penalty": opts.length_penalty, "length_norm": opts.length_norm,
                     "max_len_a": opts.max_len_a, "max_len_b": opts.max_len_b, "batch_size": batch_size,
                     "precision": translator.precision},
    }


def evaluate_classifier(bundle: Bundle, data, dataset, splits, text_column, label_column, batch_size, hyps_out) -> dict:
    from nlp_rnn.classification_task import label_ids
    from nlp_rnn.data import LabeledSource, read_labeled
    from nlp_rnn.metrics import classification_report
    from nlp_rnn.predict import Predictor

    predictor = Predictor(bundle)
    columns = dict(text_column=text_column or bundle.meta["data"].get("text_column", "sentence"),
                   label_column=label_column or bundle.meta["data"].get("label_column", "label"))
    sources = [LabeledSource(table=str(t), **columns) for t in data]
    sources += [LabeledSource(dataset=dataset, split=s, **columns) for s in (splits or ["test"])] if dataset else []
    if not sources:
        raise NlpRnnError("no test set: give --data TABLE or --dataset NAME")
    results = []
    for source in sources:
        texts, labels = read_labeled(source)
        gold = label_ids(labels, predictor.labels, source.describe())
        started = time.perf_counter()
        predictions = predictor.classify(texts, batch_size)
        seconds = time.perf_counter() - started
        predicted = [predictor.labels.index(p.label) for p in predictions]
        if hyps_out is not None:
            _hyps_file(Path(hyps_out), Path(source.describe()).stem, len(sources) > 1).write_text(
                "".join(p.label + "\n" for p in predictions), encoding="utf-8")
        report = classification_report(gold, predicted, predictor.labels)
        results.append({"name": source.describe(), **report, "seconds": round(seconds, 2),
                        "sentences_per_s": round(len(texts) / max(seconds, 1e-9), 1)})
    return {"task": "classification", "model": _model_info(bundle), "sets": results}
