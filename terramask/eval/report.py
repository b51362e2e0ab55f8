"""Write an evaluation's report.json and report.md, with the published numbers beside ours."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from terramask.atomic import atomic_output
from terramask.eval.presets import published_numbers


def published_rows(engine: str | None = None) -> list[dict[str, Any]]:
    """The published 8-set average mIoU per method; `ours: True` on the row of `engine`."""
    rows = []
    for row in published_numbers()["ovss_8set_average_miou"]:
        rows.append({**row, "ours": engine is not None and row.get("engine") == engine})
    return rows


def write_report(result: dict[str, Any], output_dir: Path, *, overwrite: bool) -> dict[str, str]:
    """Write both files atomically; return their paths by kind."""
    paths = {"report_json": output_dir / "report.json", "report_md": output_dir / "report.md"}
    with atomic_output(paths["report_json"], overwrite=overwrite) as temp:
        temp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    with atomic_output(paths["report_md"], overwrite=overwrite) as temp:
        temp.write_text(render_markdown(result), encoding="utf-8")
    return {kind: str(path) for kind, path in paths.items()}


def render_markdown(result: dict[str, Any]) -> str:
    """A human report: what was measured, per-class IoU, and the published averages."""
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
        "",
        "## Published numbers (real weights)",
        "",
        published_numbers()["note"],
        f"Ours above: one data set ({scope}); compare like for like only over all 8 sets.",
        "",
        "| method | 8-set avg mIoU | engine here |",
        "|---|---:|---|",
    ]
    for row in result["published"]:
        engine = f"`{row['engine']}`" if row.get("engine") else ""
        marker = " (this run)" if row.get("ours") else ""
        lines.append(f"| {row['method']} | {row['miou']} | {engine}{marker} |")
    if result.get("preset_notes"):
        lines += ["", "## Preset notes", "", f"Source: {result['preset_source']}", ""]
        lines += [f"- {note}" for note in result["preset_notes"]]
    return "\n".join(lines) + "\n"


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


def render_referring_markdown(result: dict[str, Any]) -> str:
    """A human report of a referring/reasoning run: overall, per group, published, failures."""
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
        f"- Failed samples (scored as empty masks): {result['failed']}.",
    ]
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
    lines += ["## Published numbers (real weights)", ""]
    published = result.get("published", [])
    if published:
        metric = result["published_metric"]
        lines += [
            result["published_note"],
            "",
            f"| method | {_label(metric)} |",
            "|---|---:|",
        ]
        lines += [f"| {row['method']} | {row['value']} |" for row in published]
        ours = result.get("binary", {}).get(metric, result.get(metric))
        lines.append(f"| this run ({result.get('method') or 'ours'}) | {_fmt(ours)} |")
    else:
        lines.append("None recorded in DESIGN.md §1.4 for this data set.")
    failures = result.get("failures", [])
    if failures:
        lines += ["", f"## Failed samples ({len(failures)})", ""]
        lines += [f"- `{f['id']}`: {f['reason']}" for f in failures[:50]]
        if len(failures) > 50:
            lines.append(f"- … and {len(failures) - 50} more (see report.json).")
    return "\n".join(lines) + "\n"


_LABELS = {"giou": "gIoU", "ciou": "cIoU", "iou": "IoU", "f1": "F1", "boundary_f": "boundary F"}


def _label(column: str) -> str:
    """A report column's printed name: gIoU, cIoU, Pr@0.5, IoU, ..."""
    if column.startswith("pr@"):
        return f"Pr@{column[3:]}"
    return _LABELS.get(column, column)
