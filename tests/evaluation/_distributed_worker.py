"""Run by test_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU). Writes what each rank got."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from _evaluation_fakes import HashingEncoder  # noqa: E402

from inf_embed.evaluation import BEIREvaluator  # noqa: E402
from inf_embed.evaluation.distributed import encode_sharded, get_rank  # noqa: E402
from inf_embed.evaluation.search import CachedEmbeddings, encode_corpus  # noqa: E402


def corpus_texts() -> list[str]:
    return [f"document {i} about topic{i % 7} and word{(i * 3) % 11}" for i in range(103)]


def beir_data():
    texts = corpus_texts()
    corpus = {f"d{i}": t for i, t in enumerate(texts)}
    queries = {f"q{t}": f"topic{t} word{t}" for t in range(7)}
    qrels = {f"q{t}": {f"d{i}": 1 for i in range(len(texts)) if i % 7 == t} for t in range(7)}
    return corpus, queries, qrels


def main(out: Path, cache_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank = get_rank()
    model = HashingEncoder()
    texts = corpus_texts()
    sharded = encode_sharded(lambda batch: model.encode_document(batch), texts, gather_chunk_rows=16)
    calls_after_shard = model.document_calls
    cached_first = encode_corpus(lambda b: model.encode_document(b), texts, model=model, cache_dir=cache_dir)
    cached_second = encode_corpus(lambda b: model.encode_document(b), texts, model=model, cache_dir=cache_dir)
    results = BEIREvaluator(*beir_data(), k_values=(1, 10))(model)
    report = {
        "rank": rank,
        "shard_calls": calls_after_shard,
        "sharded_is_none": sharded is None,
        "first_is_none": cached_first is None,
        "second_type": type(cached_second).__name__,
        "results": results,
    }
    if rank == 0:
        np.save(out / "sharded.npy", sharded)
        np.save(out / "cached_first.npy", cached_first)
        assert isinstance(cached_second, CachedEmbeddings)
        np.save(out / "cached_second.npy", cached_second.to_numpy())
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
