"""Where a translation model's training data is, and the vocabulary shortlist built from it."""

import logging
from pathlib import Path
from typing import Optional

from nlp_rnn.bundle import Bundle
from nlp_rnn.config import DataConfig
from nlp_rnn.data import ParallelSource, read_parallel, tokenize_parallel
from nlp_rnn.errors import NlpRnnError
from nlp_rnn.nn.shortlist import FILE as SHORTLIST_FILE
from nlp_rnn.nn.shortlist import Shortlist
from nlp_rnn.tasks import base as tasks
from nlp_rnn.tasks.translation.config import TranslationConfig
from nlp_rnn.tokenizer import EOS

log = logging.getLogger(__name__)


def parallel_source(data: DataConfig, split: str) -> ParallelSource:
    """The train or valid split as configured: files, a table, or a Hub dataset."""
    files = (data.train_src, data.train_tgt) if split == "train" else (data.valid_src, data.valid_tgt)
    common = dict(src_lang=data.src_lang, tgt_lang=data.tgt_lang)
    if any(files):
        return ParallelSource(src_file=files[0], tgt_file=files[1], **common)
    where = tasks.hub_or_table(data, split)
    if not where:
        raise NlpRnnError(
            f"no {split} data: give --{split}-src/--{split}-tgt, --{split} TABLE, or --dataset NAME"
        )
    return ParallelSource(**where, **common)


def write_shortlist(
    bundle: Bundle,
    cfg: Optional[TranslationConfig] = None,
    cache: Optional[Path] = None,
    per_source: Optional[int] = None,
    frequent: Optional[int] = None,
) -> dict:
    """Builds the bundle's vocabulary shortlist from the training data of `cfg` (default: the bundle's own
    config) and writes it into the bundle folder; returns its sizes and training-data coverage."""
    cfg = cfg or bundle.config
    per_source = cfg.decode.shortlist_per_source if per_source is None else per_source
    frequent = cfg.decode.shortlist_frequent if frequent is None else frequent
    source = parallel_source(cfg.data, "train")
    src, tgt = read_parallel(source)
    limits = (cfg.data.max_src_len, cfg.data.max_tgt_len)
    src_ids, tgt_ids = tokenize_parallel(src, tgt, bundle.tokenizer, *limits, cache, "training data")
    model = bundle.model
    shortlist = Shortlist.build(
        src_ids,
        [[*t, EOS] for t in tgt_ids],
        model.src_embed.num_embeddings,
        model.decoder.vocab_size,
        max(per_source, 1),
        frequent,
    )
    shortlist.save(bundle.path)
    sample = range(0, len(src_ids), max(1, len(src_ids) // 2000))  # coverage on up to ~2,000 pairs
    info = {
        "per_source": per_source,
        "frequent": frequent,
        "coverage": round(shortlist.coverage([src_ids[i] for i in sample], [tgt_ids[i] for i in sample]), 5),
    }
    log.info(
        "vocabulary shortlist: %d per source piece + %d frequent; covers %.2f%% of training target tokens "
        "(%s)",
        per_source,
        frequent,
        100 * info["coverage"],
        bundle.path / SHORTLIST_FILE,
    )
    return info
