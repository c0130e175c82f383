"""Command line: one thin sub-command per job.

Every sub-command accepts the global root flags (before or after its name). Errors the
user can fix are printed without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from medtransfer import __version__
from medtransfer.config import Roots, resolve_roots
from medtransfer.data.sources.base import PM_POSITIVE_POLICIES, UNCERTAIN_POLICIES
from medtransfer.errors import MedTransferError


def _add_roots(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    default = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("roots")
    group.add_argument(
        "--data-root",
        default=default,
        help="folder holding the datasets, read only (env MEDTRANSFER_DATA; "
        "default ~/medtransfer-data)",
    )
    group.add_argument(
        "--cache-dir",
        default=default,
        help="downloads, weights, manifests, features; safe to delete (env MEDTRANSFER_CACHE; "
        "default: the user cache dir)",
    )
    group.add_argument(
        "--results-dir",
        default=default,
        help="records and logs (env MEDTRANSFER_RESULTS; default ~/medtransfer-results)",
    )


def _add_compute(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("compute")
    group.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU when there is one, mixed precision there), cpu or cuda[:N]",
    )
    group.add_argument("--workers", type=int, default=0, help="image decoding processes")
    group.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument(
        "--no-prepared",
        action="store_true",
        help="decode the original files even where `datasets prepare` made resized copies",
    )


def _add_data(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "-d",
        "--dataset",
        required=required,
        help="catalog name or alias (see `datasets list`), imagefolder:PATH or csv:PATH",
    )
    parser.add_argument(
        "--split-policy",
        choices=("patient", "original"),
        default="patient",
        help="patient: no patient on both sides (default); original: the study's exact split",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the patient split")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of train held out for validation (the original: 0.2)",
    )
    parser.add_argument(
        "--uncertain",
        choices=UNCERTAIN_POLICIES,
        default="positive",
        help="CheXpert uncertain labels: positive (U-Ones, the original's few-shot), negative "
        "(U-Zeros, what its linear/fine-tune did), ignore (drop the rows)",
    )
    parser.add_argument(
        "--pm-positive",
        choices=PM_POSITIVE_POLICIES,
        default="P",
        help="iChallenge-PM positives: P (pathological myopia; official PALM, the original's "
        "code) or HP (high and pathological myopia; the original's README)",
    )


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="catalog model (see `models list`)")
    parser.add_argument(
        "--weights",
        type=Path,
        help="a torchvision-format state dict to load into the model's architecture",
    )
    parser.add_argument(
        "--model-seed", type=int, default=0, help="seed of random-init models (random_*)"
    )
    parser.add_argument(
        "-n",
        "--no-norm",
        action="store_true",
        help="the original's --no-norm: feed [0,1] pixels without mean/std normalisation "
        "(histogram-normalised models keep theirs, as in the original)",
    )
    parser.add_argument(
        "--norm",
        choices=("default", "study", "imagenet", "half", "cxr", "histogram", "none"),
        default="default",
        help="input normalisation: default = what the weights expect (see `models info`); "
        "study = what the original study fed the model (MoCo-CXR: ImageNet statistics); "
        "or a kind",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtransfer",
        description="Which pretrained backbone should I start from for medical imaging, and why?",
    )
    parser.add_argument("--version", action="version", version=f"medtransfer {__version__}")
    _add_roots(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    datasets = commands.add_parser(
        "datasets", help="list, check, synthesise, prepare, export and download datasets"
    )
    dataset_commands = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = dataset_commands.add_parser("list", help="the dataset catalog")
    _add_roots(listing, top_level=False)
    check = dataset_commands.add_parser(
        "check", help="counts per class and split, and every problem with its file"
    )
    _add_data(check)
    check.add_argument("--workers", type=int, default=4, help="threads opening images")
    check.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_roots(check, top_level=False)
    synth = dataset_commands.add_parser(
        "synth", help="write a small synthetic tree in the dataset's published layout"
    )
    synth.add_argument("-d", "--dataset", required=True)
    synth.add_argument("--out", type=Path, required=True, help="folder to write DATASET/ into")
    synth.add_argument("--per-class", type=int, default=40, help="images per class")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    _add_roots(synth, top_level=False)

    prepare = dataset_commands.add_parser(
        "prepare",
        help="write pre-resized copies into the cache (decode large images once)",
        description="Decode every image once and keep a copy whose shorter side is --size "
        "pixels (lossless PNG) in the cache. Extraction then reads the copy whenever its size "
        "covers the resize it needs (`--no-prepared` turns this off). The data root is never "
        "written to.",
    )
    _add_data(prepare)
    prepare.add_argument("--size", type=int, default=256, help="shorter side in pixels")
    prepare.add_argument("--workers", type=int, default=4, help="decoding threads")
    prepare.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_roots(prepare, top_level=False)
    export = dataset_commands.add_parser(
        "export",
        help="write the manifest (split and labels) as CSV",
        description="Write the manifest as CSV with columns path (relative to the dataset "
        "folder), label (class index), class_name, patient, split (train/val/test), so a "
        "split can be shared, inspected and reused.",
    )
    _add_data(export)
    export.add_argument("--out", type=Path, required=True, help="CSV file to write")
    _add_roots(export, top_level=False)

    download = dataset_commands.add_parser(
        "download",
        help="download a dataset that needs no login (CIFAR-10/100) into the cache",
        description="Fetch the dataset's archive through medtransfer's downloader (resumed, "
        "checksummed), unpack it safely into <cache>/datasets/<folder>, and read it from there "
        "whenever <data root>/<folder> does not exist. Datasets behind a registration page "
        "must be downloaded by hand; the error says from where.",
    )
    download.add_argument("-d", "--dataset", required=True)
    download.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_roots(download, top_level=False)

    models = commands.add_parser("models", help="the model catalog: list, info, download, convert")
    model_commands = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    model_list = model_commands.add_parser("list", help="every catalog model")
    _add_roots(model_list, top_level=False)
    info = model_commands.add_parser("info", help="everything the catalog knows about a model")
    info.add_argument("name")
    _add_roots(info, top_level=False)
    fetch = model_commands.add_parser(
        "download",
        help="download (and convert) weights into the cache",
        description="Fetch the authors' weights file (resumed, sha256 recorded), convert it to "
        "a torchvision state dict once, and cache it. Models behind a login say how to get "
        "the file by hand.",
    )
    which = fetch.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", help="a catalog model")
    which.add_argument("--all", action="store_true", help="every downloadable model")
    fetch.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_roots(fetch, top_level=False)
    convert = model_commands.add_parser(
        "convert",
        help="convert a weights file you obtained by hand (e.g. SimCLR-v1's zip)",
        description="Convert the authors' file for a catalog model into the cache, as "
        "`models download` would have; later runs use it.",
    )
    convert.add_argument("name", help="a catalog model, e.g. simclr-v1")
    convert.add_argument("--from", dest="source", type=Path, required=True, help="the file")
    _add_roots(convert, top_level=False)

    few_shot = commands.add_parser(
        "few-shot",
        help="prototypical-network few-shot evaluation over cached features",
        description="Few-shot evaluation as in the original study (prototypical networks, "
        "squared Euclidean distance to class means), over features extracted once. Prints "
        "'Test Acc = X% +- Y%' and writes a record.",
    )
    _add_data(few_shot)
    _add_model(few_shot)
    few_shot.add_argument("--n-way", type=int, default=5, help="classes per episode")
    few_shot.add_argument("--n-support", type=int, default=5, help="support images per class")
    few_shot.add_argument("--n-query", type=int, default=15, help="query images per class")
    few_shot.add_argument("--iter-num", type=int, default=600, help="number of episodes")
    few_shot.add_argument("-i", "--image-size", type=int, default=224, help="crop size")
    few_shot.add_argument(
        "--resize",
        choices=("square", "shorter"),
        help="resize geometry (default: the original's for the dataset)",
    )
    few_shot.add_argument(
        "--pool",
        choices=("all", "train", "test"),
        default="all",
        help="which split episodes draw from (the original: all)",
    )
    few_shot.add_argument("--seed", type=int, default=0, help="episode seed")
    few_shot.add_argument(
        "--seeds", help="comma-separated episode seeds: one run each, with mean and spread"
    )
    _add_compute(few_shot)
    _add_roots(few_shot, top_level=False)

    linear = commands.add_parser(
        "linear",
        help="linear probe: logistic regression on cached features, C chosen on val",
        description="The original's linear evaluation: L2 logistic regression for each C of "
        "a 45-value grid (1e6 down to 1e-5) on the train split, scored on val with the "
        "dataset's metric (ties go to the larger C), refit on train+val at the chosen C, "
        "tested. A torch L-BFGS solver minimises scikit-learn's exact objective "
        "(--solver sklearn runs scikit-learn itself).",
    )
    _add_data(linear)
    _add_model(linear)
    linear.add_argument("-c", "--C", type=float, help="fix C and skip the validation search")
    linear.add_argument(
        "-w", "--wd-values", type=int, default=45, help="grid points (the original's -w)"
    )
    linear.add_argument("--solver", choices=("torch", "sklearn"), default="torch")
    linear.add_argument("-i", "--image-size", type=int, default=224, help="crop size")
    linear.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    linear.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    linear.add_argument(
        "--seeds",
        help="comma-separated seeds: re-draw the validation hold-out once per seed (test split "
        "fixed) and record the mean and spread",
    )
    _add_compute(linear)
    _add_roots(linear, top_level=False)

    knn = commands.add_parser(
        "knn",
        help="k-nearest-neighbour classification over cached features",
        description="Cosine-similarity kNN with temperature-weighted votes (as modern SSL "
        "benchmarks report it): train and val rows vote, test rows are scored with the "
        "dataset's metric and a bootstrap 95%% interval, for several k in one pass.",
    )
    _add_data(knn)
    _add_model(knn)
    knn.add_argument(
        "--k",
        default="10,20,100,200",
        help="neighbour counts, comma-separated (default: %(default)s)",
    )
    knn.add_argument("--temperature", type=float, default=0.07, help="vote temperature")
    knn.add_argument("-i", "--image-size", type=int, default=224, help="crop size")
    knn.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    knn.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    _add_compute(knn)
    _add_roots(knn, top_level=False)

    tune = commands.add_parser(
        "finetune",
        help="fine-tune the whole network (the original's recipe, with its defects fixed)",
        description="SGD with Nesterov momentum 0.9, cosine schedule over --steps, batch 64, "
        "random resized crop and horizontal flip. With --early-stopping it trains on train, "
        "validates every --eval-every steps on val with the dataset's metric, stops after "
        "--patience checks without improvement and TESTS THE BEST WEIGHTS (the original tested "
        "the last ones; --test-last reproduces that). Without it, it trains on train+val. "
        "AUC comes from probabilities. Checkpoints let an interrupted run resume.",
    )
    _add_data(tune)
    _add_model(tune)
    tune.add_argument("--steps", type=int, default=5000, help="optimisation steps")
    tune.add_argument("--eval-every", type=int, default=200, help="steps between val checks")
    tune.add_argument("-p", "--patience", type=int, default=3, help="checks without improvement")
    tune.add_argument("--lr", type=float, default=1e-2, help="learning rate")
    tune.add_argument("--wd", type=float, default=1e-8, help="weight decay")
    tune.add_argument("-e", "--early-stopping", action="store_true", help="see above")
    tune.add_argument(
        "-s", "--search", action="store_true", help="the original's lr/wd grid search on val"
    )
    tune.add_argument("-g", "--grid-size", type=int, default=2, help="points per grid axis")
    tune.add_argument("--no-da", action="store_true", help="no training augmentation")
    tune.add_argument("-i", "--image-size", type=int, default=224, help="crop size")
    tune.add_argument("--seeds", default="0", help="comma-separated seeds; mean and spread")
    tune.add_argument(
        "--metric",
        choices=("dataset", "auc"),
        default="dataset",
        help="the dataset's metric, or auc (the original's finetune_auc.py, from probabilities)",
    )
    tune.add_argument(
        "--test-last",
        action="store_true",
        help="test the last weights even with early stopping (the original's behaviour)",
    )
    tune.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    _add_compute(tune)
    _add_roots(tune, top_level=False)

    demo = commands.add_parser(
        "demo", help="an offline tour: real pretrained weights vs random init on real pixels"
    )
    demo.add_argument("--quick", action="store_true", help="fewer images and episodes")
    _add_compute(demo)
    _add_roots(demo, top_level=False)
    return parser


def _roots(args: argparse.Namespace) -> Roots:
    return resolve_roots(args.data_root, args.cache_dir, args.results_dir)


def _cmd_datasets(args: argparse.Namespace) -> int:
    from medtransfer import commands

    if args.action == "list":
        return commands.datasets_list(_roots(args))
    if args.action == "synth":
        return commands.datasets_synth(args)
    action = {
        "check": commands.datasets_check,
        "prepare": commands.datasets_prepare,
        "export": commands.datasets_export,
        "download": commands.datasets_download,
    }[args.action]
    return action(_roots(args), args)


def _cmd_models(args: argparse.Namespace) -> int:
    from medtransfer import commands

    action = {
        "list": commands.models_list,
        "info": commands.models_info,
        "download": commands.models_download,
        "convert": commands.models_convert,
    }[args.action]
    return action(_roots(args), args)


def _cmd_few_shot(args: argparse.Namespace) -> int:
    from medtransfer.commands import few_shot

    return few_shot(_roots(args), args)


def _cmd_linear(args: argparse.Namespace) -> int:
    from medtransfer.commands import linear

    return linear(_roots(args), args)


def _cmd_knn(args: argparse.Namespace) -> int:
    from medtransfer.commands import knn

    return knn(_roots(args), args)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from medtransfer.commands import finetune

    return finetune(_roots(args), args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from medtransfer.demo import run_demo

    return run_demo(_roots(args), args)


HANDLERS = {
    "datasets": _cmd_datasets,
    "models": _cmd_models,
    "few-shot": _cmd_few_shot,
    "linear": _cmd_linear,
    "knn": _cmd_knn,
    "finetune": _cmd_finetune,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except MedTransferError as exc:
        print(f"medtransfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "medtransfer: interrupted; finished work is kept and a re-run resumes.", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
