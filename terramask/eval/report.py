"""Write an evaluation's report.json and report.md, with the published numbers beside ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from terramask.atomic import atomic_output
from terramask.eval.presets import published_numbers


def published_rows(preset: Any, engine: str | None = None) -> list[dict[str, Any]]:
    """The published numbers to show beside a run on `preset` (an `OvssPreset`).

    First the data set's own numbers (its preset's `published` rows), then the averages of the
    kind of set it is (multi- or single-class), each under the label its paper gives it. Every
    row: `method`, `engine` (the TerraMask engine that reproduces it; absent when none does),
    `ours` (that engine is `engine`), `scope` ("data set" or "average"), `label` (the data
    set's name, or the average's published label), `metric` ("mIoU", or "IoU" of the
    foreground class `class` on single-class sets), `value` (percent), `source`, and for
    data-set rows `provenance`, for averages `sets`. `miou` repeats `value` for readers of
    the old rows (whatever the metric); it goes once the command line reads `value`/`metric`.
    """
    own = dict(getattr(preset, "published", None) or {})
    single = getattr(preset, "kind", "") == "single-class"
    default_metric = "IoU" if single else "mIoU"
    rows: list[dict[str, Any]] = []
    for row in own.get("rows", []):
        rows.append({
            "method": row["method"],
            "engine": row.get("engine"),
            "scope": "data set",
            "label": preset.display_name,
            "metric": own.get("metric", default_metric),
            "class": own.get("class"),
            "value": row["value"],
            "source": row["source"],
            "provenance": row.get("provenance"),
        })  # fmt: skip
    kind = "single-class" if single else "multi-class"
    for row in published_numbers()["averages"]:
        if row["kind"] == kind:
            rows.append({
                "method": row["method"],
                "engine": row.get("engine"),
                "scope": "average",
                "label": row["label"],
                "metric": row["metric"],
                "class": own.get("class") if single else None,
                "value": row["value"],
                "source": row["source"],
                "sets": list(row["sets"]),
            })  # fmt: skip
    for row in rows:
        row["ours"] = engine is not None and row["engine"] == engine
        row["miou"] = row["value"]
        if row["engine"] is None:  # as before: no key where no engine reproduces the method
            del row["engine"]
    return rows


def comparable_score(result: dict[str, Any], preset: Any) -> dict[str, Any]:
    """Our number in the published rows' metric: mIoU, or on single-class sets the IoU of the
    foreground class (what the papers report there, not the mean with the background)."""
    own = dict(getattr(preset, "published", None) or {})
    if getattr(preset, "kind", "") == "single-class":
        name = own.get("class") or preset.labels[-1]
        return {"metric": "IoU", "class": name, "value": result["iou"].get(name)}
    return {"metric": "mIoU", "class": None, "value": result["miou"]}


def write_report(result: dict[str, Any], output_dir: Path, *, overwrite: bool) -> dict[str, str]:
    """Write both files atomically; return their paths by kind."""
    paths = {"report_json": output_dir / "report.json", "report_md": output_dir / "report.md"}
    with atomic_output(paths["report_json"], overwrite=overwrite) as temp:
        temp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    with atomic_output(paths["report_md"], overwrite=overwrite) as temp:
        temp.write_text(render_markdown(result), encoding="utf-8")
    return {kind: str(path) for kind, path in paths.items()}


def render_markdown(result: dict[str, Any]) -> str:
    """A human report: what was measured and how, per-class IoU, and the published numbers."""
    scope = _scope(result)
    lines = [
        f"# {result['display_name']}: {result['engine']}",
        "",
        f"- Measured on {scope}.",
        f"- Engine: `{result['engine']}`"
        + "".join(f"; {role}: `{name}`" for role, name in result.get("models", {}).items()),
        f"- Threshold: {result['threshold']}; background index: {result['background_index']}; "
        f"reduce_zero_label: {result['reduce_zero_label']}",
        f"- {unexpected_labels_text(result.get('unexpected_labels'))}",
        "",
        f"**mIoU {_fmt(result['miou'])}**, aAcc {_fmt(result['aacc'])}, "
        f"mAcc {_fmt(result['macc'])} (percent)",
        "",
        "| class | IoU | Acc | GT pixels |",
        "|---|---:|---:|---:|",
    ]
    for name, iou in result["iou"].items():
        acc = result["acc"][name]
        lines.append(f"| {name} | {_fmt(iou)} | {_fmt(acc)} | {result['pixels'][name]:,} |")
    lines += [
        "",
        "Classes with no pixel in either ground truth or prediction show '-' and are left out "
        "of the mean, as mmsegmentation does.",
    ]
    lines += configuration_lines(result.get("configuration"))
    lines += published_lines(result)
    if result.get("preset_notes"):
        lines += ["", "## Preset notes", "", f"Source: {result['preset_source']}", ""]
        lines += [f"- {note}" for note in result["preset_notes"]]
    return "\n".join(lines) + "\n"


def configuration_lines(configuration: dict[str, Any] | None) -> list[str]:
    """The report's "Configuration" section: AMG mode, pruning, feature upsampler, and whether
    the run is the published configuration (with the differences when it is not)."""
    if not configuration:
        return []
    lines = ["", "## Configuration", ""]
    generation = configuration.get("generation")
    if generation:
        amg = generation.get("amg")
        lines.append(f"- SAM mask generation: {_AMG_WORDS.get(amg, amg)}; grid "
                     f"{generation.get('grid')}; min region area "
                     f"{generation.get('min_region_area')} px.")  # fmt: skip
        lines.append(f"- Pruning: {'on (coarse to fine)' if generation.get('prune') else 'off'}.")
    dense = configuration.get("dense")
    if dense:
        upsampler = dense.get("upsampler")
        words = "bilinear (logits)" if upsampler == "bilinear" else f"`{upsampler}` (features)"
        lines.append(f"- Dense CLIP upsampling: {words}.")
    published = configuration.get("published_configuration") or {}
    paper = published.get("paper")
    if published.get("matches") is True:
        lines.append(f"- The published configuration ({paper}).")
    elif published.get("matches") is False:
        lines.append(
            f"- **Not the published configuration** ({paper}): "
            + "; ".join(published.get("differences", []))
            + "."
        )
    else:
        lines.append("- Not compared with a published configuration.")
    lines += [f"- {note}" for note in published.get("notes", [])]
    return lines


_AMG_WORDS = {
    "reference": "reference (segment-anything's automatic mask generator)",
    "fast": "fast (TerraMask's variant: low-res stability, mask NMS, clean-up)",
}


def published_lines(result: dict[str, Any]) -> list[str]:
    """The published numbers beside ours: this data set's, then averages under their label."""
    comparable = result.get("comparable") or {"metric": "mIoU", "value": result.get("miou")}
    metric = _metric_words(comparable)
    lines = ["", "## Published numbers (real weights)", ""]
    rows = result.get("published", [])
    own = [row for row in rows if row.get("scope") == "data set"]
    averages = [row for row in rows if row.get("scope") == "average"]
    lines.append(f"This run ({result['engine']}): {metric} **{_fmt(comparable.get('value'))}**.")
    lines.append("")
    if own:
        lines += [
            f"Published on {result['display_name']}:",
            "",
            f"| method | {metric} | engine here | source |",
            "|---|---:|---|---|",
        ]
        lines += [_published_row(row) for row in own]
    else:
        lines.append(f"No per-set number of {result['display_name']} is recorded from the papers.")
    if averages:
        lines += [
            "",
            "Averages over several data sets, as published (not comparable with one set's "
            "score; shown for context):",
            "",
            "| method | average | value | engine here | source |",
            "|---|---|---:|---|---|",
        ]
        lines += [_published_row(row, with_label=True) for row in averages]
    return lines


def _metric_words(row: dict[str, Any]) -> str:
    if row.get("metric") == "IoU" and row.get("class"):
        return f"IoU of {row['class']}"
    return str(row.get("metric", "mIoU"))


def _published_row(row: dict[str, Any], *, with_label: bool = False) -> str:
    engine = f"`{row['engine']}`" if row.get("engine") else ""
    engine += " (this run's engine)" if row.get("ours") else ""
    label = [f"{row['label']} ({_metric_words(row)})"] if with_label else []
    cells = [row["method"], *label, f"{row['value']:g}", engine, row.get("source", "")]
    return "| " + " | ".join(cells) + " |"


def unexpected_labels_text(summary: dict[str, Any] | None) -> str:
    """One sentence on the ground-truth pixels whose values no class or ignore rule expects."""
    if not summary or not summary.get("pixels"):
        return "Ground-truth values outside the expected ones: none."
    values = ", ".join(f"{value} ({count:,} px)" for value, count in summary["values"].items())
    limit = summary.get("limit_percent")
    under = f", under the {limit:g} % limit" if limit is not None else ""
    return (
        f"Ground-truth values outside the expected ones: {summary['pixels']:,} pixels "
        f"({summary['percent']:g} %{under}): {values}. They were scored as mmsegmentation "
        "scores them (in no class's label area; a class predicted there counts them as false "
        "positives)."
    )


def score_notes(result: dict[str, Any]) -> list[str]:
    """Plain sentences on how `score` read its inputs, for the CLI to print under the table:
    each prediction encoding applied (with its file count), files skipped or left out, and
    the unexpected ground-truth pixels when there were any."""
    notes = []
    for encoding in result.get("prediction_encodings", []):
        files = f"{encoding['files']} file" + ("" if encoding["files"] == 1 else "s")
        notes.append(f"{files}: {encoding['description']}.")
    if result.get("prediction_nodata_pixels"):
        notes.append(
            f"{result['prediction_nodata_pixels']:,} pixels where a prediction has no data "
            "were left out of the scores."
        )
    if result.get("segment_side_files"):
        notes.append(
            f"{result['segment_side_files']} score/preview rasters of segment runs were "
            "skipped (not predictions)."
        )
    if (result.get("unexpected_labels") or {}).get("pixels"):
        notes.append(unexpected_labels_text(result["unexpected_labels"]))
    return notes


def _scope(result: dict[str, Any]) -> str:
    split = f"the {result['split']} split" if result.get("split") else "all images"
    count = f"{result['images']} images"
    if result.get("limit"):
        count += f": limited to the first {result['limit']} by name"
    return f"{split} of {result['display_name']} ({count})"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def class_table(result: dict[str, Any], title: str) -> Table:
    """Per-class IoU and accuracy, then the means, as mmsegmentation prints them (for the CLI)."""
    rows = Table(title=escape(title))
    for column in ("class", "IoU", "Acc"):
        rows.add_column(column, overflow="fold")
    for name, iou in result["iou"].items():
        rows.add_row(escape(name), _fmt(iou), _fmt(result["acc"][name]))
    rows.add_section()
    rows.add_row("[bold]mIoU[/]", f"[bold]{_fmt(result['miou'])}[/]", _fmt(result["macc"]))
    rows.add_row("aAcc", _fmt(result["aacc"]), "")
    return rows


def prepare_output(output_dir: Path, overwrite: bool) -> Path:
    """Create `output_dir/predictions`; fail first if a report would be replaced silently."""
    from terramask.errors import OutputError, OutputExistsError

    predictions = output_dir / "predictions"
    existing = [p for p in (output_dir / "report.json", output_dir / "report.md") if p.exists()]
    if predictions.is_dir() and any(predictions.iterdir()):
        existing.append(predictions)
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise OutputExistsError(
            f"An earlier evaluation is already in {output_dir} ({names}). Nothing was changed; "
            "pass `overwrite` to replace it, or choose another folder with `output`."
        )
    try:
        predictions.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"The output folder {predictions} cannot be created ({exc.strerror or exc}). Choose "
            "another folder with `output`, or fix its permissions."
        ) from exc
    return predictions


def write_report_files(
    result: dict[str, Any], markdown: str, output_dir: Path, *, overwrite: bool
) -> dict[str, str]:
    """Write `result` as report.json and `markdown` as report.md, atomically; return paths."""
    paths = {"report_json": output_dir / "report.json", "report_md": output_dir / "report.md"}
    with atomic_output(paths["report_json"], overwrite=overwrite) as temp:
        temp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    with atomic_output(paths["report_md"], overwrite=overwrite) as temp:
        temp.write_text(markdown, encoding="utf-8")
    return {kind: str(path) for kind, path in paths.items()}


_PROTOCOLS = {
    "reference": "reference (the published evaluation code's samples and scoring canvas)",
    "all-texts": "all-texts (every sentence or question a sample; not comparable with the "
    "published numbers)",
}


def render_referring_markdown(result: dict[str, Any]) -> str:
    """A human report of a referring/reasoning run: overall, per group, judge, published,
    how each score is computed, failures."""
    split = f"the {result['split']} split" if result.get("split") else "all samples"
    scope = f"{split} of {result['display_name']} ({result['samples']} samples"
    scope += (
        f": limited to the first {result['limit']} in data-set order)"
        if result.get("limit")
        else ")"
    )
    lines = [
        f"# {result['display_name']}: {result.get('method') or 'referring segmentation'}",
        "",
        f"- Measured on {scope}.",
    ]
    if result.get("protocol"):
        lines.append(f"- Protocol: {_PROTOCOLS.get(result['protocol'], result['protocol'])}.")
    configuration = result.get("published_configuration")
    if configuration and configuration.get("matches") is not None:
        lines.append(
            f"- The published configuration ({configuration['paper']})."
            if configuration["matches"]
            else f"- **Not the published configuration** ({configuration['paper']}): "
            + "; ".join(configuration["differences"])
            + "."
        )
    lines.append(f"- Failed samples (scored as empty masks): {result['failed']}.")
    lines += [f"- {note}" for note in result.get("notes", [])]
    thresholds = [k for k in result if k.startswith("pr@")]
    lines += [
        "",
        f"**gIoU {_fmt(result['giou'])}**, cIoU {_fmt(result['ciou'])}, "
        + ", ".join(f"Pr@{k[3:]} {_fmt(result[k])}" for k in thresholds)
        + " (percent)",
        "",
    ]
    columns = ["samples", "giou", "ciou", *thresholds]
    binary = list(result.get("binary", {}))
    tables = [(result.get("group_name") or "group", result.get("groups", {}))]
    tables.append(("ground truth", result.get("by_target", {})))
    for title, groups in tables:
        if not groups:
            continue
        lines += [
            f"| {title} | " + " | ".join(_label(c) for c in columns + binary) + " |",
            "|---|" + "---:|" * (len(columns) + len(binary)),
        ]
        for name, row in [*groups.items(), ("all", result)]:
            cells = [str(row["samples"])] + [_fmt(row[c]) for c in columns[1:]]
            cells += [_fmt(row.get("binary", {}).get(b)) for b in binary]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _judge_lines(result)
    lines += _published_lines(result)
    conventions = result.get("metric_conventions") or {}
    if conventions:
        lines += ["", "## How the scores are computed", ""]
        lines += [
            f"- {name}: {text}"
            for name, text in conventions.items()
            if name != "binary" or result.get("binary")
        ]
        if result.get("judge"):
            lines.append(
                "- Judge: faithfulness, localization and robustness are the judge MLLM's 1-5 "
                "scores of an overlay (ground truth green, prediction red); overlap is the "
                "IoU binned (<0.2 → 1, <0.4 → 2, <0.6 → 3, <0.8 → 4, else 5; both masks "
                "empty → IoU 0, as GeoSeg's judge computes it); a reply without a score "
                "reads 3; samples the judge failed on are left out of the means."
            )
    failures = result.get("failures", [])
    if failures:
        lines += ["", f"## Failed samples ({len(failures)})", ""]
        lines += [f"- `{f['id']}`: {f['reason']}" for f in failures[:50]]
        if len(failures) > 50:
            lines.append(f"- … and {len(failures) - 50} more (see report.json).")
    return "\n".join(lines) + "\n"


_JUDGED = ("faithfulness", "localization", "robustness", "overlap")


def _judge_lines(result: dict[str, Any]) -> list[str]:
    """The judged scores' means (1-5), overall and per group."""
    judge = result.get("judge")
    if not judge:
        return []
    lines = [
        "## Judged scores (1-5)",
        "",
        f"Judge: `{judge['model']}`; {judge['judged']} samples judged, {judge['failed']} "
        "failed (left out of the means).",
        "",
        f"| {result.get('group_name') or 'group'} | judged | " + " | ".join(_JUDGED) + " |",
        "|---|---:|" + "---:|" * len(_JUDGED),
    ]
    for name, row in [*judge.get("groups", {}).items(), ("all", judge)]:
        cells = [str(row["judged"])] + [_fmt(row.get(k)) for k in _JUDGED]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _published_lines(result: dict[str, Any]) -> list[str]:
    """Published rows (method, split, task, scores, source), then this run's in the same
    columns: one row per task group when the published rows are by task."""
    lines = ["## Published numbers (real weights)", ""]
    published = result.get("published", [])
    if not published:
        return [*lines, "None recorded for this data set and split."]
    metrics = [
        m
        for m in ("giou", "ciou", "iou", "dice", "faithfulness")
        if any(m in row for row in published)
    ]
    by_group = any(row.get("group") for row in published)
    head = ["method", "split", *(["task"] if by_group else []), *(_label(m) for m in metrics)]
    lines += [
        result["published_note"],
        "",
        "| " + " | ".join([*head, "source"]) + " |",
        "|---|---|" + ("---|" if by_group else "") + "---:|" * len(metrics) + "---|",
    ]
    for row in published:
        cells = [row["method"], row.get("split") or "not stated"]
        cells += [row.get("group") or ""] if by_group else []
        cells += [_fmt_published(row.get(m)) for m in metrics]
        lines.append("| " + " | ".join([*cells, row.get("source", "")]) + " |")
    ours = f"this run ({result.get('method') or 'ours'})"
    split = result.get("split") or "-"
    groups = list(dict.fromkeys(row["group"] for row in published if row.get("group")))
    for group in groups or [None]:
        scores = result if group is None else result.get("groups", {}).get(group)
        judge = result.get("judge") or {}
        if group is not None:
            judge = judge.get("groups", {}).get(group, {})
        cells = [ours, split, *([group] if by_group else [])]
        cells += [_fmt(_our_score(scores, judge, m)) for m in metrics]
        lines.append("| " + " | ".join([*cells, "protocol: " + str(result.get("protocol"))]) + " |")
    return lines


def _our_score(scores: dict[str, Any] | None, judge: dict[str, Any], metric: str) -> Any:
    if metric == "faithfulness":
        return judge.get("faithfulness")
    if not scores:
        return None
    return scores.get("binary", {}).get(metric, scores.get(metric))


def _fmt_published(value: Any) -> str:
    return "" if value is None else f"{value:g}"


_LABELS = {"giou": "gIoU", "ciou": "cIoU", "iou": "IoU", "f1": "F1", "boundary_f": "boundary F"}


def _label(column: str) -> str:
    """A report column's printed name: gIoU, cIoU, Pr@0.5, IoU, ..."""
    if column.startswith("pr@"):
        return f"Pr@{column[3:]}"
    return _LABELS.get(column, column)
