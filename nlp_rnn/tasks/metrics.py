"""BLEU/chrF through sacrebleu; accuracy, macro-F1 and the confusion matrix for classifiers."""

from collections.abc import Sequence

import sacrebleu


def bleu(
    hypotheses: Sequence[str], references: Sequence[str]
) -> tuple[sacrebleu.metrics.bleu.BLEUScore, str]:
    """Corpus BLEU on detokenised text with sacrebleu's default signature (13a, cased), and that signature."""
    metric = sacrebleu.BLEU()
    return metric.corpus_score(list(hypotheses), [list(references)]), str(metric.get_signature())


def chrf(
    hypotheses: Sequence[str], references: Sequence[str]
) -> tuple[sacrebleu.metrics.chrf.CHRFScore, str]:
    metric = sacrebleu.CHRF()
    return metric.corpus_score(list(hypotheses), [list(references)]), str(metric.get_signature())


def classification_report(gold: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (rows gold)."""
    n = len(labels)
    confusion = [[0] * n for _ in range(n)]
    for g, p in zip(gold, predicted):
        confusion[g][p] += 1
    per_class = {}
    for i, name in enumerate(labels):
        tp = confusion[i][i]
        predicted_i = sum(confusion[r][i] for r in range(n))
        support = sum(confusion[i])
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = len(gold)
    return {
        "accuracy": sum(confusion[i][i] for i in range(n)) / total if total else 0.0,
        "macro_f1": sum(c["f1"] for c in per_class.values()) / n if n else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion,
        "labels": list(labels),
        "examples": total,
    }
