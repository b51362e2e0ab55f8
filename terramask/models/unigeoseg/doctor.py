"""`terramask doctor --model unigeoseg`: does this UniGeoSeg checkpoint load and answer sanely?

Two checks. "unigeoseg load": the checkpoint resolves (offline too), every released weight
maps onto TerraMask's modules through the key table (a load that leaves any weight unmatched
stops with the list), and which released modules are unused. "unigeoseg sample": the three
tasks on a fixed synthetic sample (a bright rectangular roof on dark textured ground): each
mask's IoU with the roof and a short fingerprint of the mask, so two machines, versions or
precisions can be compared. The released checkpoint is expected to find a boxed object
(IoU ≥ 0.5 for the interactive box, else a warning). This is a plausibility check, not
parity with the released code: the real checkpoint could not be run where this was written
(docs/unigeoseg.md, "What was not checked").
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

#: The interactive box's IoU below which the sample check warns.
EXPECTED_BOX_IOU = 0.5
#: The sample's size and the roof on it (x0, y0, x1, y1, pixels).
SAMPLE_SIZE = (384, 512)
SAMPLE_ROOF = (176, 120, 336, 232)


def sample_image(seed: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The fixed sample: (H, W, 3) uint8 image and its (H, W) bool roof mask."""
    rng = np.random.default_rng(seed)
    height, width = SAMPLE_SIZE
    ground = rng.normal(70, 12, (height, width, 1)) + np.array([[[0, 18, -10]]])
    image = np.clip(ground, 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = SAMPLE_ROOF
    image[y0:y1, x0:x1] = (225, 222, 215)
    image[y0 : y0 + 4, x0:x1] = (120, 120, 120)  # a shadowed eave
    truth = np.zeros((height, width), dtype=bool)
    truth[y0:y1, x0:x1] = True
    return image, truth


def sample_requests() -> list[tuple[str, str]]:
    """(task, instruction) for the sample: a box, a description and a question."""
    from terramask.methods.unigeoseg_prompts import interactive_instruction

    height, width = SAMPLE_SIZE
    x0, y0, x1, y1 = SAMPLE_ROOF
    box = interactive_instruction(box=[x0 / width, y0 / height, x1 / width, y1 / height])
    return [
        ("interactive", box.text),
        ("referring", "the white building roof in the middle of the image"),
        ("reasoning", "Which structure would reflect the most sunlight in this scene?"),
    ]


def unigeoseg_checks(model: str | None = None, *, device: str = "auto") -> list[dict]:
    """The two checks as {name, status, detail} (see the module notes)."""
    from terramask.models.unigeoseg import load_unigeoseg
    from terramask.models.unigeoseg.predictor import UniGeoSegSettings

    started = time.perf_counter()
    try:
        loaded = load_unigeoseg(model, device=device, dtype="fp32")
    except Exception as exc:  # a doctor reports; it does not crash
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [{"name": "unigeoseg load", "status": "fail", "detail": first}]
    report = getattr(loaded, "load_report", None)
    params = sum(p.numel() for p in loaded.model.parameters())
    detail = (f"{loaded.name}: {params / 1e6:.1f}M parameters, every released weight matched"
              f" ({time.perf_counter() - started:.1f} s, {loaded.device})")
    unused = list(getattr(report, "unused", []) or [])
    if unused:
        detail += f"; {len(unused)} released weights of modules its forward never calls unused"
    checks = [{"name": "unigeoseg load", "status": "ok", "detail": detail}]
    image, truth = sample_image()
    parts, box_iou = [], 0.0
    for task, instruction in sample_requests():
        result = loaded.segment(image, instruction, UniGeoSegSettings(task=task))
        inter, union = (result.mask & truth).sum(), (result.mask | truth).sum()
        iou = float(inter / union) if union else 1.0
        box_iou = iou if task == "interactive" else box_iou
        print_ = hashlib.blake2b(np.packbits(result.mask).tobytes(), digest_size=4).hexdigest()
        parts.append(f"{task} IoU {iou:.2f} (mask {print_})")
    status = "ok" if box_iou >= EXPECTED_BOX_IOU else "warn"
    detail = "; ".join(parts)
    if status == "warn":
        detail += (f". The released checkpoint is expected to reach IoU {EXPECTED_BOX_IOU} on "
                   "the boxed roof: check that this is nishuo1999/UniGeoSeg, complete, in fp32.")
    checks.append({"name": "unigeoseg sample", "status": status, "detail": detail})
    return checks


def add_unigeoseg_checks(report: dict, model: str | None = None, *, device: str = "auto") -> dict:
    """`report` (`terramask.doctor.run_doctor`'s) with the UniGeoSeg checks added."""
    report["checks"] += unigeoseg_checks(model, device=device)
    report["ok"] = all(c["status"] != "fail" for c in report["checks"])
    return report
