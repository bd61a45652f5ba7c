"""Sequence-level knowledge distillation (Kim & Rush 2016): a teacher translates the training sources
(beam search), and a student — usually smaller and faster — trains on those translations instead of
the references. The student's validation data stays the real references.

`nlp-rnn distill TEACHER --config STUDENT.yaml --output DIR` writes the teacher's translations to
DIR/distilled/ (kept with the teacher, beam and line count in distilled.json, so an interrupted run
does not translate again), then trains the student into DIR with the teacher's tokenizer.
"""

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional

from nlp_rnn import textio
from nlp_rnn.data import read_parallel
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.translation.config import NAME, TranslationConfig
from nlp_rnn.tasks.translation.interface import Translator
from nlp_rnn.tasks.translation.shortlists import parallel_source
from nlp_rnn.train import check_resume, run_folder

log = logging.getLogger(__name__)


def distilled_corpus(
    teacher: Translator,
    cfg: TranslationConfig,
    folder: Path,
    beam_size: int = 5,
    batch_size: int = 64,
    progress: bool = True,
    keep: bool = False,
) -> tuple[Path, Path, dict]:
    """The student's training pairs: the training sources of `cfg` and the teacher's translations of them.
    Pairs whose translation is empty are left out (counted in the returned info). `keep`: a student was trained
    on the corpus already in `folder` (a resumed run), which is then reused only if it was made the same way, and
    never replaced."""
    src, _ = read_parallel(parallel_source(cfg.data, "train"))
    src_file, tgt_file, info_file = folder / "train.src", folder / "train.tgt", folder / "distilled.json"
    wanted = {"teacher": str(teacher.bundle.path), "beam_size": beam_size, "sources": len(src)}
    missing = [f.name for f in (src_file, tgt_file, info_file) if not f.is_file()]
    if keep and missing:
        raise NlpRnnError(
            f"{folder}: the corpus the student to resume trained on lacks {', '.join(missing)}; "
            "resume needs it whole (or train a new student with another --output)"
        )
    if not missing:
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if {k: info.get(k) for k in wanted} == wanted:
            log.info("distillation: reusing the teacher's translations in %s", folder)
            return src_file, tgt_file, info
        if keep:
            made = ", ".join(f"{k} {info.get(k)}" for k in wanted)
            raise NlpRnnError(
                f"{info_file}: the student to resume trained on translations made with {made}; "
                "give the same teacher, --beam-size and training data, or another --output"
            )
    folder.mkdir(parents=True, exist_ok=True)
    opts = teacher.options(beam_size=beam_size)
    kept = empty = 0
    partial_src, partial_tgt = folder / "train.src.partial", folder / "train.tgt.partial"
    with (
        open(partial_src, "w", encoding="utf-8") as out_src,
        open(partial_tgt, "w", encoding="utf-8") as out_tgt,
        textio.progress(len(src), shown=progress) as bar,
    ):
        for line, hyps in teacher.stream(src, opts, batch_size):
            text = hyps[0].text.strip() if hyps else ""
            bar.update(1)
            if not text:
                empty += 1
                continue
            out_src.write(" ".join(line.split()) + "\n")
            out_tgt.write(" ".join(text.split()) + "\n")
            kept += 1
    partial_src.replace(src_file)
    partial_tgt.replace(tgt_file)
    info = dict(wanted, pairs=kept, empty_left_out=empty)
    info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info("distillation: %d pairs translated by the teacher (%d empty translations left out)", kept, empty)
    return src_file, tgt_file, info


def distill(
    teacher_path: Path,
    cfg: TranslationConfig,
    output: Path,
    beam_size: int = 5,
    precision: str = "auto",
    batch_size: int = 64,
    resume: bool = False,
    progress: bool = True,
    device: str = "auto",
    max_minutes: Optional[float] = None,
) -> dict:
    """Translates the training sources with the teacher, then trains the student on them (see module)."""
    if beam_size < 1:
        raise NlpRnnError(f"--beam-size must be at least 1, got {beam_size}")
    if cfg.data.dataset and not (cfg.data.valid or cfg.data.valid_src):
        raise NlpRnnError(
            "distill: the student config reads a Hub dataset; give its validation data as files or a table "
            "(data.valid_src/valid_tgt or data.valid): the training side is replaced by the teacher's translations"
        )
    output = Path(output)
    # before the teacher translates: a new run would replace the corpus its student trained on, and a missing
    # validation file fails now, not after the translating
    check_resume(output, resume)
    read_parallel(parallel_source(cfg.data, "valid"))
    bundle = tasks.load(teacher_path, NAME)  # the student takes the teacher's tokenizer
    teacher = Translator(bundle, precision)
    with run_folder(output):  # no other training or distillation writes the corpus or the student meanwhile
        src_file, tgt_file, info = distilled_corpus(
            teacher, cfg, output / "distilled", beam_size, batch_size, progress, keep=resume
        )
        data = replace(cfg.data, train_src=str(src_file), train_tgt=str(tgt_file), train=None, dataset=None)
        cfg = replace(cfg, data=data)
        if max_minutes is not None:
            cfg = tasks.with_overrides(cfg, "train", max_minutes=max_minutes)
        summary = tasks.train(
            NAME,
            cfg,
            output,
            resume=resume,
            tokenizer_dir=bundle.path,
            progress_bar=progress,
            device=device,
            lock=False,
        )
    return dict(summary, distilled=info)
