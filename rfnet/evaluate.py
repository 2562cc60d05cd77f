"""Evaluating RFNet on a labelled RF1M-layout set: eval.json, confusion.png, the accept threshold.

``reliable-ad evaluate --rfnet DIR --data DIR --out DIR`` calls :func:`evaluate_rfnet`:

1. **Which samples.** A set with split label files (``test.txt``, ``val.txt``, ...; see
   docs/data.md) is scored on its test file (``split="auto"`` or ``"test"``) or validation file
   (``split="val"``). Otherwise the checkpoint's ``meta.json`` says how ``train-rfnet`` split the
   set (``split.val_fraction``, ``split.test_fraction``, ``split.seed``, ``split.max_samples``) and
   the same :func:`rfnet.data.holdout_split` call reproduces it: ``split="auto"`` (default) scores
   the test share, which nothing in training saw or chose by (a checkpoint that held out none, e.g.
   one trained with ``test_fraction=0``, is scored on its validation share, which chose its epoch:
   slightly optimistic). The split hashes image paths relative to the set's root, so a copied or
   moved set (local -> s3://) splits the same way. That applies to the set the checkpoint was
   trained on only: ``split="auto"`` recognises it by the identity training stored
   (:func:`recognise_training_set`: same image paths, or any image in common) and scores every
   labelled sample of any other set. A checkpoint without split parameters (or ``split="all"``)
   scores every labelled sample; ``split="test"`` / ``"val"`` insist on that share and fail if
   there is none. eval.json's ``split`` says which mode was used and why (``reason``).
2. **Scoring.** Samples are decoded exactly as in training (``rfnet.data.load_example``) and scored
   in batches on the configured device. How well the product search found each cut-out in its
   image is summarised in ``product_search`` (:func:`rfnet.aux.search_report`), with a warning in
   the log when the cut-outs do not look like the pasted products.
3. **Metrics** (:func:`build_report`, a pure function): macro F1 and per-class precision / recall /
   F1 / support from the argmax class, the confusion matrix (rows: true class, columns: predicted),
   and Available as a binary problem: precision / recall / F1 of "argmax is Available" and the
   average precision of ``p_available``.
4. **Accept threshold.** The lowest threshold on ``p_available`` whose accept rule
   (``p_available >= t``) reaches ``target_precision`` on Available over the scored samples (lowest,
   so that as many good images as possible are accepted at that precision). With
   ``write_threshold`` it is stored in the checkpoint's ``meta.json``, and ``load_rfnet(...)``
   (hence every scorer) uses it from then on. If no threshold reaches the target, eval.json says so
   and nothing is written to the checkpoint.
5. **Per image.** ``predictions.parquet`` has one row per scored image (its path relative to the
   set's root, ``true_label``, and the scorer stage's columns: ``prob_<label>``, ``label``,
   ``p_available``, ``accepted`` at the threshold in effect after this run) and ``errors.png``
   shows the most confident mistakes of the most frequent confusions, so a person can look at what
   the model gets wrong and relabel what the annotation got wrong.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageDraw, ImageFont

from pipelines import storage
from pipelines.config import ConfigError
from pipelines.device import autocast
from pipelines.labels import AVAILABLE, DISPLAY_NAMES, LABELS, NUM_CLASSES
from rfnet import metrics
from rfnet.aux import search_report
from rfnet.checkpoint import LoadedRFNet, load_rfnet, update_meta
from rfnet.config import EvaluateConfig
from rfnet.data import holdout_split, read_rf1m, set_identity, shared_images, split_samples
from rfnet.train import Examples, PrepProgress, explicit_splits, load_examples, log_search

logger = logging.getLogger(__name__)

EVAL_JSON = "eval.json"
CONFUSION_PNG = "confusion.png"
PREDICTIONS_PARQUET = "predictions.parquet"
ERRORS_PNG = "errors.png"


def build_report(labels: np.ndarray, probs: np.ndarray, target_precision: float) -> dict[str, Any]:
    """The metrics of eval.json from true class indices ``(N,)`` and probabilities ``(N, 6)``."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape != (labels.shape[0], NUM_CLASSES):
        raise ValueError(f"probs must be (N={labels.shape[0]}, {NUM_CLASSES}), got {probs.shape}")
    pred = probs.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    cm = metrics.confusion_matrix(labels, pred, NUM_CLASSES)
    per = metrics.per_class_metrics(cm)
    positive = labels == AVAILABLE
    p_available = probs[:, AVAILABLE]
    precision, recall, f1 = metrics.binary_prf(positive, pred == AVAILABLE)
    choice = metrics.choose_threshold(p_available, positive, target_precision)
    return {
        "n": len(labels),
        "macro_f1": metrics.macro_f1(cm),
        "accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "per_class": {
            name: {
                "precision": float(per.precision[i]),
                "recall": float(per.recall[i]),
                "f1": float(per.f1[i]),
                "support": int(per.support[i]),
            }
            for i, name in enumerate(LABELS)
        },
        "available": {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "ap": metrics.average_precision(p_available, positive),
        },
        "labels": list(LABELS),
        "confusion": cm.tolist(),
        "threshold": choice.threshold,
        "threshold_selection": {
            "rule": "lowest t with precision(p_available >= t) >= target_precision on Available",
            "target_precision": choice.target_precision,
            "reached": choice.reached,
            "precision": choice.precision,
            "recall": choice.recall,
            "f1": choice.f1,
            "accept_rate": choice.accept_rate,
        },
    }


def render_confusion(cm: np.ndarray, names: tuple[str, ...] = DISPLAY_NAMES, title: str = "") -> bytes:
    """PNG bytes of a confusion matrix: counts, cells shaded by row share (recall), labelled axes."""
    cm = np.asarray(cm, np.int64)
    k = cm.shape[0]
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    cell, left, top = 64, 150, 150
    width, height = left + k * cell + 20, top + k * cell + 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((10, 8), title, fill="black", font=font)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    for i in range(k):
        for j in range(k):
            x0, y0 = left + j * cell, top + i * cell
            shade = int(255 - 200 * share[i, j])
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(180, 180, 180))
            text = str(int(cm[i, j]))
            tw = draw.textlength(text, font=font)
            draw.text((x0 + (cell - tw) / 2, y0 + cell / 2 - 8), text, fill="black", font=font)
        draw.text((8, top + i * cell + cell / 2 - 7), names[i], fill="black", font=small)
        label = Image.new("RGBA", (top - 20, 16), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), names[i], fill="black", font=small)
        rotated = label.rotate(90, expand=True)
        img.paste(rotated, (left + i * cell + cell // 2 - 8, 20), rotated)
    draw.text((left, height - 30), "predicted class (columns); true class (rows)", fill="black", font=small)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def prediction_table(images: list[str], labels: np.ndarray, probs: np.ndarray, threshold: float) -> pa.Table:
    """One row per scored image, with the scorer stage's columns (``prob_<label>`` per class,
    ``label`` the argmax class, ``p_available``, ``accepted`` = ``p_available >= threshold``) next
    to the annotation (``true_label``) and whether the two agree (``correct``)."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float32)
    pred = probs.argmax(axis=1)
    columns: dict[str, Any] = {
        "image": pa.array(images, pa.string()),
        "true_label": pa.array([LABELS[k] for k in labels], pa.string()),
        "label": pa.array([LABELS[k] for k in pred], pa.string()),
        "correct": pa.array(pred == labels, pa.bool_()),
    }
    for k, name in enumerate(LABELS):
        columns[f"prob_{name}"] = pa.array(probs[:, k], pa.float32())
    columns["p_available"] = pa.array(probs[:, AVAILABLE], pa.float32())
    columns["accepted"] = pa.array(probs[:, AVAILABLE] >= threshold, pa.bool_())
    return pa.table(columns)


def render_errors(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    names: tuple[str, ...] = DISPLAY_NAMES,
    max_pairs: int = 6,
    per_pair: int = 8,
    title: str = "",
) -> bytes:
    """PNG bytes of the misclassified images, for a person to look at: one row per confusion
    (true -> predicted class), the ``max_pairs`` most frequent first, each with its ``per_pair``
    most confident mistakes (the predicted class's probability under each). ``images (N, S, S, 3)``
    uint8 as scored."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    pred = probs.argmax(axis=1)
    cm = metrics.confusion_matrix(labels, pred, len(names))
    off = [(int(cm[t, p]), t, p) for t in range(len(names)) for p in range(len(names)) if t != p and cm[t, p]]
    pairs = sorted(off, key=lambda c: (-c[0], c[1], c[2]))[:max_pairs]
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    cell, left, top, caption = 96, 230, 40, 16
    width = left + per_pair * (cell + 4) + 10
    height = top + max(1, len(pairs)) * (cell + caption + 8) + 10
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((10, 10), title, fill="black", font=font)
    if not pairs:
        draw.text((10, top + 10), "no misclassified images", fill="black", font=font)
    for row, (count, t, p) in enumerate(pairs):
        y = top + row * (cell + caption + 8)
        draw.text((8, y + cell / 2 - 16), f"{names[t]} ->", fill="black", font=small)
        draw.text((8, y + cell / 2), f"{names[p]} ({count})", fill="black", font=small)
        wrong = np.flatnonzero((labels == t) & (pred == p))
        wrong = wrong[np.argsort(-probs[wrong, p], kind="stable")][:per_pair]
        for j, i in enumerate(wrong):
            x = left + j * (cell + 4)
            tile = Image.fromarray(np.ascontiguousarray(images[i])).resize((cell, cell), Image.NEAREST)
            img.paste(tile, (x, y))
            draw.text((x + 2, y + cell + 1), f"{probs[i, p]:.2f}", fill="black", font=small)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def predict_examples(
    loaded: LoadedRFNet, data: Examples, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities ``(N, 6)`` of decoded examples (the preprocessing of training), and the
    product search's error per example ``(N,)`` (None for a model without the search)."""
    model, placement = loaded.model, loaded.placement
    out = np.zeros((len(data), NUM_CLASSES), np.float32)
    errors = np.ones(len(data), np.float32) if model.config.use_placement else None
    report = PrepProgress("scoring", len(data))
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            idx = np.arange(start, min(start + batch_size, len(data)))
            b = data.batch(idx, placement.device)
            with autocast(placement):
                image, product = b["image"].to(placement.dtype), b["product"].to(placement.dtype)
                # The maps the forward pass would compute itself, kept for the search's error.
                maps = model.aux_maps(image, product if model.config.use_product else None, b["has_product"])
                logits = model(image, product, b["has_product"], model.tokenize(b["caption"]), maps=maps)
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if errors is not None:
                errors[idx] = maps["box_error"].float().cpu().numpy()
            report(int(idx[-1]) + 1)
    return out, errors


def select_samples(cfg: EvaluateConfig, loaded: LoadedRFNet, root: str) -> tuple[list, dict[str, Any]]:
    """The labelled samples to score and a description of the choice (for eval.json)."""
    index = read_rf1m(root)  # logs its own summary, with any problems
    labelled = [s for s in index.samples if s.label >= 0]
    if not labelled:
        raise ConfigError(f"--data {root!r} holds no labelled samples; {index.summary()}")
    splits = explicit_splits(index)
    split = loaded.meta.get("split") if isinstance(loaded.meta.get("split"), dict) else None
    if splits and cfg.split != "all":
        roles = {"auto": ("test", "val"), "test": ("test",), "val": ("val",)}[cfg.split]
        for role in roles:
            if role in splits and splits[role][1]:
                name, samples = splits[role]
                reason = f"the set's own {role} file"
                return samples, {"mode": role, "file": name, "reason": reason, "n_labelled": len(labelled)}
        if cfg.split == "val" and "train" in splits and (split or {}).get("val_fraction") is not None:
            # no validation file: training validated on a hash split of the train file; redo it
            _, val = split_samples(splits["train"][1], float(split["val_fraction"]), int(split["seed"]))
            return val, {
                "mode": "val",
                "file": splits["train"][0],
                "reason": "no validation file: training validated on a hash split of the train file, redone",
                "val_fraction": split["val_fraction"],
                "seed": split["seed"],
                "n_labelled": len(labelled),
            }
        if cfg.split != "auto":
            raise ConfigError(f"--data {root!r} has split files but no labelled {cfg.split} file")
    if split is not None and split.get("val_fraction") is None:
        split = None  # trained on split files, which this set does not have: no held-out split to redo
    if cfg.split == "all":
        return labelled, {"mode": "all", "reason": "split=all", "n_labelled": len(labelled)}
    if cfg.split == "auto" and split is None:
        reason = "the checkpoint records no hash split of a set it was trained on"
        return labelled, {"mode": "all", "reason": reason, "n_labelled": len(labelled)}
    reason = f"split={cfg.split}"
    recognised: dict[str, Any] = {}
    if cfg.split == "auto":
        trained_on, reason, recognised = recognise_training_set(split, labelled)
        if not trained_on:
            return labelled, {"mode": "all", "reason": reason, **recognised, "n_labelled": len(labelled)}
    if split is None:
        raise ConfigError(
            f"split={cfg.split!r} needs the checkpoint's split parameters, but {cfg.rfnet!r} has no split in "
            "meta.json; use --set split=all"
        )
    test_fraction = float(split.get("test_fraction") or 0.0)  # absent: a checkpoint from before test splits
    role = ("test" if test_fraction else "val") if cfg.split == "auto" else cfg.split
    if role == "test" and not test_fraction:
        raise ConfigError(
            f"{cfg.rfnet!r} held out no test split (test_fraction=0 in meta.json); use --set split=val or split=all"
        )
    samples = labelled
    cap = split.get("max_samples")
    if cap is not None and len(samples) > cap:
        samples, _ = split_samples(samples, 1.0 - cap / len(samples), int(split["seed"]) + 1)
    _, val, test = holdout_split(samples, float(split["val_fraction"]), test_fraction, int(split["seed"]))
    chosen = test if role == "test" else val
    if not chosen:
        raise ConfigError(
            f"the checkpoint's split (val_fraction={split['val_fraction']}, test_fraction={test_fraction}) "
            f"leaves no {role} samples in {root!r}; use --set split=all"
        )
    return chosen, {
        "mode": role,
        "reason": reason,
        **recognised,
        "val_fraction": split["val_fraction"],
        "test_fraction": test_fraction,
        "seed": split["seed"],
        "trained_on": split.get("data_root"),
        "n_labelled": len(labelled),
    }


def recognise_training_set(split: dict[str, Any], labelled: list) -> tuple[bool, str, dict[str, Any]]:
    """``(trained on it, why, details for eval.json)``: is ``labelled`` (the scored set's labelled
    samples) the set the checkpoint was trained on, by the identity ``train-rfnet`` stored
    (:func:`rfnet.data.set_identity`)? Yes when the image paths are the same (fingerprint) or when
    it shares images with it (a grown or partly copied set: its held-out share is scored). A
    checkpoint without an identity (trained before it was stored) is taken to be, as before."""
    identity = split.get("set")
    if not isinstance(identity, dict) or "fingerprint" not in identity:
        return True, "the checkpoint does not record which set it was trained on: its split is redone", {}
    fingerprint = set_identity(labelled, sketch_size=0)["fingerprint"]
    details: dict[str, Any] = {"fingerprint": fingerprint, "trained_fingerprint": identity["fingerprint"]}
    if fingerprint == identity["fingerprint"]:
        return True, "the set the checkpoint was trained on (same image paths): its held-out share", details
    shared, checked = shared_images(identity, labelled)
    details |= {"shared_images": shared, "checked_images": checked}
    if shared:
        why = (
            f"shares {shared} of {checked} checked images with the set the checkpoint was trained on: "
            "its held-out share"
        )
        return True, why, details
    why = (
        f"not the set the checkpoint was trained on (other image paths; none of {checked} checked images "
        "shared): nothing of it was trained on, all of it is scored"
    )
    return False, why, details


def _relative(uri: str, root: str) -> str:
    prefix = root.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri


def evaluate_rfnet(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score, write ``eval.json``, ``confusion.png``, ``errors.png`` and ``predictions.parquet`` to
    ``cfg.out``; return the eval.json dict."""
    cfg.check_ready()
    start = time.time()
    loaded = load_rfnet(cfg.rfnet, device=cfg.device, dtype=cfg.dtype)
    root = storage.normalize(cfg.data)
    samples, split_info = select_samples(cfg, loaded, root)
    mc = loaded.config
    data = load_examples(
        samples,
        image_size=mc.image_size,
        product_size=mc.product_size,
        threads=cfg.load_threads,
        progress=True,
    )
    if len(data) == 0:
        raise ConfigError(f"none of the {len(samples)} selected samples in {root!r} could be decoded")
    probs, search_error = predict_examples(loaded, data, cfg.batch_size)
    report = build_report(data.label.numpy(), probs, cfg.target_precision)
    search = None
    if search_error is not None:
        search = search_report(torch.from_numpy(search_error), data.has_product)
        log_search(search, "scored images", logger)
    written = False
    if cfg.write_threshold:
        if report["threshold"] is None:
            logger.warning(
                "no threshold reaches precision %.3f on Available; the checkpoint's threshold is left as it is",
                cfg.target_precision,
            )
        elif cfg.rfnet == "tiny" or cfg.rfnet.startswith("random:"):
            raise ConfigError(f"--write-threshold needs a checkpoint directory, not {cfg.rfnet!r}")
        else:
            update_meta(
                cfg.rfnet,
                threshold=report["threshold"],
                threshold_source={
                    "target_precision": cfg.target_precision,
                    "data": root,
                    "split": split_info["mode"],
                    "n": report["n"],
                },
            )
            written = True
    report["threshold_selection"]["written_to_checkpoint"] = written
    # The threshold a scorer loading this checkpoint uses from now on: predictions.parquet's `accepted`.
    in_effect = report["threshold"] if written else loaded.threshold
    result = {
        "rfnet": cfg.rfnet,
        "data": root,
        "split": split_info,
        "skipped": data.skipped,
        **report,
        "checkpoint_threshold": loaded.threshold,
        "predictions": {"file": PREDICTIONS_PARQUET, "accepted_threshold": in_effect},
        "placement": loaded.placement.describe() if loaded.placement else None,
        "product_search": search,
        "config": cfg.to_dict(),
        "elapsed_s": round(time.time() - start, 2),
    }
    out = storage.normalize(cfg.out)
    title = f"RFNet on {report['n']} images ({split_info['mode']}): macro F1 {report['macro_f1']:.3f}"
    storage.write_bytes(
        storage.join(out, CONFUSION_PNG), render_confusion(np.array(report["confusion"]), title=title)
    )
    labels = data.label.numpy()
    storage.write_bytes(
        storage.join(out, ERRORS_PNG),
        render_errors(data.image.numpy(), labels, probs, title=f"misclassified: {title}"),
    )
    images = [_relative(samples[i].image, root) for i in data.index.tolist()]
    storage.write_parquet(
        storage.join(out, PREDICTIONS_PARQUET), prediction_table(images, labels, probs, in_effect)
    )
    storage.write_text(storage.join(out, EVAL_JSON), json.dumps(result, indent=2))
    logger.info("%s; wrote %s", title, storage.join(out, EVAL_JSON))
    return result
