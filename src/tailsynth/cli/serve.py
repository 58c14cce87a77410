"""`tailsynth export`, `tailsynth serve`, `tailsynth predict`: thin wrappers over tailsynth.export / tailsynth.serve."""

from __future__ import annotations

from pathlib import Path

import typer

from ..hashing import MODEL_FILE
from ..outdir import claim
from .common import err, fail_cleanly, overwrite_option, print_json, record_run


def _tuning_help(name: str) -> str:
    import dataclasses

    from ..serve.tuning import Tuning

    return next(f.metadata["help"] for f in dataclasses.fields(Tuning) if f.name == name)


def export(ctx: typer.Context,
           model: Path = typer.Option(..., "--model", help=f"classifier folder (MODEL_DIR/{MODEL_FILE})"),
           out: Path = typer.Option(..., "--out", help="Triton model repository root to write"),
           target: str = typer.Option("local", "--target", help="local (python backend for the bundled Triton) "
                                      "or cluster (onnxruntime_onnx platform, GPU instances)"),
           max_batch_size: int = typer.Option(32, min=1, help="largest batch Triton's dynamic batcher may form"),
           max_queue_delay_us: int | None = typer.Option(None, min=0, help="dynamic batching queue delay in microseconds "
                                                          "(default: 0 local, 2000 cluster)"),
           preferred_batch_sizes: str | None = typer.Option(None, help="comma-separated preferred batch sizes, "
                                                             "'none' for none (default: none local, 8,16,32 cluster)"),
           instances: int = typer.Option(1, min=1, help="model instances per Triton server"),
           ort_threads: int = typer.Option(0, min=0, help="local: onnxruntime intra-op threads per instance (0: one per core)"),
           ort_spinning: bool = typer.Option(False, "--ort-spinning", help="local: let onnxruntime threads busy-wait"),
           tensorrt: bool = typer.Option(False, "--tensorrt", help="add the TensorRT accelerator (cluster, GPU)"),
           overwrite: bool = overwrite_option()) -> None:
    """Export a classifier to ONNX + a Triton model repository, check parity with torch, write a model card."""
    from ..export import export_model, parse_batch_sizes

    with fail_cleanly():
        batch_sizes = parse_batch_sizes(preferred_batch_sizes)
    with fail_cleanly(), claim(out, "export", overwrite=overwrite):
        summary = export_model(model, out, target, max_batch_size=max_batch_size,
                               preferred_batch_sizes=batch_sizes,
                               max_queue_delay_us=max_queue_delay_us, instances=instances, tensorrt=tensorrt,
                               ort_threads=ort_threads, ort_spinning=ort_spinning)
        record_run(out, "export", {k: v for k, v in ctx.params.items() if k != "overwrite"},
                   model_version=summary.get("model_version"))
    err.print(f"ONNX parity vs torch: max abs diff {summary['parity']['max_abs_diff_probabilities']:.2e}",
              highlight=False)
    print_json(summary)


def serve(repo: Path = typer.Option(..., "--repo", help="model repository from `tailsynth export`"),
          backend: str = typer.Option("triton", "--backend", help="triton (bundled tritonserver) or onnxruntime"),
          mode: str = typer.Option("transformer", "--mode", help="transformer (the KServe transformer in front of "
                                   "Triton; default) or ensemble (Triton alone serves lesion-classifier-e2e on "
                                   "--port: decoding, auth and records inside Triton)"),
          port: int = typer.Option(8080, "--port", min=1, max=65535, help="transformer port on 127.0.0.1"),
          token: str | None = typer.Option(None, "--token", envvar="TAILSYNTH_TOKEN",
                                              help="require 'Authorization: Bearer TOKEN' on inference calls"),
          records: Path | None = typer.Option(None, "--records", help="prediction records JSONL "
                                                 "(default REPO/predictions.jsonl)"),
          max_batch: int = typer.Option(32, min=1, help="most images per request"),
          max_body_bytes: int = typer.Option(64 * 1024 * 1024, min=1, help="largest request body"),
          admin_token: str | None = typer.Option(None, "--admin-token", envvar="TAILSYNTH_ADMIN_TOKEN",
                                                 help="token for model-repository control (load/unload)"),
          repository_control: bool = typer.Option(False, "--repository-control",
                                                  help="allow model load/unload with the admin token (off by default)"),
          max_inflight: int = typer.Option(64, min=1, help="concurrent inference requests before 503 + Retry-After "
                                           "(per worker)"),
          triton_port: int | None = typer.Option(None, "--triton-port", min=1, max=65535, help="Triton's HTTP port on 127.0.0.1 "
                                                 "(default: a free one)"),
          workers: int = typer.Option(1, min=1, help=_tuning_help("workers")),
          decode_threads: int | None = typer.Option(None, min=1, help=_tuning_help("decode_threads")),
          jpeg_draft: bool = typer.Option(False, "--jpeg-draft/--exact-decode", help=_tuning_help("jpeg_draft")),
          request_logs: bool = typer.Option(False, "--request-logs", help=_tuning_help("request_logs")),
          event_loop: str | None = typer.Option(None, help=_tuning_help("event_loop")),
          http_parser: str = typer.Option("h11", help=_tuning_help("http_parser")),
          coalesce: int = typer.Option(1, min=0, help=_tuning_help("coalesce"))) -> None:
    """Serve POST /v1/models/lesion-classifier:predict and /v2/models/lesion-classifier/infer on 127.0.0.1
    (--mode ensemble: Triton's /v2/models/lesion-classifier-e2e/infer, BYTES input `image`).

    Exits non-zero when the predictor dies and cannot be restarted. Performance settings and the reasons for their
    defaults: tailsynth/serve/tuning.py."""
    from ..serve.images import Limits
    from ..serve.local import serve as run_serve
    from ..serve.triton import TritonUnavailable
    from ..serve.tuning import Tuning

    given = {"workers": workers, "decode_threads": decode_threads, "jpeg_draft": jpeg_draft,
             "request_logs": request_logs, "event_loop": event_loop, "http_parser": http_parser,
             "coalesce": coalesce}
    try:
        with fail_cleanly():
            tuning = Tuning(**{k: v for k, v in given.items() if v is not None})
            rc = run_serve(repo, backend=backend, port=port, token=token, records=records,
                           limits=Limits(max_batch=max_batch, max_body_bytes=max_body_bytes),
                           admin_token=admin_token, repository_control=repository_control, max_inflight=max_inflight,
                           triton_port=triton_port, tuning=tuning, mode=mode)
    except TritonUnavailable as e:
        err.print(f"[red]error:[/red] {e}\n(use --backend onnxruntime where the Triton binary cannot run)",
                  markup=True, highlight=False)
        raise typer.Exit(1)
    if rc:
        err.print("[red]error:[/red] the predictor died and could not be recovered; see the log above",
                  markup=True, highlight=False)
        raise typer.Exit(rc)


def predict(images: list[Path] = typer.Argument(..., help="image files (JPEG/PNG)"),
            url: str = typer.Option(..., "--url", help="endpoint, e.g. http://127.0.0.1:8080"),
            token: str | None = typer.Option(None, "--token", envvar="TAILSYNTH_TOKEN"),
            batch_size: int = typer.Option(16, min=1, help="images per request")) -> None:
    """Classify images through a running endpoint; one JSON line per image."""
    from ..serve.client import PredictError, predict_files

    try:
        with fail_cleanly():
            for rec in predict_files(url, images, token=token, batch_size=batch_size):
                print_json(rec)
    except PredictError as e:
        err.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("serve")(serve)
    app.command("predict")(predict)
