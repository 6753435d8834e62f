"""Reference numbers for the evaluation protocol: FID/KID of real train images against real test images.

A generative model can at best match the data; the train-vs-test distance at the same sample count is the
floor a model's FID should be read against, and its drift with N shows the estimator's bias. Prints one
table row per (dataset, features, N), plus the feature networks' throughput.

    python benchmarks/reference_fid.py --datasets mnist,fashion-mnist --features classifier \
        --ns 500,1000,2000,5000,10000 --data-root /work/shared/data
    IMAGEGEN_INCEPTION=/work/shared/weights/inception-2015-12-05-features.pt \
        python benchmarks/reference_fid.py --datasets mnist --features inception --ns 200

Train images are a seeded random subset of the train split, test images a seeded random subset of the
test split (all 10,000 when N = 10,000); for N > 10,000 the test side stays at 10,000. Both sides go
through the evaluator's reference cache: the train side is the entry ``imagegen eval --ref train --n-ref
N_max`` (and ``imagegen ref-stats --split train --n N_max``) uses, the test side, when the largest N covers
the whole test split, the ``--ref test`` entry. So a long run (Inception at ~15 img/s on 2 CPU cores in ONNX
Runtime, ~5 in torch: 50k train images take ~1 h, or ~2.7 h) that is stopped continues where it stopped
when run again, and the throughput line counts only what this call computed. Smaller N take the first N of
the same seeded permutation.
"""

from __future__ import annotations

import argparse
import time

import torch

from _bench import run_main  # benchmarks/_bench.py, beside this script
from imagegen.device import pick_device
from imagegen.evaluation import EvalOptions
from imagegen.evaluation.reference import feature_net, load_reference, reference_features
from imagegen.metrics.fid import feature_stats, frechet_distance, kid
from imagegen.metrics.prdc import precision_recall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mnist,fashion-mnist")
    ap.add_argument("--features", default="classifier", help="inception,classifier")
    ap.add_argument("--ns", default="500,1000,2000,5000,10000")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pr", action="store_true", help="also precision/recall (k=3)")
    args = ap.parse_args()
    device = pick_device(args.device)
    ns = [int(v) for v in args.ns.split(",")]
    opts = EvalOptions(data_root=args.data_root, device=str(device), progress=True, batch_size=args.batch_size)
    rows = []
    for dataset in args.datasets.split(","):
        train, _, _, _ = load_reference(dataset, "train", None, args.data_root, None, None)
        test, _, _, test_desc = load_reference(dataset, "test", None, args.data_root, None, None)
        g = torch.Generator().manual_seed(0)
        train_perm = torch.randperm(train.shape[0], generator=g)
        test_perm = torch.randperm(test.shape[0], generator=g)
        for kind in args.features.split(","):
            net = feature_net(kind, dataset, opts, device)
            n_max = max(ns)
            t0 = time.time()
            # the evaluator's train subset of n_max images is this permutation's first n_max, sorted
            sub, _, _, sub_desc = load_reference(dataset, "train", n_max, args.data_root, None, None)
            f_sorted, _, _, info = reference_features(net, dataset, "train", sub, sub_desc, opts)
            order = train_perm[:n_max].sort().indices
            f_train = f_sorted[torch.argsort(order)]  # back to permutation order: f_train[:n] is a random n
            computed = 0 if info["ref_cache_hit"] else f_train.shape[0] - info.get("ref_resumed_rows", 0)
            print(f"# train features: {'cached' if info['ref_cache_hit'] else 'computed and cached'} "
                  f"({info['ref_cache']})", flush=True)
            if n_max >= test.shape[0]:  # the whole test split: the evaluator's cached reference features
                f_all, _, _, info = reference_features(net, dataset, "test", test, test_desc, opts)
                computed += 0 if info["ref_cache_hit"] else f_all.shape[0] - info.get("ref_resumed_rows", 0)
                print(f"# test features: {'cached' if info['ref_cache_hit'] else 'computed and cached'} "
                      f"({info['ref_cache']})", flush=True)
                f_test = f_all[test_perm]
            else:
                f_test = net.features(test[test_perm[:n_max]], args.batch_size, progress=True)
                computed += f_test.shape[0]
            seconds = time.time() - t0
            rate = computed / seconds
            print(f"# {dataset} {net.name} sha256 {net.sha256[:16]}: {rate:.1f} img/s on {device}, {net.runtime} "
                  f"({computed} images in {seconds:.0f} s)", flush=True)
            for n in ns:
                a, b = f_train[:n], f_test[:min(n, f_test.shape[0])]
                fid = frechet_distance(*feature_stats(a), *feature_stats(b))
                k_mean, k_std = kid(a, b, subsets=100, subset_size=1000)
                row = {"dataset": dataset, "features": net.name, "n_train": a.shape[0], "n_test": b.shape[0],
                       "fid": fid, "kid": k_mean, "kid_std": k_std, "img_per_s": rate, "runtime": net.runtime}
                if args.pr:
                    row["precision"], row["recall"] = precision_recall(b, a)
                rows.append(row)
                print(_fmt(row), flush=True)
    print()
    print("| dataset | features | N train | N test | FD | KID x 1e3 (std) |" + (" P / R |" if args.pr else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.pr else ""))
    for r in rows:
        pr = f" {r['precision']:.3f} / {r['recall']:.3f} |" if args.pr else ""
        print(f"| {r['dataset']} | {r['features']} | {r['n_train']} | {r['n_test']} | {r['fid']:.3f} | "
              f"{1e3 * r['kid']:.3f} ({1e3 * r['kid_std']:.3f}) |{pr}")


def _fmt(r: dict) -> str:
    return " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())


if __name__ == "__main__":
    run_main(main)
