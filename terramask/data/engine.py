"""The data-engine run: labelled rasters to instruction data, resumable, failures recorded.

A run goes through these stages (docs/data-engine.md):

1. *Scan*: every (image, label) pair is opened and its patches listed; each patch's
   categories are counted (those with at least `DataRecipe.min_pixels` pixels), which ranks
   patches for reasoning questions (the top `DataRecipe.reasoning_share`, ties kept). A pair
   that cannot be read (or whose label's size differs from the image's) is recorded as failed;
   the others go on.
2. Patches not yet done are processed in chunks of `CHUNK`, in order:
   instances and rules (`instances`); the MLLM mask check of each candidate (the first
   judge, when given); the per-class cap; instructions (interactive from the mask; referring
   and reasoning asked of the generator); cross-evaluation by every judge; writing.
   Within a chunk, each MLLM stage sends its requests together, `MLLMOptions.concurrency`
   at a time.
3. The lists (`{split}.json`), the GeoPackage of instances and `stats.json` are written from
   every patch's record.

Resuming: each finished patch leaves a record in `OUT/.terramask-data/patches/`. A re-run
with the same settings skips patches whose record exists and holds no failure; a patch in
which an MLLM request failed (after the client's retries) keeps what succeeded, records the
failure and is done again next time (replies that did arrive come from the reply cache).
Replies that are refusals or garbage are decisions, not failures: the sample is rejected
with the reason. Running with other settings into the same folder is refused unless
`overwrite`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terramask.atomic import write_atomic
from terramask.data.instances import INSTANCE_RULES, Instance, PatchInstances, find_instances
from terramask.data.instructions import (
    Reading,
    interactive_instruction,
    read_cues,
    read_expression,
    read_keep,
    read_question,
    read_scores,
)
from terramask.data.labels import IGNORED, UNLISTED, ClassTable, LabelRaster, Pair
from terramask.data.marks import outlined
from terramask.data.prompts import PromptSet
from terramask.data.tiling import PatchWindow, patch_windows
from terramask.data.writer import (
    INSTANCES_NAME,
    STATS_NAME,
    TASK_FOLDERS,
    remove_sample,
    slug,
    write_instances,
    write_json,
    write_listings,
    write_sample,
)
from terramask.errors import InputError, MLLMError, OutputExistsError, TerraMaskError
from terramask.options import DataRecipe, RasterOptions
from terramask.protocols import MLLM, MLLMReply, Progress
from terramask.stamps import file_stamp

#: The work folder inside the output: settings and one record per finished patch.
WORK_NAME = ".terramask-data"
#: Patches processed together (their MLLM requests are sent together).
CHUNK = 16
#: At most this many failures are listed in stats.json (all are counted).
LISTED_FAILURES = 100


@dataclass
class PatchJob:
    """A patch to make samples from: its pair, window, id, category count, whether it gets
    reasoning questions."""

    pair: Pair
    window: PatchWindow
    id: str
    categories: int
    reasoning: bool = False


@dataclass
class Sample:
    """One instruction being made for one target."""

    task: str
    kind: str
    question: str | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    judges: list[dict[str, Any]] = field(default_factory=list)
    rejected: str | None = None
    failed: str | None = None


@dataclass
class Target:
    """A kept instance of a patch and the samples made for it."""

    instance: Instance
    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def id_stem(self) -> str:
        return f"{slug(self.name)}{self.instance.index}"


@dataclass
class PatchWork:
    """A patch in the making: its pixels, instances, targets, and what went wrong."""

    job: PatchJob
    image: np.ndarray
    transform: Any
    crs: str | None
    found: PatchInstances
    names: Sequence[str]
    targets: list[Target] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    mllm: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)

    @property
    def categories(self) -> str:
        return ", ".join(self.names[k] for k in self.found.categories()) or "none"

    def fail(self, stage: str, target: Target | None, error: BaseException | str) -> None:
        self.failed.append({
            "stage": stage,
            "class": target.name if target else None,
            "instance": target.instance.index if target else None,
            "reason": str(error),
        })  # fmt: skip


#: A request: the client, the image, the prompt, and what to do with the reply (or error).
Request = tuple[MLLM, np.ndarray, str, PatchWork, Callable[[MLLMReply | TerraMaskError], None]]


def run_engine(
    pairs: Sequence[Pair],
    table: ClassTable,
    recipe: DataRecipe,
    prompts: PromptSet,
    tasks: Sequence[str],
    *,
    generator: MLLM | None,
    judges: Sequence[MLLM],
    raster: RasterOptions,
    output: Path,
    settings: dict[str, Any],
    overwrite: bool = False,
    progress: Progress | None = None,
    unpaired: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Build the data set into `output` (module notes); return the statistics written."""
    started = time.perf_counter()
    output = Path(output)
    work = _prepare_output(output, settings, overwrite)
    jobs, pair_failures, label_pixels = _scan(pairs, table, recipe, raster, progress)
    _warn_absent_classes(table, label_pixels, scanned=len(pairs) - len(pair_failures))
    _mark_reasoning(jobs, recipe.reasoning_share)
    digest = settings["digest"]
    records: dict[str, dict[str, Any]] = {}
    for job in jobs:
        record = _read_record(work, job.id)
        if (record is not None and record.get("digest") == digest and not record.get("failed")
                and record.get("sources") == sources_of(job.pair)):  # fmt: skip
            records[job.id] = record
    already_done = len(records)
    cap = Counter(name for r in records.values() for name in r.get("targets", []))
    pending = [job for job in jobs if job.id not in records]
    readers = _Readers(table, recipe, raster)
    run = _Run(recipe, prompts, tasks, generator, list(judges), output, work, digest, cap)
    done = already_done
    try:
        for start in range(0, len(pending), CHUNK):
            if progress:
                progress("patches", done, len(jobs))
            chunk = pending[start : start + CHUNK]
            for record in run.chunk(chunk, readers):
                records[record["patch"]] = record
            done += len(chunk)
            readers.keep({job.pair.name for job in pending[start + CHUNK : start + 2 * CHUNK]})
    finally:
        readers.close()
    if progress:
        progress("patches", len(jobs), len(jobs))
    ordered = [records[job.id] for job in jobs if job.id in records]
    samples = (s for r in ordered for s in r["samples"])
    listings = write_listings(output, recipe.split, tasks, samples)
    instances = write_instances(output, ordered)
    seconds = time.perf_counter() - started
    stats = _stats(
        ordered, jobs, tasks, table, recipe, settings, pair_failures, label_pixels,
        already_done=already_done, processed=len(pending), seconds=seconds,
        unpaired=unpaired or {}, judged=bool(judges), generator=generator,
    )  # fmt: skip
    stats["outputs"] = {"lists": listings, "instances": instances,
                        "stats": str(output / STATS_NAME)}  # fmt: skip
    write_json(output / STATS_NAME, stats)
    return stats


# ------------------------------------------------------------------------------- output


def _prepare_output(output: Path, settings: dict[str, Any], overwrite: bool) -> Path:
    """The work folder, checked against `settings` (refused when they differ, unless
    `overwrite`, which first removes this engine's earlier outputs). Data this engine did not
    make (no work folder beside it) is never replaced, `overwrite` or not."""
    work = output / WORK_NAME
    settings_path = work / "settings.json"
    outputs = [output / folder for folder in TASK_FOLDERS.values()]
    outputs += [output / STATS_NAME, output / INSTANCES_NAME]
    outputs += list(output.glob("instances_*.gpkg")) if output.is_dir() else []
    if not work.is_dir() and any(path.exists() for path in outputs):
        raise OutputExistsError(
            f"{output} already holds instruction data that this run did not start (no "
            f"{WORK_NAME} folder). Nothing was replaced, and `overwrite` does not replace "
            "data the engine did not make: choose another output folder, or remove that "
            "data yourself."
        )
    if overwrite:
        for path in [*outputs, work]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    elif settings_path.is_file():
        try:
            recorded = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        if recorded != _plain(settings):
            keys = sorted(
                k for k in set(settings) | set(recorded or {})
                if _plain(settings).get(k) != (recorded or {}).get(k)
            )  # fmt: skip
            raise InputError(
                f"{output} holds instruction data made with other settings (these differ: "
                f"{', '.join(keys) or 'unreadable settings'}). Nothing was run; pass "
                "`overwrite` to replace it, or choose another output folder."
            )
    (work / "patches").mkdir(parents=True, exist_ok=True)
    write_atomic(settings_path, json.dumps(_plain(settings), indent=2))
    return work


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def sources_of(pair: Pair) -> list[str]:
    """What changes when the image or label file does (path, size, modification time): a
    patch of an edited label is made again rather than served from its old record."""
    return [file_stamp(source) for source in (pair.image, pair.label)]


def _record_path(work: Path, patch_id: str) -> Path:
    return work / "patches" / f"{patch_id}.json"


def _read_record(work: Path, patch_id: str) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_path(work, patch_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# ------------------------------------------------------------------------------- scan


def _open_scene(source: str, raster: RasterOptions) -> Any:
    from terramask.scene import GeoreferenceWarning, open_scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoreferenceWarning)
        return open_scene(source, raster)


def _warn_absent_classes(table: ClassTable, label_pixels: Counter, *, scanned: int) -> None:
    """A class no label pixel holds is almost always a wrong value or colour in `-c`: say so
    (the run goes on; its pixels show as unlisted values in the statistics)."""
    absent = [name for i, name in enumerate(table.names) if not label_pixels.get(i)]
    if scanned and absent:
        given = {s["category"]: s["key"] for s in table.sources if s["category"]}
        listed = ", ".join(f"{name!r} ({given.get(name, '?')})" for name in absent)
        warnings.warn(
            f"No label pixel holds {listed}: check the values or colours given with `classes` "
            "(stats.json lists the label values found as unlisted values).",
            stacklevel=2,
        )


def _scan(
    pairs: Sequence[Pair],
    table: ClassTable,
    recipe: DataRecipe,
    raster: RasterOptions,
    progress: Progress | None,
) -> tuple[list[PatchJob], list[dict[str, str]], Counter]:
    """Every patch of every readable pair, with its category count; the pairs that failed;
    label pixels per category id (for the statistics)."""
    jobs: list[PatchJob] = []
    failures: list[dict[str, str]] = []
    pixels: Counter = Counter()
    for done, pair in enumerate(pairs):
        if progress:
            progress("scan", done, len(pairs))
        try:
            with _open_scene(pair.image, raster) as scene, LabelRaster(
                pair.label, table, recipe.encoding
            ) as labels:
                _check_sizes(scene, labels, pair)
                found = []  # a pair that fails part-way gives no patch at all
                for window in patch_windows(scene.width, scene.height, recipe.patch, recipe.stride):
                    ids = labels.read(window.col, window.row, window.width, window.height)
                    counts = np.bincount(ids[ids >= 0].ravel(), minlength=len(table.names))
                    present = int(np.count_nonzero(counts >= recipe.min_pixels))
                    found.append(PatchJob(pair, window, window.name(pair.name), present))
                jobs.extend(found)
                pixels.update(labels.pixels)
        except TerraMaskError as exc:
            failures.append({"image": pair.image, "label": pair.label, "reason": str(exc)})
    if progress:
        progress("scan", len(pairs), len(pairs))
    return jobs, failures, pixels


def _check_sizes(scene: Any, labels: LabelRaster, pair: Pair) -> None:
    if (scene.width, scene.height) != (labels.width, labels.height):
        raise InputError(
            f"The label {pair.label} is {labels.width} x {labels.height} pixels but its image "
            f"{pair.image} is {scene.width} x {scene.height}: a label must cover its image "
            "pixel for pixel."
        )


def _mark_reasoning(jobs: list[PatchJob], share: float) -> None:
    """Mark the top `share` of patches by category count (ties at the boundary included)."""
    candidates = [job for job in jobs if job.categories > 0]
    if not candidates:
        return
    counts = sorted((job.categories for job in candidates), reverse=True)
    boundary = counts[max(0, math.ceil(share * len(counts)) - 1)]
    for job in candidates:
        job.reasoning = job.categories >= boundary


class _Readers:
    """The open scene and label raster of the pairs in use (closed when no longer needed)."""

    def __init__(self, table: ClassTable, recipe: DataRecipe, raster: RasterOptions) -> None:
        self.table, self.recipe, self.raster = table, recipe, raster
        self.open: dict[str, tuple[Any, LabelRaster]] = {}

    def get(self, pair: Pair) -> tuple[Any, LabelRaster]:
        if pair.name not in self.open:
            scene = _open_scene(pair.image, self.raster)
            try:
                labels = LabelRaster(pair.label, self.table, self.recipe.encoding)
            except BaseException:
                scene.close()
                raise
            self.open[pair.name] = (scene, labels)
        return self.open[pair.name]

    def keep(self, names: set[str]) -> None:
        for name in [n for n in self.open if n not in names]:
            scene, labels = self.open.pop(name)
            scene.close()
            labels.close()

    def close(self) -> None:
        self.keep(set())


# ------------------------------------------------------------------------------- the run


def _rng(seed: int, patch_id: str, *stream: int) -> np.random.Generator:
    """A generator for one patch (and stream), the same whatever order patches run in."""
    return np.random.default_rng([seed, zlib.crc32(patch_id.encode("utf-8")), *stream])


class _Run:
    """The MLLM stages and writing, chunk by chunk."""

    def __init__(
        self,
        recipe: DataRecipe,
        prompts: PromptSet,
        tasks: Sequence[str],
        generator: MLLM | None,
        judges: list[MLLM],
        output: Path,
        work: Path,
        digest: str,
        cap: Counter,
    ) -> None:
        self.recipe, self.prompts, self.tasks = recipe, prompts, tuple(tasks)
        self.generator, self.judges = generator, judges
        self.output, self.work, self.digest, self.cap = output, work, digest, cap

    def chunk(self, jobs: Sequence[PatchJob], readers: _Readers) -> list[dict[str, Any]]:
        works: list[PatchWork] = []
        records: list[dict[str, Any]] = []
        for job in jobs:
            try:
                works.append(self._prepare(job, readers))
            except TerraMaskError as exc:
                records.append(self._failed_record(job, exc))
        if self.judges and self.recipe.mask_check:
            self._check(works)
        self._apply_cap(works)
        self._generate(works)
        if self.judges:
            self._cross_evaluate(works)
        records.extend(self._write(work) for work in works)
        return records

    # ---------------------------------------------------------------- instances

    def _prepare(self, job: PatchJob, readers: _Readers) -> PatchWork:
        from rasterio.windows import Window

        scene, labels = readers.get(job.pair)
        w = job.window
        read = scene.read(Window(w.col, w.row, w.width, w.height))
        ids = labels.read(w.col, w.row, w.width, w.height)
        ids = np.where(read.valid, ids, IGNORED)
        found = find_instances(ids, self.recipe, _rng(self.recipe.seed, job.id, 0))
        crs = None
        if scene.georeferenced:
            from terramask.scene.polygons import to_pyproj

            crs = to_pyproj(scene.crs).to_wkt()
        work = PatchWork(job, read.image, read.transform, crs, found, labels.table.names)
        work.targets = [Target(i, labels.table.names[i.class_id]) for i in found.kept]
        return work

    def _outlined(
        self, work: PatchWork, masks: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[str]]:
        return outlined(work.image, masks, self.recipe.contour_px)

    def _fields(self, work: PatchWork, target: Target, colour: str = "red") -> dict[str, Any]:
        height, width = work.image.shape[:2]
        return {"class_name": target.name, "colour": colour, "categories": work.categories,
                "width": width, "height": height}  # fmt: skip

    # ---------------------------------------------------------------- MLLM plumbing

    def _ask(self, requests: Sequence[Request]) -> None:
        """Send the requests, each client's together (concurrently where it can; two judges
        at once), then hand each reply or error to its handler, in order, on this thread."""
        by_client: dict[int, list[Request]] = {}
        for request in requests:
            by_client.setdefault(id(request[0]), []).append(request)
        groups = list(by_client.values())
        if len(groups) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(groups), thread_name_prefix="terramask-data") as pool:
                answers = list(pool.map(_send, groups))
        else:
            answers = [_send(group) for group in groups]
        for group, replies in zip(groups, answers, strict=True):
            for (_, _, _, work, handle), reply in zip(group, replies, strict=True):
                work.mllm["calls"] += 1
                if isinstance(reply, TerraMaskError):
                    work.mllm["failed"] += 1
                elif getattr(reply, "cached", False):
                    work.mllm["cached"] += 1
                handle(reply)

    # ---------------------------------------------------------------- stages

    def _check(self, works: Sequence[PatchWork]) -> None:
        """The first judge keeps or rejects each candidate, shown with a thin contour."""
        judge = self.judges[0]
        requests: list[Request] = []
        verdicts: dict[int, tuple[PatchWork, Target, Reading | TerraMaskError]] = {}
        for work in works:
            for target in work.targets:
                image, _ = self._outlined(work, [target.instance.mask])
                prompt = self.prompts.fill("mask_check", **self._fields(work, target))

                def handle(reply: Any, key: int = id(target), work: PatchWork = work,
                           target: Target = target) -> None:  # fmt: skip
                    verdict = reply if isinstance(reply, TerraMaskError) else read_keep(reply.text)
                    verdicts[key] = (work, target, verdict)

                requests.append((judge, image, prompt, work, handle))
        self._ask(requests)
        for work in works:
            kept = []
            for target in work.targets:
                _, _, verdict = verdicts[id(target)]
                if isinstance(verdict, TerraMaskError):
                    work.fail("mask_check", target, verdict)
                    continue
                keep, reason = verdict.value if verdict.ok else (False, verdict.problem)
                if keep:
                    kept.append(target)
                    continue
                work.found.removed["mask_check", target.instance.class_id] += 1
                work.rejected.append({
                    "stage": "mask_check", "class": target.name,
                    "instance": target.instance.index, "reason": reason,
                })  # fmt: skip
            work.targets = kept

    def _apply_cap(self, works: Sequence[PatchWork]) -> None:
        """At most `DataRecipe.class_cap` instances per category, in patch order."""
        cap = self.recipe.class_cap
        if cap is None:
            return
        for work in works:
            kept = []
            for target in work.targets:
                if self.cap[target.name] >= cap:
                    work.found.removed["class_cap", target.instance.class_id] += 1
                    continue
                self.cap[target.name] += 1
                kept.append(target)
            work.targets = kept

    def _generate(self, works: Sequence[PatchWork]) -> None:
        """Interactive from the mask; referring and reasoning asked of the generator (the
        contextual questions in two steps: cues, then question and explanation)."""
        first: list[Request] = []
        second: list[Request] = []
        for work in works:
            for target in work.targets:
                if "interactive" in self.tasks:
                    target.samples.append(self._interactive(work, target))
                if "referring" in self.tasks:
                    first.append(self._referring(work, target))
                if "reasoning" in self.tasks and work.job.reasoning:
                    request = self._reasoning(work, target, second)
                    if request is not None:
                        first.append(request)
        self._ask(first)
        self._ask(second)

    def _interactive(self, work: PatchWork, target: Target) -> Sample:
        instance = target.instance
        rng = _rng(self.recipe.seed, work.job.id, 1, instance.class_id, instance.index)
        made = interactive_instruction(target.instance.mask, self.recipe, self.prompts, rng)
        coordinates = {"box": list(made.box)} if made.box else {
            "points": [list(p) for p in made.points]}  # fmt: skip
        return Sample("interactive", made.kind, made.text, extra={"coordinates": coordinates})

    def _referring(self, work: PatchWork, target: Target) -> Request:
        sample = Sample("referring", "expression")
        target.samples.append(sample)
        image, _ = self._outlined(work, [target.instance.mask])
        prompt = self.prompts.fill("referring", **self._fields(work, target))

        def handle(reply: MLLMReply | TerraMaskError) -> None:
            if isinstance(reply, TerraMaskError):
                sample.failed = str(reply)
                return
            reading = read_expression(reply.text)
            if reading.ok:
                sample.question = reading.value
            else:
                sample.rejected = f"generation: {reading.problem}"

        return (self._need_generator(), image, prompt, work, handle)

    def _reasoning(
        self, work: PatchWork, target: Target, second: list[Request]
    ) -> Request | None:
        """The first request of the target's reasoning question (None: no question for it);
        a contextual one queues its second step in `second` when its cues arrive."""
        generator = self._need_generator()
        same = work.found.visible.get(target.instance.class_id, [])
        if len(same) == 1:
            sample = Sample("reasoning", "attribute")
            target.samples.append(sample)
            image, _ = self._outlined(work, [target.instance.mask])
            prompt = self.prompts.fill("reasoning_attribute", **self._fields(work, target))
            return (generator, image, prompt, work, self._question_handler(sample))
        if len(same) > self.recipe.contextual_max:
            work.rejected.append({
                "stage": "reasoning_skipped", "class": target.name,
                "instance": target.instance.index,
                "reason": f"{len(same)} instances of the class in the patch (contextual "
                f"questions take 2 to {self.recipe.contextual_max})",
            })  # fmt: skip
            return None
        sample = Sample("reasoning", "contextual")
        target.samples.append(sample)
        order = [target.instance] + [i for i in same if i is not target.instance]
        image, colours = self._outlined(work, [i.mask for i in order])
        fields = self._fields(work, target, colours[0])
        prompt = self.prompts.fill(
            "reasoning_cues", **fields, count=len(order), others=" and ".join(colours[1:])
        )

        def handle(reply: MLLMReply | TerraMaskError) -> None:
            if isinstance(reply, TerraMaskError):
                sample.failed = str(reply)
                return
            reading = read_cues(reply.text)
            if not reading.ok:
                sample.rejected = f"generation (cues): {reading.problem}"
                return
            sample.extra["cues"] = reading.value
            cues = "\n".join(f"- {cue}" for cue in reading.value)
            question = self.prompts.fill(
                "reasoning_contextual", **fields, count=len(order), cues=cues
            )
            second.append((generator, work.image, question, work, self._question_handler(sample)))

        return (generator, image, prompt, work, handle)

    def _question_handler(self, sample: Sample) -> Callable[[MLLMReply | TerraMaskError], None]:
        def handle(reply: MLLMReply | TerraMaskError) -> None:
            if isinstance(reply, TerraMaskError):
                sample.failed = str(reply)
                return
            reading = read_question(reply.text)
            if reading.ok:
                sample.question, sample.reason = reading.value
            else:
                sample.rejected = f"generation: {reading.problem}"

        return handle

    def _need_generator(self) -> MLLM:
        if self.generator is None:  # tasks were checked against the generator up front
            raise MLLMError("No generator MLLM was given for referring and reasoning samples.")
        return self.generator

    def _cross_evaluate(self, works: Sequence[PatchWork]) -> None:
        """Every judge scores every referring and reasoning sample on its task's dimensions;
        a sample passes when every judge gives every dimension at least its threshold."""
        requests: list[Request] = []
        for work in works:
            for target in work.targets:
                image = None
                for sample in target.samples:
                    if sample.task == "interactive" or sample.question is None:
                        continue
                    if sample.rejected or sample.failed:
                        continue
                    if image is None:
                        image, _ = self._outlined(work, [target.instance.mask])
                    fields = self._fields(work, target)
                    if sample.task == "referring":
                        prompt = self.prompts.fill(
                            "judge_referring", **fields, instruction=sample.question
                        )
                    else:
                        prompt = self.prompts.fill(
                            "judge_reasoning", **fields, instruction=sample.question,
                            explanation=sample.reason, kind=sample.kind,
                        )  # fmt: skip
                    for judge in self.judges:
                        requests.append(
                            (judge, image, prompt, work, self._judge_handler(sample, judge))
                        )
        self._ask(requests)

    def _judge_handler(
        self, sample: Sample, judge: MLLM
    ) -> Callable[[MLLMReply | TerraMaskError], None]:
        thresholds = self.prompts.thresholds[sample.task]

        def handle(reply: MLLMReply | TerraMaskError) -> None:
            name = getattr(judge, "name", "judge")
            if isinstance(reply, TerraMaskError):
                sample.failed = f"judge {name}: {reply}"
                return
            reading = read_scores(reply.text, tuple(thresholds))
            if not reading.ok:
                sample.judges.append({"model": name, "problem": reading.problem})
                problem = f"cross-evaluation: judge {name}: {reading.problem}"
                sample.rejected = sample.rejected or problem
                return
            low = {d: s for d, s in reading.value.items() if s < thresholds[d]}
            sample.judges.append({"model": name, "scores": reading.value,
                                  "passed": not low})  # fmt: skip
            if low and not sample.rejected:
                below = ", ".join(f"{d} {s} < {thresholds[d]}" for d, s in low.items())
                sample.rejected = f"cross-evaluation: judge {name}: {below}"

        return handle

    # ---------------------------------------------------------------- writing

    def _write(self, work: PatchWork) -> dict[str, Any]:
        """Write the patch's accepted samples and its record; return the record."""
        job = work.job
        old = _read_record(self.work, job.id)
        for entry in (old or {}).get("samples", []):
            remove_sample(self.output, entry["task"], entry)
        samples: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        for target in work.targets:
            written: dict[str, str] = {}
            sample_id = f"{job.id}_{target.id_stem}"
            for sample in target.samples:
                if sample.failed:
                    work.fail(sample.task, target, sample.failed)
                    continue
                if sample.rejected or sample.question is None:
                    work.rejected.append({
                        "stage": sample.task, "class": target.name,
                        "instance": target.instance.index,
                        "reason": sample.rejected or "no instruction",
                    })  # fmt: skip
                    continue
                document = self._document(work, target, sample)
                entry = write_sample(self.output, sample.task, job.id, sample_id, work.image,
                                     target.instance.mask, document)  # fmt: skip
                samples.append({"task": sample.task, "id": sample_id, "kind": sample.kind,
                                "class": target.name, **entry})  # fmt: skip
                written[sample.task] = sample_id
            if written:
                instances.append(self._instance(work, target, written))
        removed: dict[str, dict[str, int]] = {}
        for (rule, class_id), count in sorted(work.found.removed.items()):
            removed.setdefault(rule, {})[work.names[class_id]] = count
        record = {
            "patch": job.id,
            "pair": job.pair.name,
            "image": job.pair.image,
            "label": job.pair.label,
            "sources": sources_of(job.pair),
            "window": [job.window.col, job.window.row, job.window.width, job.window.height],
            "digest": self.digest,
            "reasoning": job.reasoning,
            "crs": work.crs,
            "visible": {work.names[k]: len(v) for k, v in sorted(work.found.visible.items()) if v},
            "kept": len(work.found.kept),
            "targets": [target.name for target in work.targets],  # what the class cap counted
            "removed": removed,
            "instances": instances,
            "samples": samples,
            "rejected": work.rejected,
            "failed": work.failed,
            "mllm": dict(work.mllm),
            "seconds": round(time.perf_counter() - work.started, 3),
        }
        write_json(_record_path(self.work, job.id), record)
        return record

    def _document(self, work: PatchWork, target: Target, sample: Sample) -> dict[str, Any]:
        """The per-sample JSON: UniGeoSeg's "question" and "reason" lists, then provenance."""
        instance = target.instance
        r0, c0, r1, c1 = instance.bbox
        w = work.job.window
        return {
            "question": [sample.question],
            "reason": [sample.reason] if sample.reason else [],
            "task": sample.task,
            "kind": sample.kind,
            "category": target.name,
            "image": work.job.pair.image,
            "patch": work.job.id,
            "window": [w.col, w.row, w.width, w.height],
            "instance": {"index": instance.index, "pixels": instance.pixels,
                         "bbox": [c0, r0, c1, r1]},
            **sample.extra,
            **({"judges": sample.judges} if sample.judges else {}),
        }

    def _instance(self, work: PatchWork, target: Target, written: dict[str, str]) -> dict[str, Any]:
        geometry = None
        if work.crs is not None:
            import shapely

            from terramask.scene import polygonize

            parts = polygonize(target.instance.mask.astype(np.uint8), work.transform,
                               names={1: target.name})  # fmt: skip
            if parts:
                geometry = shapely.union_all([p.geometry for p in parts]).wkt
        return {"class": target.name, "index": target.instance.index,
                "pixels": target.instance.pixels, "samples": written,
                "geometry": geometry}  # fmt: skip

    def _failed_record(self, job: PatchJob, error: BaseException) -> dict[str, Any]:
        record = {
            "patch": job.id, "pair": job.pair.name, "image": job.pair.image,
            "label": job.pair.label,
            "sources": sources_of(job.pair),
            "window": [job.window.col, job.window.row, job.window.width, job.window.height],
            "digest": self.digest, "reasoning": job.reasoning, "crs": None, "visible": {},
            "kept": 0, "targets": [], "removed": {}, "instances": [], "samples": [], "rejected": [],
            "failed": [{"stage": "read", "class": None, "instance": None, "reason": str(error)}],
            "mllm": {}, "seconds": 0.0,
        }  # fmt: skip
        write_json(_record_path(self.work, job.id), record)
        return record


def _send(group: Sequence[Request]) -> list[MLLMReply | TerraMaskError]:
    """One client's replies (or errors) to its requests, in order."""
    client = group[0][0]
    items = [(image, prompt) for _, image, prompt, _, _ in group]
    if hasattr(client, "ask_many"):
        return list(client.ask_many(items))
    from terramask.models.mllm.asking import ask_each

    return list(ask_each(client.ask, items))


# ------------------------------------------------------------------------------- statistics


def _stats(
    records: Sequence[dict[str, Any]],
    jobs: Sequence[PatchJob],
    tasks: Sequence[str],
    table: ClassTable,
    recipe: DataRecipe,
    settings: dict[str, Any],
    pair_failures: list[dict[str, str]],
    label_pixels: Counter,
    *,
    already_done: int,
    processed: int,
    seconds: float,
    unpaired: dict[str, list[str]],
    judged: bool,
    generator: MLLM | None,
) -> dict[str, Any]:
    """stats.json: per task, class and rule, MLLM use, failures, time."""
    rules = dict.fromkeys(INSTANCE_RULES, 0)
    classes: dict[str, dict[str, Any]] = {
        name: {"candidates": 0, "kept": 0, "removed": dict.fromkeys(INSTANCE_RULES, 0),
               **dict.fromkeys(tasks, 0)}
        for name in table.names
    }  # fmt: skip
    by_task: dict[str, dict[str, Any]] = {
        task: {"samples": 0, "kinds": Counter(), "rejected": Counter(), "failed": 0}
        for task in tasks
    }
    mllm: Counter = Counter()
    failures: list[dict[str, Any]] = []
    failed_patches = 0
    for record in records:
        for name, count in record["visible"].items():
            classes[name]["candidates"] += count
        for rule, per_class in record["removed"].items():
            for name, count in per_class.items():
                rules[rule] = rules.get(rule, 0) + count
                classes[name]["removed"][rule] = classes[name]["removed"].get(rule, 0) + count
                if rule == "tiny":
                    classes[name]["candidates"] += count
        for instance in record["instances"]:
            classes[instance["class"]]["kept"] += 1
        for sample in record["samples"]:
            by_task[sample["task"]]["samples"] += 1
            by_task[sample["task"]]["kinds"][sample["kind"]] += 1
            classes[sample["class"]][sample["task"]] += 1
        for rejection in record["rejected"]:
            stage = rejection["stage"]
            if stage in by_task:
                reason = str(rejection["reason"])
                by_task[stage]["rejected"][_reason_kind(reason)] += 1
            elif stage == "reasoning_skipped" and "reasoning" in by_task:
                by_task["reasoning"]["rejected"]["too many instances"] += 1
        for failure in record["failed"]:
            if failure["stage"] in by_task:
                by_task[failure["stage"]]["failed"] += 1
            if len(failures) < LISTED_FAILURES:
                failures.append({"patch": record["patch"], **failure})
        failed_patches += bool(record["failed"])
        mllm.update(record.get("mllm", {}))
    candidates = sum(c["candidates"] for c in classes.values())
    samples = sum(t["samples"] for t in by_task.values())
    names = {**{i: n for i, n in enumerate(table.names)}, IGNORED: "(ignored)",
             UNLISTED: "(unlisted values)"}  # fmt: skip
    return {
        "split": recipe.split,
        "tasks": {
            task: {"samples": info["samples"], "kinds": dict(sorted(info["kinds"].items())),
                   "rejected": dict(sorted(info["rejected"].items())), "failed": info["failed"]}
            for task, info in by_task.items()
        },
        "samples": samples,
        "images": len({job.pair.name for job in jobs}),
        "patches": {
            "total": len(jobs),
            "done_before": already_done,
            "processed": processed,
            "with_failures": failed_patches,
            "reasoning": sum(job.reasoning for job in jobs),
        },
        "instances": {"candidates": candidates, "kept": sum(c["kept"] for c in classes.values())},
        "rules": rules,
        "classes": classes,
        "label_pixels": {names.get(k, str(k)): int(v) for k, v in sorted(label_pixels.items())},
        "mllm": {"generator": getattr(generator, "name", None), "calls": mllm["calls"],
                 "cached": mllm["cached"], "failed": mllm["failed"],
                 "cross_evaluated": judged},
        "failed_images": pair_failures,
        "unpaired": unpaired,
        "failures": failures,
        "seconds": round(seconds, 2),
        "samples_per_second": round(samples / seconds, 2) if seconds > 0 else None,
        "patches_per_second": round(processed / seconds, 2) if seconds > 0 else None,
        "settings": _plain(settings),
    }


def _reason_kind(reason: str) -> str:
    """A rejection's reason reduced to its kind, for counting."""
    if reason.startswith("cross-evaluation"):
        return "cross_eval"
    for kind in ("refused", "declined", "unreadable reply"):
        if kind in reason:
            return f"generation {kind}"
    return "other"
