"""The trainer as its own process: what `serve` starts as a child, and what `reelrank
train` (or `serve --role trainer`) runs in the foreground."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

import torch

from ..config import Settings
from ..storage import open_store
from ..storage.params import open_params
from .trainer import OnlineTrainer


def run_trainer_process(settings: Settings) -> NoReturn:
    """Entry point of the trainer process that `serve` starts (or `reelrank train`); once
    stopped (SIGTERM or SIGINT) and checkpointed, the process exits."""
    from threadpoolctl import threadpool_limits

    # One core's worth, as serving's threads are: intra-op threads (torch's, and the BLAS
    # behind numpy's products, such as the champion's) would spin against the API process.
    torch.set_num_threads(1)
    threadpool_limits(1)
    if settings.trainer_nice:
        os.nice(settings.trainer_nice)  # training yields the CPU to serving
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s trainer: %(message)s"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    store = open_store(settings.store_url(), settings.sqlite_synchronous)
    params = open_params(settings.params_channel_url())
    trainer = OnlineTrainer(settings, store, params, checkpoint_path(settings))
    try:
        trainer.run(stop)
    finally:
        params.close()
        store.close()
    # Checkpointed and closed: exit here, without tearing the trainer down object by
    # object (seconds at a million videos' open impressions) or the interpreter after it.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


def checkpoint_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "model" / "trainer.pt"
