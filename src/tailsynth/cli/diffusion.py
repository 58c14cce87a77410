"""`tailsynth masks`, `tailsynth train diffusion`, `tailsynth generate`, `tailsynth merge-shards`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..data.classes import TAIL_CLASSES
from ..ood.gates import GATES_FILE
from ..ood.selection import RECORD_FILE as OLD_GATES_FILE  # the gate record's name before the rename
from ..outdir import claim
from .common import (
    CONFIG_HELP,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    between,
    fail_cleanly,
    overwrite_option,
    print_json,
    record_run,
    resolve_options,
    seed_list,
)
from .train_app import attach, train_app

SOURCE_HELP = "ISIC 2019 folder, HAM10000 folder or MedMNIST .npz"


@train_app.command("diffusion")
def train_diffusion_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help=SOURCE_HELP),
    size: str = typer.Option(..., "--size", help="tiny | lean | lean64 | mid64 | small | base (lean: the 2-core CPU "
                                                 "recipe, 28 px; lean64: the HAM10000 64 px recipe)"),
    out: Path = typer.Option(..., "--out", help="model folder (resumed when it holds a checkpoint)"),
    resolution: int | None = typer.Option(None, min=8,
                                          help="image size in px (default: tiny 16, lean 28, small 32, base 64)"),
    steps: int | None = typer.Option(None, min=1, help="total optimizer steps (default by size)"),
    seed: int = typer.Option(0, min=0),
    init_from: Path | None = typer.Option(None, "--init-from", help="local diffusers UNet folder to start from"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    lr: float | None = typer.Option(None, callback=POSITIVE),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1),
    masks: Path | None = typer.Option(None, "--masks", help="folder of lesion masks (<image>.png, 255 = lesion)"),
    max_minutes: float | None = typer.Option(None, "--max-minutes", callback=NON_NEGATIVE,
                                             help="stop (with a checkpoint) after this long"),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", min=1),
    class_sampling: str | None = typer.Option(None, "--class-sampling",
                                              help="balanced | sqrt | natural (default by size: lean sqrt, else balanced)"),
    snr_gamma: float | None = typer.Option(None, "--snr-gamma", callback=POSITIVE, help="min-SNR-gamma loss weight (default: lean 5)"),
    timestep_sampling: str | None = typer.Option(None, "--timestep-sampling", help="uniform | logit-normal"),
    ema_decay: float | None = typer.Option(None, "--ema-decay", callback=between(0, 1, hi_open=True),
                                           help="EMA decay cap (warm-up (1+s)/(10+s) below it)"),
    warmup: int | None = typer.Option(None, "--warmup", min=0, help="LR warm-up steps"),
    precision: str | None = typer.Option(None, "--precision",
                                         help="fp32 | bf16 | auto: CPU bf16 autocast (auto = where the CPU has "
                                              "native bf16); default fp32"),
    no_resume: bool = typer.Option(False, "--no-resume", help="ignore a checkpoint in OUT"),
    overwrite: bool = overwrite_option(),
    distributed: bool = typer.Option(False, "--distributed",
                                     help="data-parallel over GPUs through accelerate; start with `accelerate launch "
                                          "--num_processes N -m tailsynth.cli train diffusion ... --distributed`"),
    config: Path | None = typer.Option(None, "--config",
                                       help=CONFIG_HELP + "; any DiffusionTrainConfig field may be set"),
) -> None:
    """Train the class-conditional inpainting diffusion model."""
    from ..diffusion.train import DiffusionTrainConfig, train_diffusion

    with fail_cleanly():
        o = resolve_options(ctx, config, extra=set(DiffusionTrainConfig.__dataclass_fields__) - {"data", "size", "out"})
        overwrite = o.pop("overwrite")
        kw = {k: v for k, v in o.items() if v is not None and k not in (
            "data", "size", "out", "resolution", "steps", "seed", "init_from", "no_resume", "masks")}
        # Training resumes from OUT's checkpoint by design (more --steps continue it); --no-resume starts afresh,
        # which over a finished model needs --overwrite.
        with claim(o["out"], "train diffusion", overwrite=overwrite, resume=not o["no_resume"],
                   resume_hint="drop --no-resume to continue it"):
            res = train_diffusion(o["data"], o["size"], o["out"], resolution=o["resolution"], steps=o["steps"],
                                  seed=o["seed"], init_from=o["init_from"], resume=not o["no_resume"], progress=True,
                                  mask_dir=str(o["masks"]) if o["masks"] else None, **kw)
            record_run(o["out"], "train diffusion", o,
                       result={k: res.get(k) for k in ("step", "final_loss", "wall_s")})
    print_json(res)


def masks_cmd(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help=SOURCE_HELP),
    out: Path = typer.Option(..., "--out", help="folder for <image>.png, masks.csv, contact_sheet.png"),
    size: int | None = typer.Option(None, min=8, help="resize images to this size first (default: native)"),
    limit: int | None = typer.Option(None, min=1, help="only the first N images"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Unsupervised lesion masks (255 = lesion) with coverage statistics and a contact sheet."""
    from ..masks import compute_masks

    with fail_cleanly(), claim(out, "masks", overwrite=overwrite):
        summary = compute_masks(source, out, size=size, limit=limit)
        record_run(out, "masks", {k: v for k, v in ctx.params.items() if k != "overwrite"})
    print_json(summary)


def generate_cmd(
    ctx: typer.Context,
    model: Path = typer.Option(..., "--model", help="diffusion model folder from `train diffusion` (or models/synth-dermamnist)"),
    data: Path = typer.Option(..., "--data", help="real images for backgrounds and class counts: " + SOURCE_HELP),
    out: Path = typer.Option(..., "--out"),
    mode: str = typer.Option("inpaint", "--mode", help="inpaint: paint a lesion from noise into the background's "
                                                       "lesion region; harmonize: paste a real lesion of the class "
                                                       "and re-noise it to --strength (SDEdit)"),
    strength: float = typer.Option(0.5, "--strength", callback=FRACTION, help="harmonize: share of the noise schedule (0.2-0.7 typical)"),
    classes: str | None = typer.Option(None, help="comma-separated, e.g. DF,VASC (default: every class the "
                                                      "policy gives a positive count)"),
    policy: str = typer.Option("fill-to-head", help="fill-to-head | fixed"),
    count: int | None = typer.Option(None, min=0, help="fixed: per-class count; fill-to-head: per-class cap"),
    oversample: float = typer.Option(1.0, callback=POSITIVE, help="multiply targets (1/gamma of the selection step)"),
    max_synthetic_per_real: float = typer.Option(10, "--max-synthetic-per-real", callback=NON_NEGATIVE),
    sampler: str | None = typer.Option(None, help="ddim | dpmsolver (default: the sampler in the model's card, "
                                                  "else ddim)"),
    steps: int | None = typer.Option(None, min=1, help="sampling steps (default: the model card's, else 25)"),
    guidance: float | None = typer.Option(None, callback=NON_NEGATIVE,
                                          help="classifier-free guidance scale, 1 = off (default: the model "
                                               "card's, else 1.5)"),
    seed: int = typer.Option(0, min=0),
    shard: str | None = typer.Option(None, help="I/N (1-based): run the I-th of N shards"),
    save_inputs: bool = typer.Option(False, "--save-inputs", help="also write inputs/<id>_background.png, _mask.png"),
    mask_mode: str = typer.Option("own", "--mask-mode", help="own: background's lesion mask; class: borrowed "
                                                              "from a real image of the target class"),
    masks: Path | None = typer.Option(None, "--masks", help="folder of lesion masks (else segmented here)"),
    background_classes: str | None = typer.Option(None, "--background-classes",
                                                     help="comma-separated (default: head classes)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    runtime: str = typer.Option("eager", "--runtime", help="how the UNet runs: eager | compile (torch.compile, "
                                                            "inductor) | onnxruntime (CPU; ONNX export cached "
                                                            "under ~/.cache/tailsynth); same fp32 outputs"),
    channels_last: bool = typer.Option(False, "--channels-last/--no-channels-last",
                                       help="NHWC activations (eager and compile runtimes)"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch/ORT intra-op threads (default: torch's)"),
    precision: str = typer.Option("auto", "--precision", help="auto: bf16 autocast where the CPU has native bf16 "
                                                               "(gated equal to fp32 for the shipped synthesizer), "
                                                               "else fp32 | fp32 | bf16"),
    overwrite: bool = overwrite_option(),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP + "; runtime_cache is set here"),
) -> None:
    """Inpaint (or harmonize) tail-class lesions into real backgrounds; write images, ground truth, manifest, grids."""
    from ..diffusion.generate import GenerateConfig, generate

    with fail_cleanly():
        o = resolve_options(ctx, config, extra=set(GenerateConfig.__dataclass_fields__) - {"progress"})
        overwrite = o.pop("overwrite")
        bg = o["background_classes"]
        bg = [c.strip() for c in bg.split(",")] if isinstance(bg, str) else bg
        cfg = GenerateConfig(**{**o, "model": str(o["model"]), "data": str(o["data"]), "out": str(o["out"]),
                                "masks": str(o["masks"]) if o["masks"] else None, "background_classes": bg,
                                "progress": True})
        with claim(o["out"], "generate", overwrite=overwrite):
            res = generate(cfg)
            record_run(o["out"], "generate", o)
    print_json(res)


def merge_shards_cmd(
    ctx: typer.Context,
    dirs: list[Path] = typer.Argument(..., help="shard output folders"),
    out: Path = typer.Option(..., "--out"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Merge shard folders into one, identical to an unsharded run."""
    from ..diffusion.generate import merge_shards

    with fail_cleanly(), claim(out, "merge-shards", overwrite=overwrite):
        merged = merge_shards(dirs, out)
        record_run(out, "merge-shards", {k: v for k, v in ctx.params.items() if k != "overwrite"})
    print_json(merged)


def synth_quality_cmd(
    model: Path = typer.Option(..., "--model", help="synthesizer folder (e.g. models/synth-dermamnist)"),
    data: Path = typer.Option(..., "--data", help="real data: " + SOURCE_HELP),
    classifier: Path = typer.Option(..., "--classifier", help="real-only classifier folder (label fidelity, features)"),
    out: Path = typer.Option(..., "--out", help=f"folder for {GATES_FILE}, index.html, grids and the samples"),
    classes: str = typer.Option(",".join(TAIL_CLASSES), help="comma-separated tail classes to gate"),
    modes: str = typer.Option("inpaint,harmonize", help="synthesis modes to gate"),
    strength: float = typer.Option(0.5, callback=FRACTION, help="harmonize strength"),
    sampler: str = typer.Option("dpmsolver"),
    steps: int = typer.Option(20, min=1),
    guidance: float = typer.Option(2.0, callback=NON_NEGATIVE),
    seed: int = typer.Option(0, min=0),
    gate_backbone: str = typer.Option("test_resnet", "--gate-backbone", help="train-on-synthetic classifier recipe"),
    gate_epochs: int = typer.Option(5, "--gate-epochs", min=1),
    gate_seeds: str = typer.Option("0", "--gate-seeds", help="comma-separated seeds of the TOS classifiers"),
    no_tos: bool = typer.Option(False, "--no-tos", help="skip the train-on-synthetic classifiers (fast)"),
    min_count: int = typer.Option(0, "--min-count", min=0,
                                  help="candidates per class and mode: the class's training count, at least this"),
    runtime: str = typer.Option("eager", "--runtime", help="how the UNet runs: eager | compile | onnxruntime"),
    precision: str = typer.Option("auto", "--precision", help="fp32 | bf16 (CPU autocast) | auto (bf16 where the "
                                                               "CPU has native bf16, as generate does)"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Quality gates of a synthesizer per tail class: label fidelity, train-on-synthetic recall, FD/KID, memorization."""
    from ..classify.model import feature_model
    from ..classify.train import train_classifier
    from ..ood.gates import GATES_FILE, GateConfig, run_gates

    with fail_cleanly():
        gate_seed_list = seed_list("--gate-seeds", gate_seeds)
    with fail_cleanly(), claim(out, "synth-quality", overwrite=overwrite, done_file=GATES_FILE):
        cfg = GateConfig(model=str(model), data=str(data), classifier=str(classifier), out=str(out),
                         classes=[c.strip() for c in classes.split(",") if c.strip()],
                         modes=[m.strip() for m in modes.split(",") if m.strip()], strength=strength,
                         sampler=sampler, steps=steps, guidance=guidance, seed=seed, gate_backbone=gate_backbone,
                         gate_epochs=gate_epochs, gate_seeds=gate_seed_list, tos=not no_tos,
                         min_count=min_count, runtime=runtime, precision=precision)
        q = run_gates(cfg, feature_model(cfg.classifier), train_classifier)
    print_json({"out": str(out), "all_pass": q["all_pass"], "gates": q["gates"]})


def diagnose_cmd(
    model: Path = typer.Option(..., "--model", help="diffusion model folder"),
    data: Path = typer.Option(..., "--data", help="real data: " + SOURCE_HELP),
    out: Path = typer.Option(..., "--out"),
    classifier: Path | None = typer.Option(None, "--classifier", help="real-only classifier: enables the sampler sweep"),
    n: int = typer.Option(256, min=1, help="validation images for the one-step reconstruction"),
    sweep: str = typer.Option("ddim:25:1.5,ddim:25:2,dpmsolver:10:2,dpmsolver:20:1,dpmsolver:20:2,dpmsolver:20:3",
                              help="sampler:steps:guidance configurations"),
    count: int = typer.Option(48, min=1, help="sweep: candidates per tail class"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Diagnose a synthesizer: one-step reconstruction (EMA vs raw weights) and a sampler sweep."""
    import json

    from ..diffusion.diagnose import reconstruction_report, sampler_sweep

    with fail_cleanly():
        configs = _sweep_configs(sweep) if classifier else []
    with fail_cleanly(), claim(out, "diagnose-diffusion", overwrite=overwrite, done_file="diagnosis.json"):
        rep = {"reconstruction": reconstruction_report(model, data, n=n)}
        if classifier:
            from ..classify.model import feature_model
            from ..ood.select import score_candidates

            scorer = feature_model(classifier)
            rep["sampler_sweep"] = sampler_sweep(model, data, lambda folder: score_candidates(folder, data, scorer),
                                                 out, configs, count=count)
        (out / "diagnosis.json").write_text(json.dumps(rep, indent=2) + "\n")
    print_json(rep)


def ship_cmd(
    model: Path = typer.Option(..., "--model", help="trained model folder (its EMA weights are shipped)"),
    out: Path = typer.Option(..., "--out", help="e.g. models/synth-dermamnist"),
    name: str = typer.Option("synth-dermamnist", "--name"),
    quality: Path | None = typer.Option(None, "--quality", help=f"{GATES_FILE} from `synth-quality` (gate figures; "
                                                                 f"{OLD_GATES_FILE} in older folders)"),
    command: list[str] = typer.Option([], "--command", help="a command that reproduces it (repeatable)"),
    note: list[str] = typer.Option([], "--note", help="a note for the model card (repeatable)"),
    overwrite: bool = overwrite_option(),
) -> None:
    """Ship a trained synthesizer: fp16 safetensors (<= 8 MB), model_card.json and model_card.md."""
    import json

    from ..cards import CARD_JSON
    from ..diffusion.card import ship

    with fail_cleanly(), claim(out, "ship-synthesizer", overwrite=overwrite, done_file=CARD_JSON):
        q = json.loads(quality.read_text()) if quality else None
        card = ship(model, out, name, q, list(command), list(note))
    print_json({"out": str(out), "weights_hash": card["weights_hash"], "weights_mb": card["weights_mb"]})


def regate_cmd(
    model: Path = typer.Option(..., "--model", help="a shipped synthesizer folder (e.g. models/synth-ham64)"),
    quality: Path = typer.Option(..., "--quality", help=f"{GATES_FILE} from `synth-quality` run on these weights"),
    command: list[str] = typer.Option([], "--command", help="a command that measured them (repeatable)"),
    note: list[str] = typer.Option([], "--note", help="a note for the model card (repeatable)"),
) -> None:
    """Put newly measured gates into a shipped synthesizer's card (weights untouched; refused for other weights)."""
    import json

    from ..diffusion.card import regate
    from ..errors import ConfigError

    with fail_cleanly():
        try:
            q = json.loads(quality.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"--quality {quality}: not a readable {GATES_FILE} ({type(e).__name__}: {e})") from e
        card = regate(model, q, list(command), list(note))
    print_json({"out": str(model), "weights_hash": card["weights_hash"],
                "gates_all_pass": card["metrics"]["gates_all_pass"]})


def _sweep_configs(sweep: str) -> list[dict]:
    """--sweep sampler:steps:guidance,... as dicts; a malformed item is a ConfigError naming it."""
    from ..errors import ConfigError

    configs = []
    for item in sweep.split(","):
        try:
            smp, st, g = item.split(":")
            cfg = {"sampler": smp, "steps": int(st), "guidance": float(g)}
        except ValueError:
            cfg = None
        if cfg is None or cfg["steps"] < 1 or not cfg["guidance"] >= 0:
            raise ConfigError(f"--sweep item {item!r}: expected SAMPLER:STEPS:GUIDANCE with STEPS >= 1 and "
                              "GUIDANCE >= 0, e.g. dpmsolver:20:2")
        configs.append(cfg)
    return configs


def register(app: typer.Typer) -> None:
    attach(app)  # `tailsynth train` group, shared with the classifier; added once
    app.command("masks")(masks_cmd)
    app.command("generate")(generate_cmd)
    app.command("merge-shards")(merge_shards_cmd)
    app.command("synth-quality")(synth_quality_cmd)
    app.command("diagnose-diffusion")(diagnose_cmd)
    app.command("ship-synthesizer")(ship_cmd)
    app.command("regate-synthesizer")(regate_cmd)
