"""Three ways to run the same step: ``single`` (jit), ``pmap`` and ``sharded`` (jit over a mesh).

- ``single``: one device, ``jax.jit`` with the state donated.
- ``pmap``: the state replicated on every local device, the batch split on a leading device
  axis, ``axis_name="batch"``: the step ``pmean``s gradients and the model's BatchNorm
  ``pmean``s its statistics (cross-replica BatchNorm, as the Flax ImageNet example).
  ``per_device_batch_norm`` keeps each device's statistics local ("ghost" batches) and
  averages the running statistics only when they are read (evaluation, checkpoints).
- ``sharded``: one ``Mesh`` over every device of every process with a ``data`` axis; the state
  replicated with ``NamedSharding``, the batch split along ``data``; XLA inserts the
  collectives and BatchNorm sees the global batch. Multi-host ready: each process feeds its
  own rows through ``jax.make_array_from_process_local_data``.

Steps compile with the XLA ``compiler_options`` given (none by default); the training loop passes
``cnn.layers.cpu_kernels.compiler_options()`` when the CPU kernels are on.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MODES = ("single", "pmap", "sharded")
AXIS_NAME = "batch"  # the pmap axis
MESH_AXIS = "data"  # the mesh axis of data parallelism

class _PmapCompiledWithOptions:
    """``jax.pmap(fn, ...)`` whose executables compile with XLA options (``pmap`` takes none itself).

    One executable per argument signature (tree structure, shapes and dtypes), compiled on first use.
    """

    def __init__(self, pmapped: Callable, options: Dict[str, Any]):
        self._pmapped, self._options, self._executables = pmapped, options, {}

    def lower(self, *args):
        return self._pmapped.lower(*args)

    def __call__(self, *args):
        leaves, tree = jax.tree.flatten(args)
        key = (tree, tuple((np.shape(x), str(getattr(x, "dtype", type(x)))) for x in leaves))
        if key not in self._executables:
            self._executables[key] = self._pmapped.lower(*args).compile(self._options)
        return self._executables[key](*args)


class Parallel:
    """Places state and batches, and compiles steps, for one of ``MODES``."""

    def __init__(self, mode: str, *, per_device_batch_norm: bool = False,
                 compiler_options: Optional[Dict[str, Any]] = None):
        if mode not in MODES:
            raise ValueError(f"parallel={mode!r}; expected one of {', '.join(MODES)}")
        if per_device_batch_norm and mode != "pmap":
            raise ValueError(f"per_device_batch_norm needs parallel='pmap' (got {mode!r})")
        self.mode = mode
        self.per_device_batch_norm = per_device_batch_norm
        self.compiler_options = dict(compiler_options or {})  # XLA options every step compiles with
        self.local_devices = jax.local_devices()
        if mode == "single":
            if jax.process_count() > 1:
                raise ValueError(f"parallel='single' runs on one device of one process; {jax.process_count()} processes "
                                 "were started: use 'sharded' or 'pmap'")
            self.local_devices = self.local_devices[:1]
        if mode == "pmap":  # a leading axis of one row per local device
            self.device_axis = NamedSharding(Mesh(np.asarray(self.local_devices), ("devices",)), PartitionSpec("devices"))
        if mode == "sharded":
            self.mesh = Mesh(np.asarray(jax.devices()), (MESH_AXIS,))
            self.replicated = NamedSharding(self.mesh, PartitionSpec())
            self.data_sharding = NamedSharding(self.mesh, PartitionSpec(MESH_AXIS))
            self.stacked_sharding = NamedSharding(self.mesh, PartitionSpec(None, MESH_AXIS))  # [k, B, ...]

    @property
    def axis_name(self) -> Optional[str]:
        """The name the step reduces over (pmap only)."""
        return AXIS_NAME if self.mode == "pmap" else None

    @property
    def model_axis_name(self) -> Optional[str]:
        """What a model's BatchNorm should ``pmean`` over: the pmap axis unless statistics stay per device."""
        return AXIS_NAME if self.mode == "pmap" and not self.per_device_batch_norm else None

    @property
    def num_devices(self) -> int:
        """Devices one global batch is split over."""
        if self.mode == "single":
            return 1
        return len(self.local_devices) * jax.process_count() if self.mode == "pmap" else jax.device_count()

    def check_batch(self, global_batch: int, what: str = "training.batch_size") -> int:
        """The per-process batch, or a clear error when the devices cannot split ``global_batch``."""
        devices = self.num_devices
        if not isinstance(global_batch, int) or global_batch < 1 or global_batch % devices:
            ok = max(devices, (int(global_batch) // devices) * devices) if isinstance(global_batch, int) else devices
            raise ValueError(
                f"{what}={global_batch!r} cannot be split evenly over {devices} devices ({self.mode}); "
                f"use a positive multiple of {devices}, e.g. {ok}"
            )
        return global_batch // jax.process_count()

    # --- state -------------------------------------------------------------------------------
    def init(self, init_fn: Callable[[jax.Array], Any], rng: jax.Array) -> Any:
        """Runs ``init_fn(rng)`` so the state is created where it lives (never a host copy of it)."""
        if self.mode == "sharded":
            return jax.jit(init_fn, out_shardings=self.replicated)(rng)
        state = jax.jit(init_fn)(rng)
        return self.place(state)

    def place(self, state: Any) -> Any:
        """Puts a host (or single-device) state where the steps expect it."""
        if self.mode == "single":
            return jax.device_put(state, self.local_devices[0])
        if self.mode == "pmap":
            count = len(self.local_devices)
            stack = lambda x: jax.device_put(jnp.broadcast_to(jnp.asarray(x)[None], (count, *jnp.shape(x))), self.device_axis)
            return jax.tree.map(stack, state)
        return jax.device_put(state, self.replicated)

    def abstract_state(self, state_shapes: Any) -> Any:
        """``ShapeDtypeStruct``s with the shardings a restored state should get."""
        sharding = self.replicated if self.mode == "sharded" else jax.sharding.SingleDeviceSharding(self.local_devices[0])
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), state_shapes)

    def unreplicate(self, state: Any) -> Any:
        """One copy of the state (pmap: the first device's, statistics averaged if kept per device)."""
        if self.mode != "pmap":
            return state
        if self.per_device_batch_norm:
            state = self.sync_batch_stats(state)
        if jax.process_count() > 1:  # host-local arrays cannot be saved as global ones: hand over numpy
            return jax.tree.map(lambda x: np.asarray(jax.device_get(x[0])), state)
        return jax.tree.map(lambda x: x[0], state)

    def sync_batch_stats(self, state: Any) -> Any:
        """pmap: replaces every device's running statistics by their mean over devices."""
        if self.mode != "pmap" or not state.batch_stats:
            return state
        mean = jax.pmap(lambda s: jax.lax.pmean(s, AXIS_NAME), AXIS_NAME)(state.batch_stats)
        return state.replace(batch_stats=mean)

    # --- batches -----------------------------------------------------------------------------
    def put_batch(self, batch: dict) -> dict:
        """This process's rows (numpy) -> device arrays laid out for the compiled step."""
        if self.mode == "single":
            return jax.device_put(batch, self.local_devices[0])
        if self.mode == "pmap":
            count = len(self.local_devices)

            def split(x):
                if x.shape[0] % count:
                    raise ValueError(f"a batch of {x.shape[0]} rows cannot be split over {count} local devices")
                return jax.device_put(x.reshape(count, x.shape[0] // count, *x.shape[1:]), self.device_axis)

            return jax.tree.map(split, batch)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.data_sharding, x), batch)

    def put_batches(self, batches: dict) -> dict:
        """``k`` steps of this process's rows (numpy ``[k, b, ...]``) -> device arrays for ``compile_train_steps``."""
        if self.mode == "single":
            return jax.device_put(batches, self.local_devices[0])
        if self.mode == "pmap":
            count = len(self.local_devices)

            def split(x):
                if x.shape[1] % count:
                    raise ValueError(f"a batch of {x.shape[1]} rows cannot be split over {count} local devices")
                per_device = x.reshape(x.shape[0], count, x.shape[1] // count, *x.shape[2:])
                return jax.device_put(np.swapaxes(per_device, 0, 1), self.device_axis)

            return jax.tree.map(split, batches)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.stacked_sharding, x), batches)

    def put_global_batch(self, batch: dict) -> dict:
        """A batch every process holds whole (``[B, ...]``), split along ``B`` over the devices (jit modes)."""
        if self.mode == "single":
            return jax.device_put(batch, self.local_devices[0])
        if self.mode == "pmap":
            raise ValueError("batches held whole by every process are for parallel='single' or 'sharded'")
        return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, self.data_sharding, lambda i: x[i]), batch)

    def put_dataset(self, arrays: dict) -> dict:
        """A whole split (numpy) onto every device that computes, whole (jit modes): what the steps gather from."""
        if self.mode == "single":
            return jax.device_put(arrays, self.local_devices[0])
        if self.mode == "pmap":
            raise ValueError("a split held on the device is for parallel='single' or 'sharded'")
        return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, self.replicated, lambda i: x[i]), arrays)

    def fetch(self, tree: Any) -> Any:
        """Device results -> numpy on the host (pmap: the first replica; they are identical after psum)."""
        tree = jax.device_get(tree)
        return jax.tree.map(lambda x: np.asarray(x)[0], tree) if self.mode == "pmap" else jax.tree.map(np.asarray, tree)

    # --- steps -------------------------------------------------------------------------------
    def compile_train_step(self, step: Callable) -> Callable:
        """``step(state, batch, rng) -> (state, metrics)`` compiled for this mode, the state donated."""
        options = self.compiler_options or None
        if self.mode == "single":
            return jax.jit(step, donate_argnums=0, compiler_options=options)
        if self.mode == "pmap":
            return self._pmap(jax.pmap(step, axis_name=AXIS_NAME, in_axes=(0, 0, None), donate_argnums=0))
        return jax.jit(
            step,
            in_shardings=(self.replicated, self.data_sharding, self.replicated),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=0,
            compiler_options=options,
        )

    def compile_train_steps(self, steps: Callable, *, with_data: bool = False) -> Callable:
        """``steps(state, batches, rng[, data]) -> (state, metrics)`` over ``[k, B, ...]`` batches, state donated.

        ``with_data``: a fourth argument, the split held on the device (``put_dataset``), never donated.
        """
        options = self.compiler_options or None
        if self.mode == "single":
            return jax.jit(steps, donate_argnums=0, compiler_options=options)
        if self.mode == "pmap":
            if with_data:
                raise ValueError("a split held on the device is for parallel='single' or 'sharded'")
            return self._pmap(jax.pmap(steps, axis_name=AXIS_NAME, in_axes=(0, 0, None), donate_argnums=0))
        in_shardings = (self.replicated, self.stacked_sharding, self.replicated) + ((self.replicated,) if with_data else ())
        return jax.jit(steps, in_shardings=in_shardings, out_shardings=(self.replicated, self.replicated),
                       donate_argnums=0, compiler_options=options)

    def compile_indexed_eval_step(self, step: Callable) -> Callable:
        """``step(state, batch, data) -> sums`` for a batch of indices into a split held on the device (jit modes)."""
        options = self.compiler_options or None
        if self.mode == "single":
            return jax.jit(step, compiler_options=options)
        if self.mode == "pmap":
            raise ValueError("a split held on the device is for parallel='single' or 'sharded'")
        return jax.jit(step, in_shardings=(self.replicated, self.data_sharding, self.replicated),
                       out_shardings=self.replicated, compiler_options=options)

    def compile_eval_step(self, step: Callable) -> Callable:
        """``step(state, batch) -> metrics`` compiled for this mode."""
        options = self.compiler_options or None
        if self.mode == "single":
            return jax.jit(step, compiler_options=options)
        if self.mode == "pmap":
            return self._pmap(jax.pmap(step, axis_name=AXIS_NAME))
        return jax.jit(step, in_shardings=(self.replicated, self.data_sharding), out_shardings=self.replicated,
                       compiler_options=options)

    def _pmap(self, pmapped: Callable) -> Callable:
        return _PmapCompiledWithOptions(pmapped, self.compiler_options) if self.compiler_options else pmapped
