"""Run `segment` tiles on Ray actors that hold the models (one per GPU, or N on CPU nodes).

Actors are built from a `PredictorSpec` (so the driver loads no model) and kept for the
process's lifetime, so a batch of scenes loads models once per actor. Results come back to
the driver, which keeps them in the tile store; outputs are assembled there exactly as in
process, hence identical. An actor that dies is restarted by Ray and its tiles retried; a
tile that still fails is sent to another actor, up to `retries` times, before the run
fails. Every node must be able to read the scene (a URL, or a path on a shared disk) and
resolve the models (a hub id in its cache, or a shared folder).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from terramask.errors import InputError, TerraMaskError
from terramask.methods.vocabulary import ClassVocabulary
from terramask.options import RayOptions
from terramask.pipeline.engines import PredictorSpec
from terramask.pipeline.segment_tiles import TileResult, compute_tile
from terramask.scene import Scene, Tile

IN_FLIGHT_PER_ACTOR = 2
_POOLS: dict[tuple, list[Any]] = {}
_CONNECTED: str | None = None  # the address this process joined


def import_ray() -> Any:
    """Ray, or an error that says how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError as exc:
        raise InputError(
            "`ray` needs Ray, which is not installed. Install it with "
            "pip install 'terramask[ray]' (or pip install 'ray>=2.40'), or leave out `ray` to "
            "run tiles in this process."
        ) from exc
    return ray


class TileWorker:
    """A Ray actor's state: the predictor, built once, and the scenes it has opened."""

    def __init__(self, spec: PredictorSpec) -> None:
        self.spec = spec
        self.predictor = None
        self.scenes: dict[tuple, Scene] = {}

    def ready(self) -> int:
        """Build the predictor now (so loading errors surface before tiles are sent)."""
        if self.predictor is None:
            self.predictor = self.spec.build()
        return os.getpid()

    def run(self, scene_state: dict, vocabulary: ClassVocabulary, tile: Tile) -> TileResult:
        self.ready()
        stretch = scene_state["stretch"]
        key = (scene_state["source"], tuple(scene_state["bands"]), repr(stretch))
        if key not in self.scenes:
            for old in self.scenes.values():  # one scene open at a time: batches are long
                old.close()
            self.scenes.clear()
            self.scenes[key] = Scene(
                scene_state["source"], bands=scene_state["bands"], stretch=scene_state["stretch"]
            )
        return compute_tile(self.scenes[key], tile, self.predictor, vocabulary)


class RayRunner:
    """Tiles on Ray actors, yielded as they finish (see the module docstring)."""

    def __init__(
        self,
        options: RayOptions,
        spec: PredictorSpec,
        scene: Scene,
        vocabulary: ClassVocabulary,
        *,
        retries: int = 2,
    ) -> None:
        self.ray = import_ray()
        self.address = options.address
        self.spec = spec
        self.scene_state = scene.__getstate__()
        self.vocabulary = vocabulary
        self.workers = options.workers
        self.retries = retries
        self.description = spec.description

    def run(self, tiles: Sequence[Tile]) -> Iterator[TileResult]:
        if not tiles:
            return
        ray = self.ray
        actors = self._actors()
        queue = list(tiles)
        attempts: dict[int, int] = {}
        running: dict[Any, tuple[int, Any, Tile]] = {}  # task -> (slot, actor, tile)

        def submit(slot: int) -> None:
            tile = queue.pop(0)
            ref = actors[slot].run.remote(self.scene_state, self.vocabulary, tile)
            running[ref] = (slot, actors[slot], tile)

        for _ in range(IN_FLIGHT_PER_ACTOR):
            for slot in range(len(actors)):
                if queue:
                    submit(slot)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            slot, actor, tile = running.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                raise _cause(exc, f"Tile {tile.index} failed on a Ray worker") from None
            except ray.exceptions.RayActorError as exc:
                attempts[tile.index] = attempts.get(tile.index, 0) + 1
                if attempts[tile.index] > self.retries:
                    release_workers()  # the next run (scene) starts with fresh actors
                    raise TerraMaskError(
                        f"Tile {tile.index} was tried {attempts[tile.index]} times and its Ray "
                        f"worker died each time (last: {str(exc).splitlines()[0][:200]}). Look "
                        "at the Ray logs (/tmp/ray/session_latest/logs) for the cause, e.g. "
                        "running out of memory; finished tiles are kept, so re-running resumes."
                    ) from None
                queue.insert(0, tile)
                self._replace(slot, actors, actor)
            else:
                yield result
            if queue:
                submit(slot)

    # -- actors -----------------------------------------------------------------------------

    def _actors(self) -> list[Any]:
        ray = self.ray
        _connect(ray, self.address)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = max(1, int(resources.get("CPU", 1)))
        count = self.workers or (gpus or max(1, cpus // 2))
        self._options = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // count)}
        need = (gpus and count > gpus) or (not gpus and count * self._options["num_cpus"] > cpus)
        if need:
            kind = f"{gpus} GPUs" if gpus else f"{cpus} CPUs"
            raise InputError(
                f"`RayOptions.workers` {count} asks for more than the Ray cluster has ({kind}): "
                "ask for fewer workers, or add nodes."
            )
        key = (self.address, self.spec, count)
        if key not in _POOLS:
            release_workers()  # one pool at a time: an idle pool would hold the resources
            actors = [self._new_actor() for _ in range(count)]
            try:
                _wait_ready(ray, actors)
            except BaseException:  # models that cannot load: free what the actors hold
                for actor in actors:
                    ray.kill(actor)
                raise
            _POOLS[key] = actors
        return _POOLS[key]

    def _new_actor(self) -> Any:
        remote = self.ray.remote(max_restarts=self.retries, max_task_retries=self.retries)(
            TileWorker
        )
        return remote.options(**self._options).remote(self.spec)

    def _replace(self, slot: int, actors: list[Any], dead: Any) -> None:
        """An actor whose restarts are used up is swapped for a fresh one, once per death
        (its other tasks fail too, but by then the slot holds the replacement)."""
        if actors[slot] is dead:
            self.ray.kill(dead)
            actors[slot] = self._new_actor()


def _cause(exc: Any, context: str) -> TerraMaskError:
    """A worker's TerraMask error as itself (a clear message); anything else, summarised."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, TerraMaskError):
        return cause
    return TerraMaskError(f"{context}: {str(exc).splitlines()[0][:300]}")


def release_workers() -> None:
    """Stop the actors this process started (their models go with them)."""
    if not _POOLS:
        return
    ray = import_ray()
    for actors in _POOLS.values():
        for actor in actors:
            ray.kill(actor)
    _POOLS.clear()


def _connect(ray: Any, address: str) -> None:
    """Join `address` (or start Ray here for "local"), once per process.

    Ray cannot move a process to another cluster once it has run actors (new actors die
    unscheduled), so a run that names another cluster than the one joined is refused.
    """
    global _CONNECTED
    if ray.is_initialized():
        if _CONNECTED not in (address, None):  # None: the caller started Ray; use it
            raise InputError(
                f"This process already runs tiles on Ray at {_CONNECTED}, and Ray cannot "
                f"switch a process to another cluster ({address}). Run it in a new process."
            )
        return
    _init(ray, address)
    _CONNECTED = address


def _init(ray: Any, address: str) -> None:
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError …
        where = "here" if address == "local" else f"to {address}"
        raise InputError(
            f"Ray could not start or connect {where}: {str(exc).splitlines()[0][:300]}. Use "
            "`RayOptions.address` local to start Ray on this machine, or give the address of a "
            "running cluster (HOST:6379, or ray://HOST:10001), as `ray start --head` printed it. A "
            "cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token "
            "here and its token (~/.ray/auth_token or RAY_AUTH_TOKEN)."
        ) from None


def _wait_ready(ray: Any, actors: list[Any]) -> None:
    """Every actor has built its predictor; a model that cannot load fails the run now."""
    try:
        ray.get([a.ready.remote() for a in actors])
    except ray.exceptions.RayTaskError as exc:
        raise _cause(exc, "A Ray worker could not build the models") from None
