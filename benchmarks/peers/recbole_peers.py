"""RecBole's BPR, LightGCN and SASRec under the peers protocol, in RecBole's interpreter.

RecBole 1.2.1 pins ray<=2.6.3 (no wheels past Python 3.11), so it lives in its own
virtualenv (benchmarks/peers/setup_recbole.sh); run_peers.py starts this module there.
It needs neither reelrank's dependencies nor an install of reelrank: the protocol code
(benchmarks/peers/protocol.py and reelrank/evaluate/metrics.py, numpy only) is imported
from the source tree.

For each model and each configuration (RecBole's defaults first): train on the
validation split's train part, evaluate the validation NDCG@10 every `--eval-every`
epochs, stop after `--patience` evaluations without improvement (RecBole's own
early-stopping rule, on our validation split) or at `--max-epochs`. The configuration with
the best validation NDCG@10 is trained again on the whole train part for its best epoch
count, and ranks the catalog for the test users. The output JSON holds the top-k lists
(scored by run_peers.py with the same code as every other system) and the tuning record.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import numpy as np  # noqa: E402
from benchmarks.peers.protocol import (  # noqa: E402
    PROTOCOLS,
    Split,
    load_ratings,
    make_split,
    score_rankings,
    top_k,
    validation_split,
)


def compatibility_shims() -> None:
    """Let RecBole 1.2.1 run on numpy 2 and scipy >= 1.15 without editing it."""
    # Config.compatibility_settings() aliases np.float = np.float_ (and int_, complex_,
    # object_, str_, unicode_); numpy 2 removed the trailing-underscore aliases, so the
    # alias itself raises. Give them back their numpy 1 meaning.
    for name, value in {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
    }.items():
        if not hasattr(np, name):
            setattr(np, name, value)

    # LightGCN.get_norm_adj_mat fills a dok_matrix through the private dok_matrix._update,
    # which scipy removed. The same matrix (binary user-item adjacency, symmetric
    # D^-1/2 A D^-1/2 normalisation, epsilon 1e-7 on the degree) built with coo instead.
    import scipy.sparse as sp
    import torch
    from recbole.model.general_recommender import lightgcn

    def get_norm_adj_mat(self: Any) -> torch.Tensor:
        n = self.n_users + self.n_items
        inter = self.interaction_matrix
        rows = np.concatenate([inter.row, inter.col + self.n_users])
        cols = np.concatenate([inter.col + self.n_users, inter.row])
        a = sp.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n)).tocsr()
        a.data[:] = 1.0  # a repeated pair counts once, as in the dict RecBole builds
        degree = np.asarray((a > 0).sum(axis=1)).ravel() + 1e-7
        d = sp.diags(np.power(degree, -0.5))
        norm = sp.coo_matrix(d @ a @ d)
        index = torch.LongTensor(np.array([norm.row, norm.col]))
        return torch.sparse_coo_tensor(index, torch.FloatTensor(norm.data), torch.Size(norm.shape))

    lightgcn.LightGCN.get_norm_adj_mat = get_norm_adj_mat


# RecBole's documented defaults first (recbole/properties/model/*.yaml and overall.yaml),
# then at most three variations; every configuration shares the overall defaults
# (Adam, learning_rate 0.001, train_batch_size 2048, one uniform negative for BPR-loss
# models) unless it says otherwise.
CONFIGS: dict[str, list[dict[str, Any]]] = {
    "BPR": [
        {"embedding_size": 64},
        {"embedding_size": 64, "learning_rate": 0.005},
        {"embedding_size": 128, "learning_rate": 0.005, "weight_decay": 1e-5},
    ],
    "LightGCN": [
        {"embedding_size": 64, "n_layers": 2, "reg_weight": 1e-05},
        {"embedding_size": 64, "n_layers": 3, "reg_weight": 1e-04},
        {"embedding_size": 64, "n_layers": 2, "reg_weight": 1e-05, "learning_rate": 0.005},
    ],
    "SASRec": [
        {
            "n_layers": 2,
            "n_heads": 2,
            "hidden_size": 64,
            "inner_size": 256,
            "hidden_dropout_prob": 0.5,
            "attn_dropout_prob": 0.5,
            "loss_type": "CE",
            "MAX_ITEM_LIST_LENGTH": 50,
        },
        {
            "n_layers": 2,
            "n_heads": 2,
            "hidden_size": 64,
            "inner_size": 256,
            "hidden_dropout_prob": 0.2,
            "attn_dropout_prob": 0.2,
            "loss_type": "CE",
            "MAX_ITEM_LIST_LENGTH": 50,
        },
    ],
}

BPR_NEGATIVES = {
    "distribution": "uniform",
    "sample_num": 1,
    "alpha": 1.0,
    "dynamic": False,
    "candidate_num": 0,
}


class Trained:
    """One RecBole model trained on one split's train part."""

    def __init__(self, model_name: str, params: dict[str, Any], split: Split, workdir: Path):
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_seed

        self.split = split
        self.name = model_name
        path = workdir / "peers"
        path.mkdir(parents=True, exist_ok=True)
        with (path / "peers.inter").open("w") as out:
            out.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for r in split.train:
                out.write(f"{r.user}\t{r.item}\t{r.ts}\n")
        sequential = model_name == "SASRec"
        config_dict = {
            "data_path": str(workdir),
            "checkpoint_dir": str(workdir / "saved"),
            "use_gpu": False,
            "show_progress": False,
            "state": "WARNING",
            # Every train interaction goes to training (RecBole's own split is bypassed:
            # the protocol's split is the only one). Time order matters for SASRec.
            "eval_args": {
                "split": {"RS": [1.0, 0.0, 0.0]},
                "order": "TO",
                "group_by": "user",
                "mode": "full",
            },
            "load_col": None,  # every column: SASRec orders by the timestamp
            "train_neg_sample_args": None if sequential else BPR_NEGATIVES,
            **params,
        }
        self.config = Config(model=model_name, dataset="peers", config_dict=config_dict)
        logging.getLogger().setLevel(logging.WARNING)
        init_seed(self.config["seed"], self.config["reproducibility"])
        self.dataset = create_dataset(self.config)
        self.train_data, _, _ = data_preparation(self.config, self.dataset)
        init_seed(self.config["seed"], self.config["reproducibility"])
        self.model = get_model(model_name)(self.config, self.train_data.dataset)
        self.trainer = get_trainer(self.config["MODEL_TYPE"], model_name)(self.config, self.model)
        self.epochs = 0
        tokens = self.dataset.field2token_id
        self.item_ids = np.array([tokens["item_id"][i] for i in split.catalog])
        self.user_ids = np.array([tokens["user_id"][u] for u in split.users])

    def train_epoch(self) -> float:
        loss = self.trainer._train_epoch(self.train_data, self.epochs, show_progress=False)
        self.epochs += 1
        return float(loss if not isinstance(loss, tuple) else sum(loss))

    def rank(self, k: int) -> dict[str, list[str]]:
        """Full-catalog scores for every evaluated user, through the model's own
        full_sort_predict, then the protocol's masking and top k."""
        import torch
        from recbole.data.interaction import Interaction

        self.model.eval()
        with torch.no_grad():
            fields: dict[str, torch.Tensor] = {"user_id": torch.tensor(self.user_ids)}
            if self.name == "SASRec":
                fields.update(self._histories())
            scores = self.model.full_sort_predict(Interaction(fields))
            scores = scores.view(len(self.user_ids), -1).numpy()
        return top_k(scores[:, self.item_ids], self.split, k)

    def _histories(self) -> dict[str, Any]:
        """Each user's last MAX_ITEM_LIST_LENGTH train items in time order, right-padded
        with 0 as RecBole's own sequence augmentation builds them."""
        import torch

        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
        tokens = self.dataset.field2token_id["item_id"]
        history: dict[str, list[int]] = {}
        for r in self.split.train:  # time order
            history.setdefault(r.user, []).append(tokens[r.item])
        seq = torch.zeros((len(self.split.users), max_len), dtype=torch.long)
        length = torch.zeros(len(self.split.users), dtype=torch.long)
        for i, user in enumerate(self.split.users):
            items = history[user][-max_len:]
            seq[i, : len(items)] = torch.tensor(items)
            length[i] = len(items)
        return {
            self.config["ITEM_ID_FIELD"] + self.config["LIST_SUFFIX"]: seq,
            self.config["ITEM_LIST_LENGTH_FIELD"]: length,
        }


def tune_and_test(
    model_name: str, split: Split, valid: Split, args: argparse.Namespace, log: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {"configs": []}
    started, cpu = time.perf_counter(), time.process_time()
    for params in CONFIGS[model_name][: args.budget]:
        t0, c0 = time.perf_counter(), time.process_time()
        with tempfile.TemporaryDirectory(prefix="recbole-peers-") as tmp:
            run = Trained(model_name, params, valid, Path(tmp))
            best, best_epoch, since, curve = -1.0, 0, 0, []
            best_metrics: dict[str, float] = {}
            every = 1 if model_name == "SASRec" else args.eval_every  # its epochs are long
            while run.epochs < args.max_epochs:
                run.train_epoch()
                out_of_time = time.perf_counter() - t0 > args.config_budget_s
                if run.epochs % every and not out_of_time and run.epochs < args.max_epochs:
                    continue
                got = score_rankings(run.rank(args.k), valid)
                curve.append([run.epochs, got["ndcg@10"]])
                log(f"{model_name} {params} epoch {run.epochs}: valid ndcg@10 {got['ndcg@10']}")
                if got["ndcg@10"] > best:
                    best, best_epoch, since, best_metrics = got["ndcg@10"], run.epochs, 0, got
                else:
                    since += 1
                    if since >= args.patience:
                        break
                if out_of_time:
                    log(f"{model_name}: the time budget of one configuration is spent")
                    break
        record["configs"].append(
            {
                "params": params,
                "valid": best_metrics,
                "best_epoch": best_epoch,
                "epochs_run": run.epochs,
                "curve": curve,
                "seconds": round(time.perf_counter() - t0, 1),
                "cpu_s": round(time.process_time() - c0, 1),
            }
        )
    record["tuning_s"] = round(time.perf_counter() - started, 1)
    record["tuning_cpu_s"] = round(time.process_time() - cpu, 1)
    chosen = max(record["configs"], key=lambda c: c["valid"]["ndcg@10"])
    record["chosen"] = {"params": chosen["params"], "epochs": chosen["best_epoch"]}
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="recbole-peers-") as tmp:
        run = Trained(model_name, chosen["params"], split, Path(tmp))
        for _ in range(chosen["best_epoch"]):
            run.train_epoch()
        record["test_rankings"] = run.rank(args.k)
    record["final_s"] = round(time.perf_counter() - t0, 1)
    record["final_cpu_s"] = round(time.process_time() - c0, 1)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="temporal")
    parser.add_argument("--data", required=True, help="folder with MovieLens ratings.csv")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--valid-share", type=float, help="default 0.1 (temporal) or 0.2 (users)")
    parser.add_argument("--budget", type=int, default=4, help="configurations per model")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--config-budget-s", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads `--key=value` options from argv too

    import torch

    torch.set_num_threads(args.threads)
    compatibility_shims()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    split = make_split(
        load_ratings(Path(args.data) / "ratings.csv"), args.protocol, args.test_share
    )
    share = args.valid_share or (0.1 if args.protocol == "temporal" else 0.2)
    valid = validation_split(split, share, args.protocol)
    from importlib.metadata import version

    out: dict[str, Any] = {
        "versions": {p: version(p) for p in ("recbole", "torch", "numpy", "scipy", "pandas")},
        "python": sys.version.split()[0],
        "users": split.users,
        "valid_users": valid.users,
        "models": {},
    }
    for name in args.models:
        out["models"][name] = tune_and_test(name, split, valid, args, log)
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
