"""Training on several devices and machines: the `tf.distribute` strategy, this worker's place, precision.

`--strategy` picks the strategy (`STRATEGIES`):
    auto          MirroredStrategy over every GPU when more than one is visible, else Keras' default (one
                  device, no `tf.distribute` wrapper: exactly the single-device training)
    one_device    `tf.distribute.OneDeviceStrategy` on the first GPU, else the CPU
    mirrored      `tf.distribute.MirroredStrategy`: every GPU of this machine (the CPU when there is none)
    multi_worker  `tf.distribute.MultiWorkerMirroredStrategy`, configured by the `TF_CONFIG` environment
                  variable (one process per machine; see docs/SCALING.md)

The batch rule: `batch_size` is the *global* batch, split evenly across the replicas, and the learning rate
is the configured one, unchanged. A configuration then means the same optimisation on one device or on
eight (same images per step, same schedule, same number of steps), so a run may resume on another number
of workers and the accuracies of docs/BENCHMARKS.md still apply. To use more devices for a bigger batch,
raise `--batch_size` and `--learning_rate` yourself (for Adam, about the square root of the batch ratio).

Worker 0 (the `chief` task, else `worker` 0) is the chief: only it writes the run folder and the saved
model; the other workers write what Keras' callbacks write to `<model_dir>/.worker-<index>/`, removed at
the end (as in TensorFlow's multi-worker Keras tutorial).
"""

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Callable, Optional, Sequence

import numpy as np

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "auto", "mixed_float16", "mixed_bfloat16")
WORKER_SEED_STRIDE = 1_000_000_007  # worker i draws synthetic captchas from seed + i * stride


@dataclasses.dataclass
class Workers:
    """The strategy of this run (None: Keras' default) and this process's place among the workers."""

    strategy: object = None
    count: int = 1  # worker processes, usually one per machine
    index: int = 0  # 0 is the chief
    element_spec: object = None  # of this worker's training batches, once `distribute` has built them

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    def scope(self):
        """Where the model, its optimizer and its restored state must be created."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def per_replica_batch(self, global_batch: int) -> int:
        if global_batch % self.replicas:
            raise ValueError(f"batch_size is the global batch and must split evenly across the {self.replicas} "
                             f"replicas of --strategy. Received: batch_size={global_batch}")
        return global_batch // self.replicas

    def sum(self, values: Sequence[float]) -> np.ndarray:
        """The element-wise sum of `values` over every worker (all-reduced: every worker gets the same).

        With one worker, `values` itself. Every worker must call it at the same point, as with any collective.
        """
        values = np.asarray(values, dtype=np.float64)
        if self.count == 1:
            return values
        import tensorflow as tf

        local = len(self.strategy.extended.worker_devices)  # replicas on this worker: count it once
        distributed = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(values if context.replica_id_in_sync_group % local == 0
                                        else np.zeros_like(values)))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, distributed, axis=None).numpy()

    def gather(self, value: float) -> np.ndarray:
        """Every worker's `value`, indexed by worker (an all-gather built from `sum`)."""
        slots = np.zeros(self.count)
        slots[self.index] = value
        return self.sum(slots)

    def broadcast(self, values: Sequence[float]) -> np.ndarray:
        """The chief's `values`, on every worker."""
        values = np.asarray(values, dtype=np.float64)
        return self.sum(values if self.is_chief else np.zeros_like(values))

    def distribute(self, make_dataset: Callable, batch_size: int):
        """Training batches for `fit`: `make_dataset(per_replica_batch, pipeline_index, pipelines)` per worker.

        Under a strategy this is `distribute_datasets_from_function`: every worker builds its own pipeline
        (its own synthetic stream, its own shard of files) batched by the per-replica batch, and nothing is
        auto-sharded (that function never shards).
        """
        per_replica = self.per_replica_batch(batch_size)

        def build(pipeline: int, pipelines: int):
            dataset = make_dataset(per_replica, pipeline, pipelines)
            self.element_spec = dataset.element_spec
            return dataset

        if self.strategy is None:
            return build(0, 1)
        return self.strategy.distribute_datasets_from_function(
            lambda context: build(context.input_pipeline_id, context.num_input_pipelines))


def make(name: str) -> Workers:
    """The strategy `name` (one of `STRATEGIES`) and this worker's place; create it before any other TF op."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        return Workers(tf.distribute.MirroredStrategy()) if len(gpus) > 1 else Workers()
    if name == "one_device":
        return Workers(tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0"))
    if name == "mirrored":
        return Workers(tf.distribute.MirroredStrategy())
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = cluster.get("task", {})
    count, index = worker_place(cluster.get("cluster", {}), task.get("type"), task.get("index", 0))
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if count > 1:
        from kcaptcha.training import keras_compat

        keras_compat.average_logs_across_workers()
    return Workers(strategy, count, index)


def worker_place(cluster: dict, task_type: Optional[str], task_index: int):
    """(number of workers, this one's index) from TF_CONFIG's cluster and task, numbered as TF's input
    pipelines are: the `chief` task first, then the `worker` tasks."""
    chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
    if task_type in (None, "chief"):
        return max(1, chiefs + workers), 0
    if task_type != "worker":
        raise ValueError("multi_worker training runs `chief` and `worker` tasks only (no evaluator or parameter "
                         f"server). Received: TF_CONFIG task type {task_type!r}")
    if not 0 <= task_index < workers:
        raise ValueError(f"TF_CONFIG's task index must name one of its {workers} workers. Received: {task_index}")
    return chiefs + workers, chiefs + task_index


def data_seed(seed: int, worker_index: int) -> int:
    """The seed of worker `worker_index`'s synthetic captchas and augmentation: distinct per worker.

    Worker 0 keeps `seed`, so a run on one worker draws exactly what it drew before strategies existed.
    """
    return seed + worker_index * WORKER_SEED_STRIDE


def worker_dir(model_dir: str, index: int) -> str:
    """Where worker `index` writes: the run folder for the chief, a private folder inside it for the others."""
    return model_dir if index == 0 else os.path.join(model_dir, f".worker-{index}")


def start_worker_dir(model_dir: str, index: int) -> None:
    """Gives a worker other than the chief a fresh folder holding a copy of the chief's backup, so that its
    `BackupAndRestore` resumes at the same step and epoch as the chief's (after `fresh`, the chief has
    already cleared its backup: every worker starts over)."""
    if index == 0:
        return
    folder = worker_dir(model_dir, index)
    shutil.rmtree(folder, ignore_errors=True)
    if os.path.isdir(os.path.join(model_dir, "backup")):
        shutil.copytree(os.path.join(model_dir, "backup"), os.path.join(folder, "backup"))


def precision_policy(name: str) -> Optional[str]:
    """The Keras dtype policy of `--mixed_precision` (None for float32); `auto` picks by the hardware.

    float16 where a GPU computes it fast (with loss scaling, which Keras adds); bfloat16 on CPUs, which
    need no loss scaling and gain only where the CPU has bfloat16 instructions (docs/SCALING.md).
    """
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(PRECISIONS)}. Received: mixed_precision={name!r}")
    if name == "float32":
        return None
    if name == "auto":
        import tensorflow as tf

        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    return name


@contextlib.contextmanager
def precision(name: str):
    """Builds models inside the block with `--mixed_precision`'s policy; restores the previous one after."""
    import keras

    policy = precision_policy(name)
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def float32_copy(model, config):
    """`model` rebuilt with float32 layers and the same weights: what is saved after mixed-precision training,
    so that reading (CPU, ONNX, TFLite) never computes in float16."""
    from kcaptcha import models

    if not config.mixed_precision or precision_policy(config.mixed_precision) is None:
        return model
    with precision("float32"):
        copy = models.new_model(config)  # compiled, as a model trained in float32 is saved
    copy.set_weights(model.get_weights())
    return copy


def prepare_fit(model, workers: Workers) -> None:
    """Builds the loss and optimizer state from the batches' shapes before `fit`, under several workers.

    Keras' fit would build them by all-reducing the first (images, labels) batch, which
    MultiWorkerMirroredStrategy cannot do (`keras_compat.build_before_fit`). `Workers.distribute` must have
    built this worker's batches.
    """
    if workers.count == 1:
        return
    from kcaptcha.training import keras_compat

    keras_compat.build_before_fit(model, workers.strategy, workers.element_spec)
