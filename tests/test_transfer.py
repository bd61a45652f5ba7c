"""Sentiment on real text: whole documents read in windows, raw text normalised by the tokenizer, and a
classifier started from a language model (`--init-from`) with per-layer rates and gradual unfreezing."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import CHECKPOINTS, NYSE, ROOT

from nlp_rnn.cli import main
from nlp_rnn.config import DataConfig, TokenizerConfig, TrainConfig
from nlp_rnn.data import make_batch
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.classifier import ClassifierModelConfig, build
from nlp_rnn.nn.language_model import LMModelConfig
from nlp_rnn.normalise import normalise
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.classification import ClassifierConfig
from nlp_rnn.tasks.classification.interface import Predictor
from nlp_rnn.tokenizer import Tokenizer
from nlp_rnn.train import Trainer

BODY = LMModelConfig(embedding_dim=12, hidden_size=16, num_layers=2, dropout=0.0)


def document_model(window: int, grad_windows: int = 20, **body) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ClassifierModelConfig(
        encoder="language_model",
        body=replace(BODY, **body),
        window=window,
        grad_windows=grad_windows,
        dropout=0.0,
    )
    return build(cfg, 50, 3)


def test_a_document_read_in_windows_equals_one_pass_with_the_state_carried() -> None:
    windowed, whole = document_model(window=7), document_model(window=10_000)
    whole.load_state_dict(windowed.state_dict())
    torch.manual_seed(1)
    docs = [torch.randint(5, 50, (35,)).tolist(), torch.randint(5, 50, (12,)).tolist(), [7]]  # 5x, <2x, 1
    batch = make_batch(docs)
    for model in (windowed, whole):
        model.eval()
    with torch.no_grad():
        a, b = windowed.features(batch.src, batch.src_len), whole.features(batch.src, batch.src_len)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            torch.softmax(windowed.logits(batch), -1),
            torch.softmax(whole.logits(batch), -1),
            atol=1e-5,
            rtol=0,
        )
        alone = windowed.features(*(lambda x: (x.src, x.src_len))(make_batch([docs[1]])))
    torch.testing.assert_close(alone[0], a[1], atol=1e-5, rtol=1e-5)  # alone equals inside a padded batch


def test_a_batch_of_mixed_lengths_reads_only_the_windows_its_documents_reach(monkeypatch) -> None:
    model = document_model(window=7).eval()
    torch.manual_seed(3)
    lengths = [9, 40, 1, 22, 7, 15, 8]  # unsorted: 2, 6, 1, 4, 1, 3 and 2 windows of 7
    docs = [torch.randint(5, 50, (n,)).tolist() for n in lengths]
    read = []
    recurrent = model.body._recurrent

    def counting(tokens, state):
        read.append(tokens.size(0))
        return recurrent(tokens, state)

    monkeypatch.setattr(model.body, "_recurrent", counting)
    batch = make_batch(docs)
    with torch.no_grad():
        together = model.features(batch.src, batch.src_len)
        assert read == [7, 5, 3, 2, 1, 1]  # rows per window: each document only up to its own last window
        for doc, row in zip(docs, together):  # and each row is the document's features read alone
            alone = model.features(*(lambda x: (x.src, x.src_len))(make_batch([doc])))[0]
            torch.testing.assert_close(alone, row, atol=1e-5, rtol=1e-5)


def test_a_backward_body_reads_each_document_last_token_first() -> None:
    forward, backward = document_model(window=7), document_model(window=7, reverse=True)
    backward.load_state_dict(forward.state_dict())
    torch.manual_seed(2)
    docs = [torch.randint(5, 50, (23,)).tolist(), torch.randint(5, 50, (9,)).tolist(), [7]]

    def features(model, rows) -> torch.Tensor:
        batch = make_batch(rows)
        with torch.no_grad():
            return model.eval().features(batch.src, batch.src_len)

    back = features(backward, docs)
    torch.testing.assert_close(back, features(forward, [d[::-1] for d in docs]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(back[:2], features(forward, docs)[:2], atol=1e-3)  # and the direction matters


def test_the_head_standardises_features_across_documents_and_takes_a_batch_of_one() -> None:
    model = document_model(window=8)
    norm = model.head[0]
    assert isinstance(norm, torch.nn.BatchNorm1d)  # ULMFiT's head: across documents, not within one
    model.train()
    docs = make_batch([[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]], labels=[0, 1, 2])
    loss, count = model(docs)
    loss.backward()
    assert count == 3 and torch.isfinite(loss)
    before = norm.running_mean.clone()
    one = make_batch([[5, 6, 7]], labels=[1])
    loss, _ = model(one)  # a training batch of one document: running statistics, no error
    assert torch.isfinite(loss) and torch.equal(norm.running_mean, before)
    layer = build(replace(model.cfg, head_norm="layer"), 50, 3)
    assert isinstance(layer.head[0], torch.nn.LayerNorm)
    with pytest.raises(NlpRnnError, match="head_norm"):
        replace(model.cfg, head_norm="group")


def test_the_head_can_fix_its_statistics_after_some_batches_so_training_normalises_as_prediction() -> None:
    model = build(replace(document_model(window=8).cfg, head_norm_steps=2), 50, 3)
    norm = model.head[0]
    torch.manual_seed(2)
    batches = [
        make_batch([torch.randint(5, 50, (n,)).tolist() for n in lengths], labels=[0, 1, 2][: len(lengths)])
        for lengths in ([30, 28, 29], [3, 2, 4], [15, 16])
    ]
    model.train()
    seen = []
    for batch in batches[:2]:
        with torch.no_grad():
            seen.append(model.features(batch.src, batch.src_len))
        model(batch)
    seen = torch.cat(seen)
    # the running statistics are the plain average of the two batches' own (not a momentum blend)
    torch.testing.assert_close(norm.running_mean, (seen[:3].mean(0) + seen[3:].mean(0)) / 2)
    assert int(norm.num_batches_tracked) == 2
    fixed = (norm.running_mean.clone(), norm.running_var.clone())
    loss, _ = model(batches[2])
    loss.backward()
    assert torch.equal(norm.running_mean, fixed[0]) and torch.equal(norm.running_var, fixed[1])
    with torch.no_grad():
        features = model.features(batches[2].src, batches[2].src_len)
        trained = norm(features)  # training mode, after the two batches
        model.eval()
        torch.testing.assert_close(trained, norm(features))  # ... as in prediction
    plain = document_model(window=8).head[0]
    assert plain.momentum == 0.1  # 0 (the default): ULMFiT's batch statistics throughout
    with pytest.raises(NlpRnnError, match="head_norm_steps"):
        replace(model.cfg, head_norm_steps=-1)
    with pytest.raises(NlpRnnError, match="head_norm_steps goes with model.head_norm batch"):
        replace(model.cfg, head_norm="layer")


def saved_for_backward(model: torch.nn.Module, length: int) -> tuple[int, int]:
    """The tensors autograd keeps for one training step on two documents of `length` tokens: how many, and
    their elements in all."""
    count = elements = 0

    def pack(t):
        nonlocal count, elements
        count += 1
        elements += t.numel()
        return t

    batch = make_batch([torch.randint(5, 50, (length,)).tolist()] * 2, labels=[0, 1])
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = model(batch)
    loss.backward()
    return count, elements


@pytest.mark.parametrize("per_layer", [False, True], ids=["fused stack", "a layer at a time"])
def test_memory_for_a_long_document_is_bounded_by_the_windows_with_gradients(per_layer: bool) -> None:
    model = document_model(window=8, grad_windows=2, locked_dropout=per_layer)
    five, fifty = saved_for_backward(model, 5 * 8), saved_for_backward(model, 50 * 8)
    assert five == fifty and five[0] > 0  # as many tensors, as many elements: none grows with the document
    assert saved_for_backward(model, 8)[1] < five[1]  # one window with gradients keeps less than two


def test_normalisation_is_idempotent_and_the_raw_and_normalised_text_classify_alike(tmp_path: Path) -> None:
    raw = "A gripping, beautifully acted film!<br /><br />Go see it &amp; ﬁnd out."
    steps = ("html", "nfkc", "lower")
    assert normalise(raw, steps) == "a gripping, beautifully acted film!  go see it & find out."
    assert normalise(normalise(raw, steps), steps) == normalise(raw, steps)
    tok = Tokenizer.train(TokenizerConfig(model_type="unigram", vocab_size=300, normalise=steps), [raw] * 20)
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path).normalise == steps
    assert tok.encode_src([raw]) == tok.encode_src([normalise(raw, steps)])


# ----------------------------------------------------------------------------- transfer, real tiny runs

REVIEWS = [
    ("A gripping, beautifully acted film!<br /><br />Go see it.", 1),
    ("Dull and far too long. I walked out.", 0),
    ("Wonderful story, great cast and a moving ending.", 1),
    ("The worst film of the year: boring, badly acted.", 0),
] * 6


@pytest.fixture(scope="module")
def language_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm")
    text = "\n".join(t for t, _ in REVIEWS) + "\n"
    (folder / "train.txt").write_text(text * 3)
    (folder / "cfg.yaml").write_text(
        "tokenizer: {model_type: unigram, vocab_size: 300, byte_exact: true, normalise: [html, lower]}\n"
        "data: {streams: 4, bptt: 16}\n"
        "model: {embedding_dim: 12, hidden_size: 16, num_layers: 2, dropout: 0.0}\n"
        "train: {max_steps: 6, validate_every: 3}\n"
    )
    args = ["--config", str(folder / "cfg.yaml"), "--train", str(folder / "train.txt"), "--quiet"]
    assert main(["train", "lm", "--output", str(folder / "run"), "--valid-fraction", "0.2", *args]) == 0
    return folder / "run"


def classifier_config(tmp_path: Path, lm: Path, **train) -> ClassifierConfig:
    table = tmp_path / "reviews.tsv"
    table.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in REVIEWS))
    return ClassifierConfig(
        data=DataConfig(train=str(table), valid=str(table), text_column="text"),
        model=ClassifierModelConfig(init_from=str(lm), window=8, head_size=8, dropout=0.0),
        train=TrainConfig(**{"batch_tokens": 400, "validate_every": 100, **train}),
    )


def test_init_from_copies_the_language_model_exactly_and_takes_its_tokenizer(
    tmp_path: Path, language_model
) -> None:
    cfg = classifier_config(tmp_path, language_model, max_steps=2)
    setup = tasks.get("classification").prepare(
        cfg, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run")
    )
    lm = tasks.load(language_model)
    body = setup.bundle.model.body.state_dict()
    for name, tensor in lm.model.state_dict().items():
        if not name.startswith("output."):
            assert torch.equal(body[name], tensor), name
    assert setup.bundle.tokenizer.src_blob == lm.tokenizer.src_blob
    assert setup.bundle.tokenizer.normalise == ("html", "lower")
    assert (
        setup.bundle.config.model.encoder == "language_model"
        and setup.bundle.config.model.body.hidden_size == 16
    )


def test_init_from_a_document_classifier_takes_its_body_exactly_and_a_fresh_head(
    tmp_path: Path, language_model
) -> None:
    """Intermediate-task transfer: a three-class classifier started from a trained two-class one."""
    first = tmp_path / "first"
    tasks.train(
        "classification", classifier_config(tmp_path, language_model, max_steps=3), first, progress_bar=False
    )
    three = tmp_path / "three.tsv"
    three.write_text("text\tlabel\n" + "".join(f"{t}\t{i % 3}\n" for i, (t, _) in enumerate(REVIEWS)))
    cfg = classifier_config(tmp_path, first)
    cfg = replace(cfg, data=replace(cfg.data, train=str(three), valid=str(three)))
    setup = tasks.get("classification").prepare(
        cfg, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run")
    )
    source, model = tasks.load(first), setup.bundle.model
    trained = source.model.body.state_dict()
    assert trained and all(torch.equal(model.body.state_dict()[k], v) for k, v in trained.items())
    lm = tasks.load(language_model).model.state_dict()
    assert not torch.equal(trained["embed.weight"], lm["embed.weight"])  # the classifier's, not the LM's
    assert model.head[-1].out_features == 3 and source.model.head[-1].out_features == 2
    assert setup.bundle.tokenizer.src_blob == source.tokenizer.src_blob
    assert setup.bundle.meta["init_from"]["kind"] == "document classifier"


def test_init_head_continues_a_document_classifier_head_included(
    tmp_path: Path, language_model, capsys
) -> None:
    """`--init-head`: the whole classifier, its head's batch-norm statistics too, continues on other data of
    the same labels; other labels, a language model or another head size are refused with one line."""
    first = tmp_path / "first"
    cfg = classifier_config(tmp_path, language_model, max_steps=3)
    cfg = replace(cfg, model=replace(cfg.model, head_norm_steps=2))
    tasks.train("classification", cfg, first, progress_bar=False)
    prepare = tasks.get("classification").prepare
    again = replace(cfg, model=replace(cfg.model, init_from=str(first), init_head=True))
    setup = prepare(again, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run"))
    source, model = tasks.load(first).model.state_dict(), setup.bundle.model.state_dict()
    assert source.keys() == model.keys() and all(torch.equal(model[k], v) for k, v in source.items())
    assert int(model["head.0.num_batches_tracked"]) == 2  # the statistics stay fixed, as they were
    assert setup.bundle.meta["init_from"]["head"] is True
    fresh = prepare(
        replace(again, model=replace(again.model, init_head=False)),
        tmp_path / "run",
        tasks.TokenizerChoice(tmp_path / "run"),
    ).bundle.model.state_dict()
    assert not torch.equal(fresh["head.2.weight"], source["head.2.weight"])
    three = tmp_path / "three.tsv"
    three.write_text("text\tlabel\n" + "".join(f"{t}\t{i % 3}\n" for i, (t, _) in enumerate(REVIEWS)))
    for bad, message in (
        (
            replace(again, data=replace(cfg.data, train=str(three), valid=str(three))),
            r"has the labels \['0', '1', '2'\]",
        ),
        (
            replace(again, model=replace(again.model, head_size=4)),
            r"head_size 8, head_norm batch\) does not fit",
        ),
        (
            replace(again, model=replace(again.model, init_from=str(language_model))),
            "is a language model, which has no",
        ),
    ):
        with pytest.raises(NlpRnnError, match=message):
            prepare(bad, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run"))
    with pytest.raises(NlpRnnError, match="model.init_head goes with model.init_from"):
        prepare(
            replace(cfg, model=replace(cfg.model, init_from=None, init_head=True)),
            tmp_path / "run",
            tasks.TokenizerChoice(tmp_path / "run"),
        )
    # through the command: the flag reaches the config; a language model under it is one line, exit status 2
    config = tmp_path / "continue.yaml"
    config.write_text(
        f"data: {{train: {cfg.data.train}, valid: {cfg.data.valid}, text_column: text}}\n"
        "model: {window: 8, head_size: 8, dropout: 0.0, head_norm_steps: 2, init_head: true}\n"
    )  # init_head in the file, --init-from on the command line
    args = ["train", "classifier", "--config", str(config), "--max-steps", "1", "--quiet"]
    assert main([*args, "--init-from", str(first), "--output", str(tmp_path / "more")]) == 0
    assert tasks.load(tmp_path / "more").meta["init_from"]["head"] is True
    capsys.readouterr()
    assert main([*args, "--init-from", str(language_model), "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no classifier head" in err, err
    args[3] = str(tmp_path / "fresh.yaml")  # the flag alone, the file without init_head
    (tmp_path / "fresh.yaml").write_text(config.read_text().replace(", init_head: true", ""))
    assert main([*args, "--init-head", "--init-from", str(first), "--output", str(tmp_path / "flag")]) == 0
    assert tasks.load(tmp_path / "flag").meta["init_from"]["head"] is True


def test_discriminative_rates_and_gradual_unfreezing_are_applied(tmp_path: Path, language_model) -> None:
    cfg = classifier_config(
        tmp_path, language_model, max_steps=3, lr=0.01, layer_lr_decay=2.6, unfreeze_every=2
    )
    setup = tasks.get("classification").prepare(
        cfg, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run")
    )
    model = setup.bundle.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(cfg.train, setup, tmp_path / "run", progress_bar=False)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx(
        [0.01 / 2.6**k for k in range(4)]
    )
    trainer.run()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("head.") for k in changed)
    assert any(k.startswith("body.rnn.weight_hh_l1") for k in changed)  # unfrozen at step 2
    assert not any(
        k.startswith(("body.embed", "body.rnn.weight_hh_l0", "body.rnn.bias_ih_l0")) for k in changed
    )


def test_the_slanted_triangle_warms_up_then_decays(tmp_path: Path, language_model) -> None:
    cfg = classifier_config(tmp_path, language_model, max_steps=10, lr=0.01, schedule="slanted", log_every=1)
    result = tasks.train("classification", cfg, tmp_path / "run", progress_bar=False)
    lrs = [
        json.loads(line)["lr"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "lr" in json.loads(line)
    ]
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) == pytest.approx(0.01, rel=0.2)
    assert lrs[-1] < lrs[peak] / 4 and result


def test_bad_starts_are_one_line_each(tmp_path: Path, language_model, capsys) -> None:
    forecaster = tmp_path / "forecaster"
    assert main(["train", "forecaster", "--config", str(ROOT / "configs" / "nyse.yaml"), "--data", str(NYSE),
                 "--output", str(forecaster), "--max-steps", "1", "--quiet"]) == 0  # fmt: skip
    cfg = classifier_config(tmp_path, language_model)
    prepare = tasks.get("classification").prepare
    for where, message in (
        (tmp_path / "missing", "no such folder"),
        (CHECKPOINTS / "multi30k-de-en", "a translation model; a classifier starts from a language model"),
        (CHECKPOINTS / "sst2", "a classification model that reads no language model's body"),
        (forecaster, "a forecasting model; a classifier starts from a language model"),
    ):
        bad = replace(cfg, model=replace(cfg.model, init_from=str(where)))
        with pytest.raises(NlpRnnError, match=message):
            prepare(bad, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run"))
    wrong = replace(cfg, model=replace(cfg.model, body=replace(BODY, hidden_size=32)))
    with pytest.raises(
        NlpRnnError,
        match=r"its body \(hidden_size 16\) does not fit the config's model.body \(hidden_size 32\)",
    ):
        prepare(wrong, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run"))
    other = replace(cfg, tokenizer=TokenizerConfig(model_type="bpe", vocab_size=300))
    with pytest.raises(NlpRnnError, match=r"its tokenizer \(model_type unigram, byte_exact True, normalise "):
        prepare(other, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run"))
    with pytest.raises(NlpRnnError, match="--tokenizer .* and --init-from .*: .* give one of them"):
        prepare(
            cfg, tmp_path / "run", tasks.TokenizerChoice(tmp_path / "run", folder=language_model / "best")
        )
    # and through the command: exit status 2, one line, nothing written
    config = tmp_path / "classifier.yaml"
    config.write_text(f"data: {{train: {cfg.data.train}, valid: {cfg.data.valid}, text_column: text}}\n")
    for start in (tmp_path / "missing", forecaster, CHECKPOINTS / "multi30k-de-en"):
        capsys.readouterr()
        args = ["train", "classifier", "--config", str(config), "--init-from", str(start)]
        args += ["--output", str(tmp_path / "c")]
        assert main([*args, "--max-steps", "1", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(start) in err, err
        assert not (tmp_path / "c").exists()  # not even the run's lock
    # a body of other sizes than the config states, through the command: one line naming both
    wider = tmp_path / "wider.yaml"
    wider.write_text(
        config.read_text() + "model: {encoder: language_model, body: {embedding_dim: 12, hidden_size: 32, "
        "num_layers: 2}}\n"
    )
    args = ["train", "classifier", "--config", str(wider), "--init-from", str(language_model)]
    assert main([*args, "--output", str(tmp_path / "c"), "--max-steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "(hidden_size 16) does not fit the config's model.body (hidden_size 32)" in err
    )
    assert not (tmp_path / "c" / "last").exists()


def test_a_trained_document_classifier_reads_raw_empty_html_only_and_huge_texts(
    tmp_path: Path, language_model, capsys, caplog
) -> None:
    cfg = classifier_config(tmp_path, language_model, max_steps=4, validate_every=4)
    tasks.train("classification", cfg, tmp_path / "run", progress_bar=False)
    predictor = Predictor(tasks.load(tmp_path / "run"))
    raw = "A gripping, beautifully acted film!<br /><br />Go see it."
    ends = "<br />It was okay, I guess.<br /><br />"  # breaks at both ends become spaces there
    texts = [
        raw,
        normalise(raw, ("html", "lower")),
        "",
        "<br /><br />",
        "great film " * 100_000,
        ends,
        normalise(ends, ("html", "lower")),
    ]  # 1.1 MB, 1 line
    predictor.model.cfg = replace(
        predictor.model.cfg, window=4096
    )  # the same result in fewer windows, faster
    out = predictor.classify(texts)
    assert out[0].probabilities == out[1].probabilities
    assert out[5].probabilities == out[6].probabilities
    assert out[2].probabilities == out[3].probabilities  # only HTML: as empty as the empty text
    assert "classifying 2 empty texts" in caplog.text
    assert all(math.isclose(sum(p.probabilities.values()), 1, rel_tol=1e-5) for p in out)
    assert predictor.reads_documents  # the server takes long texts for it (--max-document-chars)
    for precision in ("int8", "bf16"):  # bf16: the whole copy in bf16, the pooled features cast for the head
        other = Predictor(tasks.load(tmp_path / "run"), precision).classify(texts[:2])
        for a, b in zip(other, out):
            assert abs(a.probabilities["1"] - b.probabilities["1"]) < 0.05, precision
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err.strip()  # ONNX refuses a document classifier in one line
    assert len(err.splitlines()) == 1 and "export: a document classifier" in err, err
    assert not (tmp_path / "onnx").exists()
    assert main(["classify", "--engine", "onnxruntime", "--model", str(tmp_path / "run"), "fine"]) == 2
    err = capsys.readouterr().err.strip()  # not "export it first": it cannot be
    assert (
        len(err.splitlines()) == 1
        and "a PyTorch bundle that ONNX does not take: a document classifier" in err
    )
    # evaluate reports the share of pieces spelt as bytes: none for text like the training text, some for
    # characters the tokenizer never saw
    for name, text, unknown in (("seen", REVIEWS[0][0], False), ("unseen", "映画は素晴らしい", True)):
        (tmp_path / f"{name}.tsv").write_text(f"text\tlabel\n{text}\t1\n{text}\t0\n")
        report = tmp_path / f"{name}.json"
        args = ["--data", str(tmp_path / f"{name}.tsv"), "--text-column", "text", "--report", str(report)]
        assert main(["evaluate", "--model", str(tmp_path / "run"), *args]) == 0
        assert (json.loads(report.read_text())["sets"][0]["unknown_share"] > 0) == unknown, name


def test_a_language_model_is_fine_tuned_on_new_text_from_its_own_weights(
    tmp_path: Path, language_model
) -> None:
    (tmp_path / "target.txt").write_text("A moving ending and a great cast.<br />Wonderful.\n" * 30)
    run = tmp_path / "tuned"
    args = ["--train", str(tmp_path / "target.txt"), "--valid-fraction", "0.2", "--max-steps", "2", "--quiet"]
    assert main(["train", "lm", "--output", str(run), "--init-from", str(language_model), *args]) == 0
    source, tuned = tasks.load(language_model), tasks.load(run)
    assert tuned.tokenizer.src_blob == source.tokenizer.src_blob and tuned.meta["init_from"]
    assert tuned.config.model.hidden_size == 16  # the shape comes from the language model, not the defaults
    changed = [
        k for k, v in source.model.state_dict().items() if not torch.equal(v, tuned.model.state_dict()[k])
    ]
    assert changed  # trained on from there
    with pytest.raises(NlpRnnError, match="a classification model; fine-tuning needs a language model"):
        tasks.get("language_model")._source(str(CHECKPOINTS / "sst2"))


def test_a_backward_language_model_scores_the_reversed_text_and_hands_its_direction_on(
    tmp_path: Path, capsys
) -> None:
    text = "\n".join(t for t, _ in REVIEWS) + "\n"
    (tmp_path / "train.txt").write_text(text * 3)
    (tmp_path / "test.txt").write_text("A gripping film, a great cast.<br />Go see it.\n")
    (tmp_path / "cfg.yaml").write_text(
        "tokenizer: {model_type: unigram, vocab_size: 300, byte_exact: true, normalise: [html, lower]}\n"
        "data: {streams: 4, bptt: 16}\n"
        "model: {embedding_dim: 12, hidden_size: 16, num_layers: 2, dropout: 0.0, reverse: true}\n"
        "train: {max_steps: 4, validate_every: 2}\n"
    )
    run = tmp_path / "backward"
    args = ["--config", str(tmp_path / "cfg.yaml"), "--train", str(tmp_path / "train.txt"), "--quiet"]
    assert main(["train", "lm", "--output", str(run), "--valid-fraction", "0.2", *args]) == 0
    bundle = tasks.load(run)
    assert bundle.config.model.reverse
    # evaluate scores the text read from its end: the same model reading it forwards scores it otherwise
    report = tmp_path / "report.json"
    scoring = ["evaluate", "--model", str(run), "--data", str(tmp_path / "test.txt"), "--report", str(report)]
    assert main([*scoring, "--precision", "fp32"]) == 0
    scored = json.loads(report.read_text())["sets"][0]["loss"]  # rounded to 4 places
    from nlp_rnn.tasks.language_model import read_corpus, stream_ids, stream_nll

    corpus = read_corpus([str(tmp_path / "test.txt")], bundle.config.data, "test", False)
    ids = stream_ids(bundle.tokenizer, corpus)
    assert torch.equal(stream_ids(bundle.tokenizer, corpus, reverse=True), ids.flip(0))
    backwards, n = stream_nll(bundle.model, ids.flip(0))
    forwards, _ = stream_nll(bundle.model, ids)
    # the report rounds to 4 places: equal within that, and the forward reading further off than it
    assert abs(scored - backwards / n) <= 5e-5 < 1e-3 < abs(scored - forwards / n), (
        scored,
        backwards / n,
        forwards / n,
    )
    # fine-tuning keeps the direction; a classifier started from it reads documents reversed; it does not generate
    tuned = tmp_path / "tuned"
    more = ["--train", str(tmp_path / "train.txt"), "--valid-fraction", "0.2", "--max-steps", "1", "--quiet"]
    assert main(["train", "lm", "--output", str(tuned), "--init-from", str(run), *more]) == 0
    assert tasks.load(tuned).config.model.reverse
    setup = tasks.get("classification").prepare(
        classifier_config(tmp_path, tuned, max_steps=1),
        tmp_path / "clf",
        tasks.TokenizerChoice(tmp_path / "clf"),
    )
    assert setup.bundle.config.model.body.reverse
    capsys.readouterr()
    assert main(["info", str(run)]) == 0 and "backward" in capsys.readouterr().out
    assert main(["generate", "--model", str(run), "a"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "backward language model" in err and str(run) in err, err


def test_a_resumed_fine_tuning_continues_at_its_unfreezing_stage_exactly(
    tmp_path: Path, language_model
) -> None:
    cfg = classifier_config(
        tmp_path, language_model, max_steps=6, unfreeze_every=2, layer_lr_decay=2.6, log_every=1
    )
    cfg = replace(cfg, model=replace(cfg.model, dropout=0.2))
    tasks.train("classification", cfg, tmp_path / "whole", progress_bar=False)
    first = replace(cfg, train=replace(cfg.train, max_steps=3))  # stops inside stage 2 (steps 2-3)
    tasks.train("classification", first, tmp_path / "split", progress_bar=False)
    tasks.train("classification", cfg, tmp_path / "split", resume=True, progress_bar=False)

    def losses(run: Path) -> dict:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["train_loss"] for r in lines if "train_loss" in r}

    whole, split = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert sorted(split) == sorted(whole) == list(range(1, 7))
    assert [split[s] for s in range(4, 7)] == pytest.approx([whole[s] for s in range(4, 7)], rel=1e-5)
    a, b = (tasks.load(tmp_path / run / "last").model.state_dict() for run in ("whole", "split"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
