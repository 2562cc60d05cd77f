"""What a worker fits and scores besides the network's weights: the descriptor statistics, the
descriptor trees (and their refit after training), and the validation confusion matrices."""

from __future__ import annotations

import itertools
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.device import autocast
from pipelines.labels import NUM_CLASSES
from rfnet import metrics
from rfnet.checkpoint import save_rfnet
from rfnet.config import OptimConfig, TrainRFNetConfig
from rfnet.model import RFNet
from rfnet.train.collectives import all_reduce
from rfnet.train.steps import class_weights
from rfnet.trees import TreeParams, fit_trees

logger = logging.getLogger(__name__)


def fit_descriptor_stats(model: RFNet, batches) -> None:
    """Standardise the product descriptor with the training set's per-feature mean and std (summed
    over all workers, so every worker gets the same); no-op unless ``descriptor_norm="data"``."""
    c = model.config
    if not (c.use_descriptor and c.descriptor_norm == "data"):
        return
    size = c.descriptor_size
    sums = torch.zeros(2 * size + 1, dtype=torch.float64)
    with torch.inference_mode():
        for b in batches:
            m = b["maps"]
            d = m.get("descriptor")
            if d is None:
                d = model.raw_descriptor(b["image"], m)
            d = d[b["has_product"]].double().cpu()
            sums += torch.cat([d.sum(0), (d**2).sum(0), torch.tensor([float(len(d))], dtype=torch.float64)])
    sums = all_reduce(sums)
    n = float(sums[-1])
    if n < 2:
        return
    mean = sums[:size] / n
    std = (sums[size:-1] / n - mean**2).clamp(min=0).sqrt().clamp(min=1e-4)
    model.descriptor_mean.copy_(mean.float())
    model.descriptor_std.copy_(std.float())


def fit_descriptor_trees(
    model: RFNet, batches, oc: OptimConfig, *, install: bool = True, folds: int = 0
) -> tuple[int, torch.Tensor | None]:
    """Fit ``model``'s boosted trees (``descriptor_trees`` > 0) on the raw descriptors of the
    unaugmented training ``batches`` with a product, each row weighted like its loss
    (``balance="weights"``), and (``install``) install them with weight 0: the validation picks it.

    ``folds`` > 1 also returns every training example's out-of-fold scores ``(N, K)``: each from
    trees fitted on the other folds (zeros for examples without a product), what the network
    trains on top of with ``descriptor_tree_mix="offset"``. Returns ``(rows fitted on, scores or
    None)``; 0 rows (too few examples with a product): nothing is fitted."""
    c = model.config
    xs, ys, has = [], [], []
    with torch.inference_mode():
        for b in batches:
            d = b["maps"].get("descriptor")
            if d is None:
                d = model.raw_descriptor(b["image"], b["maps"])
            xs.append(d.float().cpu())
            ys.append(b["label"].cpu())
            has.append(b["has_product"].cpu())
    keep = torch.cat(has).numpy()
    x, y = torch.cat(xs).numpy()[keep], torch.cat(ys).numpy()[keep]
    if len(y) < NUM_CLASSES * max(2, folds):
        logger.warning("only %d training examples with a product: descriptor trees not fitted", len(y))
        return 0, None
    weight = class_weights(y)[y] if oc.balance == "weights" else None

    def params(seed: int) -> TreeParams:
        return TreeParams(rounds=c.descriptor_trees, depth=c.descriptor_tree_depth, seed=seed)

    if install:
        model.set_trees(fit_trees(x, y, NUM_CLASSES, params(oc.seed), weight=weight))
        model.tree_weight.zero_()
    if folds < 2:
        return len(y), None
    part = np.random.default_rng(oc.seed).permutation(len(y)) % folds
    scores = np.zeros((len(y), NUM_CLASSES), np.float32)
    for k in range(folds):
        fit = part != k
        trees = fit_trees(
            x[fit], y[fit], NUM_CLASSES, params(oc.seed + 1 + k), None if weight is None else weight[fit]
        )
        scores[~fit] = trees.logits(torch.from_numpy(x[~fit])).numpy()
    out = torch.zeros(len(keep), NUM_CLASSES)
    out[torch.from_numpy(keep)] = torch.from_numpy(scores)
    return len(y), out


def evaluate_batches(
    model: RFNet, batches, placement, tree_weights: tuple[float, ...] = (0.0,)
) -> tuple[np.ndarray, float, int]:
    """``(confusions (W, K, K) int64, summed loss, count)`` over this worker's validation batches:
    one confusion matrix per mixing weight in ``tree_weights`` (:meth:`RFNet.mix_trees`; a model
    without trees has one, of its logits). The loss is of the logits training sees."""
    core: RFNet = model.module if hasattr(model, "module") else model
    trees_on = bool(core.config.descriptor_trees)
    weights = tree_weights if trees_on else (0.0,)
    cms = np.zeros((len(weights), NUM_CLASSES, NUM_CLASSES), np.int64)
    loss_sum, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for b in batches:
            with autocast(placement):
                net, trees, has_product = core.logit_parts(
                    b["image"], b["product"], b["has_product"], core.tokenize(b["caption"]), maps=b["maps"]
                )
            trained = net  # what the training loss sees (see RFNet.forward)
            if trees is not None and core.config.descriptor_tree_mix == "offset":
                trained = net + trees.to(net.dtype) * has_product.to(net.dtype).view(-1, 1)
            loss_sum += float(F.cross_entropy(trained.float(), b["label"], reduction="sum"))
            count += int(b["label"].numel())
            labels = b["label"].cpu().numpy()
            for i, w in enumerate(weights):
                logits = net if trees is None else core.mix_trees(net, trees, has_product, w)
                cms[i] += metrics.confusion_matrix(labels, logits.argmax(dim=1).cpu().numpy(), NUM_CLASSES)
    return cms, loss_sum, count


def refit_saved_trees(cfg: TrainRFNetConfig, data, device: str = "cpu") -> None:
    """Refit the descriptor trees of the best model saved under ``cfg.out`` on ``data``'s training
    and validation examples, keep the tree weight validation chose, and save it again (weights
    first, meta.json last, with ``train.trees_refit`` saying on how many examples). ``device``:
    where ``data``'s batches are (the model measures descriptors that were not cached there)."""
    from rfnet.checkpoint import load_rfnet

    t0 = time.time()
    loaded = load_rfnet(cfg.out, device=device, dtype="float32")
    model, weight = loaded.model, loaded.model.tree_weight.clone()
    batches = itertools.chain(data.stat_batches(), data.val_batches())
    rows, _ = fit_descriptor_trees(model, batches, cfg.optim)
    if not rows:
        return
    model.tree_weight.copy_(weight)
    meta = dict(loaded.meta)
    meta["train"] = {
        **meta.get("train", {}),
        "trees_refit": {"examples": rows, "seconds": round(time.time() - t0, 1)},
    }
    save_rfnet(model, model.config, cfg.out, meta=meta)
    logger.info(
        "descriptor trees refitted on %d training + validation examples in %.1f s", rows, time.time() - t0
    )
