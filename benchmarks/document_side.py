"""An asymmetric document side: what pulling only the documents' weights back towards the backbone buys.

    python benchmarks/document_side.py --model DIR [--scales 0.5,0.6,0.75,1] [--plain-query-scales 1,0.5,0]
                                       [--tasks infir,scifact,nevir] [--threads 2] [--json FILE]

For a model fine-tuned from the ``default`` extra's all-MiniLM-L6-v2 (a ``model/`` folder of ``inf-embed train``,
or a delta folder), each ``--scales`` value s sets ``InfEmbed.set_document_delta(backbone, s)``: documents are
encoded with ``backbone + s * (trained - backbone)``, queries (plain and instructed) with the trained weights;
s = 1 is the model as trained. Unlike mixing two models' embeddings (``benchmarks/embedding_ensemble.py``) this
costs no second encoder pass, and unlike pulling every weight back (WiSE-FT, ``benchmarks/fusion_sweep.py``'s
``alpha``) the instructed queries keep the whole trained change. With ``--plain-query-scales``, each document
scale is also crossed with scales for the queries that come without an instruction (SciFact's, NevIR's): those
are encoded with ``backbone + t * (trained - backbone)`` (t = 1: the trained weights, as the model does), the
instructed queries still with the trained weights, so InF-IR's rows do not depend on t. With
``--instructed-query-scales``, each value u (> 1 extrapolates) encodes the instructed queries with
``backbone + u * (trained - backbone)`` instead, the documents still at s (``set_document_delta(backbone, s / u)`` on
the u-scaled copy). Evaluators and columns are ``benchmarks/finetune_vs_st.py``'s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import finetune_vs_st  # noqa: E402
from embedding_ensemble import TRAINED, CachedEncoder, EmbeddingEnsemble  # noqa: E402
from finetune_vs_st import add_evaluation_arguments, build_evaluators, evaluate, parse_evaluation_arguments  # noqa: E402


def _scales(text: str, upper: float = 1.0) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not 0.0 <= v <= upper for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers in [0, {upper:g}], got {text!r}")
    return values


def _positive_scales(text: str) -> list[float]:
    values = _scales(text, upper=float("inf"))
    if any(v == 0.0 or not math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers > 0, got {text!r}")
    return values


def interpolated_copy(folder: str, backbone: Any, scale: float) -> Any:
    """The model of ``folder`` with every backbone weight at ``backbone + scale * (trained - backbone)``."""
    from inf_embed import InfEmbed

    model = InfEmbed(folder, document_delta_scale=1.0)
    anchors = backbone.state_dict()
    with torch.no_grad():
        for name, weight in model.backbone.named_parameters():
            weight.copy_(torch.lerp(anchors[name].to(weight.dtype), weight, scale))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the fine-tuned model's folder (model/ or delta/)")
    parser.add_argument("--scales", type=_scales, default=[0.5, 0.6, 0.75, 1.0], help="document_delta_scale values")
    parser.add_argument(
        "--plain-query-scales",
        type=_scales,
        default=None,
        help="scales of the trained change for queries without an instruction, crossed with --scales",
    )
    parser.add_argument(
        "--instructed-query-scales",
        type=_positive_scales,
        default=None,
        help="scales of the trained change for instructed queries (> 1 extrapolates), crossed with --scales",
    )
    add_evaluation_arguments(parser)
    args, tasks, columns = parse_evaluation_arguments(parser)
    if args.instructed_query_scales and args.plain_query_scales:
        parser.error("--instructed-query-scales and --plain-query-scales: pass one of them")

    from inf_embed import InfEmbed
    from inf_embed.model import default_model_path

    backbone = InfEmbed(default_model_path()).backbone
    model = InfEmbed(args.model, document_delta_scale=1.0)
    evaluators = build_evaluators(args.data_root, tasks)
    if args.instructed_query_scales:
        _instructed_query_rows(args, backbone, evaluators, columns)
        return
    plain_scales = args.plain_query_scales or [None]
    print("| document_delta_scale | plain-query scale | " + " | ".join(c[3] for c in columns) + " |")
    print("|" + "---|" * (len(columns) + 2))
    rows = []
    plain_models = {t: CachedEncoder(interpolated_copy(args.model, backbone, t)) for t in plain_scales if t is not None}
    for scale in args.scales:
        model.set_document_delta(backbone, scale)
        documents_side = CachedEncoder(model)  # one document pass per document scale, shared by the query scales
        for plain_scale in plain_scales:
            started = time.perf_counter()
            encoder = model
            if plain_scale is not None:
                encoder = EmbeddingEnsemble(documents_side, plain_models[plain_scale], TRAINED, (0.0, 1.0), TRAINED)
            results = evaluate(evaluators, encoder)
            rows.append({"document_delta_scale": scale, "plain_query_scale": plain_scale, "results": results})
            cells = [f"{results[t][k] * s:.4g}" for t, k, s, _ in columns]
            shown = "1 (trained)" if plain_scale is None else f"{plain_scale:g}"
            print(
                f"| {scale:g} | {shown} | " + " | ".join(cells) + f" |  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    finetune_vs_st.write_rows_json(args.json, rows, model=args.model)


def _instructed_query_rows(args: argparse.Namespace, backbone: Any, evaluators: dict, columns: list) -> None:
    """One row per (document scale s, instructed-query scale u): the model's u-scaled copy, documents at s."""
    print("| document_delta_scale | instructed-query scale | " + " | ".join(c[3] for c in columns) + " |")
    print("|" + "---|" * (len(columns) + 2))
    rows = []
    for query_scale in args.instructed_query_scales:
        model = interpolated_copy(args.model, backbone, query_scale)
        for scale in args.scales:
            if scale > query_scale:
                raise SystemExit(
                    f"document scale {scale:g} above instructed-query scale {query_scale:g}: not supported"
                )
            started = time.perf_counter()
            # the copy's own change is u times the trained one, so s / u of it is s of the trained change
            model.set_document_delta(backbone, scale / query_scale)
            results = evaluate(evaluators, model)
            rows.append({"document_delta_scale": scale, "instructed_query_scale": query_scale, "results": results})
            cells = [f"{results[t][k] * s:.4g}" for t, k, s, _ in columns]
            print(
                f"| {scale:g} | {query_scale:g} | "
                + " | ".join(cells)
                + f" |  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    finetune_vs_st.write_rows_json(args.json, rows, model=args.model)


if __name__ == "__main__":
    main()
